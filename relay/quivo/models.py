"""Lenient models of Quivo's answers: every field optional, nulls accepted, unknown fields ignored."""

from typing import Any, NotRequired

from pydantic import BaseModel, ConfigDict, field_validator, with_config
from pydantic.alias_generators import to_camel
from typing_extensions import TypedDict

from relay.domain.message import ends_with_reference_tag

RATING_MESSAGE = "RATING_MESSAGE"


_QUIVO_CONFIG = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class _QuivoModel(BaseModel):
    model_config = _QUIVO_CONFIG | ConfigDict(frozen=True)


class InquiryMessage(_QuivoModel):
    """One message of a customer inquiry; a rating's comment arrives as category `RATING_MESSAGE`."""

    category: str | None = None
    message: str | None = None
    created: str | None = None
    posted_at: str | None = None
    username: str | None = None
    full_name: str | None = None


class CustomerInquiry(_QuivoModel):
    """A Quivo customer inquiry as `GET /customerInquiries/{id}` and the rating POST return it."""

    id: int | None = None
    subject: str | None = None
    status: str | None = None
    case_number: str | None = None
    created: str | None = None
    resolved_at: str | None = None
    resolved_by: str | None = None
    current_rating: float | None = None
    messages: tuple[InquiryMessage, ...] = ()

    @field_validator("messages", mode="before")
    @classmethod
    def _drop_nulls(cls, value: Any) -> Any:
        # Quivo may send `"messages": null` or null entries; both mean "no message there".
        if value is None:
            return ()
        if isinstance(value, list):
            return [item for item in value if item is not None]
        return value

    def has_rating_message_with(self, tag: str) -> bool:
        """True when a `RATING_MESSAGE` message ends with `tag`: the proof that a rating arrived."""
        # An empty tag ends every text; it must never count as proof of delivery.
        if not tag:
            return False
        return any(
            message.category == RATING_MESSAGE
            and message.message is not None
            and ends_with_reference_tag(message.message, tag)
            for message in self.messages
        )


@with_config(_QUIVO_CONFIG)
class RatedInquiry(TypedDict):
    """Only the current rating of an inquiry: what a delivered send records. A dict, validated as the
    models are: one is read from every delivered send's answer, and a model costs a third more to make."""

    current_rating: NotRequired[float | None]
