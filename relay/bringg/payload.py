"""Bringg `rating_submitted` payloads: the wire models, and judging raw bytes into a rating or a reason."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from relay.domain.ids import MAX_ID
from relay.domain.judgement import ELLIPSIS, Judgement, reported
from relay.domain.rating import MAX_EXTERNAL_ID_CHARS, MAX_VERSION_AHEAD, Rating, format_instant

RATING_SUBMITTED = "rating_submitted"


def _not_bool(value: object) -> object:
    # Lax pydantic reads true as 1: a boolean is no star count and no id, however loose Bringg is.
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


# Bringg documents Int32 ids; anything that fits SQLite's int64 is kept, anything larger is unusable.
Id = Annotated[int, Field(ge=0, le=MAX_ID), BeforeValidator(_not_bool)]
Stars = Annotated[int, BeforeValidator(_not_bool)]
# Bringg's types are short names (`rating_submitted`); a longer one is kept cut, so that neither the log
# line nor a listing of webhooks repeats whatever a sender put there.
MAX_WEBHOOK_TYPE_CHARS = 64
# Reasons are a few picks from the merchant's list. The bound keeps a hostile list from costing a reason
# per item: pydantic then reports one error for the whole list, not one per bad item.
MAX_REASONS = 100
# No order id or webhook type holds a NUL, and PostgreSQL's text refuses one: such a webhook is kept for an
# operator, on every backend alike, instead of failing its commit at each retry of Bringg's.
NUL = "\x00"
HOLDS_NUL = "holds a NUL character"


# TypedDicts, not models: pydantic validates into plain dicts at about 0.7 of a model's cost, and judging
# reads each once. Every key may be absent (total=False): Bringg is loose, and a missing one is judged below;
# unknown fields come and go (ignored), numbers arrive where strings are documented (kept as text).
_WIRE = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


@with_config(_WIRE)
class WireReason(TypedDict, total=False):
    text: str | None


@with_config(_WIRE)
class WireTask(TypedDict, total=False):
    id: Id | None
    status: int | None
    title: str | None
    external_id: str | None


@with_config(_WIRE)
class WireRating(TypedDict, total=False):
    id: Id | None
    rating: Stars | None
    comment: str | None
    created_at: datetime | None
    updated_at: datetime | None
    task: WireTask | None
    rating_reasons: Annotated[list[WireReason | None], Field(max_length=MAX_REASONS)] | None


@with_config(_WIRE)
class WireWebhook(TypedDict, total=False):
    webhook_type: str | None
    merchant_id: Id | None
    rating: WireRating | None


# pydantic's validator, called straight: TypeAdapter.validate_json passes each of its options on by keyword at
# every call, about a tenth of judging's cost.
_VALIDATE_WEBHOOK: Callable[[bytes], WireWebhook] = TypeAdapter(WireWebhook).validator.validate_json
_RATING_FIELDS = frozenset(Rating.model_fields)
_new_rating = object.__new__
_set = object.__setattr__


class WireEnvelope(BaseModel):
    """Only what every webhook type shares; read when the full parse fails, to tell ignore from quarantine."""

    model_config = ConfigDict(extra="ignore")
    webhook_type: Any = None
    merchant_id: Any = None


def judge(body: bytes) -> Judgement:
    """Parse the raw body once (pydantic on the bytes) and decide what the relay does with it.

    Reasons are reported as `reported` caps them: a body can hold thousands of the same mistake. An
    `updated_at` more than MAX_VERSION_AHEAD beyond the relay's clock now is no plausible version.
    """
    try:
        wire = _VALIDATE_WEBHOOK(body)
    except ValidationError as error:
        return _judge_unparsable(body, error)
    webhook_type, merchant_id = wire.get("webhook_type"), wire.get("merchant_id")
    if webhook_type != RATING_SUBMITTED:
        return _other_type(webhook_type, merchant_id)
    return _normalize(merchant_id, wire.get("rating"))


def _judge_unparsable(body: bytes, error: ValidationError) -> Judgement:
    errors = reported([_describe(item) for item in error.errors(include_url=False)])
    try:
        envelope = WireEnvelope.model_validate_json(body)
    except ValidationError:
        return Judgement("quarantined", errors=errors)
    # The envelope takes any JSON value: only an int in the ids' range can be stored as a merchant id.
    merchant_id = envelope.merchant_id if type(envelope.merchant_id) is int else None
    if merchant_id is not None and not 0 <= merchant_id <= MAX_ID:
        merchant_id = None
    if isinstance(envelope.webhook_type, str) and envelope.webhook_type != RATING_SUBMITTED:
        return _other_type(envelope.webhook_type, merchant_id)
    return Judgement("quarantined", RATING_SUBMITTED, merchant_id, errors=errors)


def _other_type(webhook_type: str | None, merchant_id: int | None) -> Judgement:
    if webhook_type is None:
        return Judgement("quarantined", None, merchant_id, errors=("webhook_type: missing",))
    if NUL in webhook_type:
        return Judgement("quarantined", None, merchant_id, errors=(f"webhook_type: {HOLDS_NUL}",))
    if len(webhook_type) > MAX_WEBHOOK_TYPE_CHARS:
        webhook_type = webhook_type[: MAX_WEBHOOK_TYPE_CHARS - 1] + ELLIPSIS
    return Judgement("ignored", webhook_type, merchant_id)


def _normalize(merchant_id: int | None, rating: WireRating | None) -> Judgement:
    if rating is None:
        errors = ["merchant_id: missing", "rating: missing"] if merchant_id is None else ["rating: missing"]
        return Judgement("quarantined", RATING_SUBMITTED, merchant_id, None, reported(errors))
    rating_id, stars = rating.get("id"), rating.get("rating")
    created_at, updated_at = rating.get("created_at"), rating.get("updated_at")
    task = rating.get("task") or {}
    external_id = task.get("external_id")
    errors = [] if merchant_id is not None else ["merchant_id: missing"]
    if rating_id is None:
        errors.append("rating.id: missing")
    if stars is None:
        errors.append("rating.rating: stars missing")
    elif not 1 <= stars <= 5:
        errors.append(f"rating.rating: stars must be 1..5, got {stars}")
    # Bringg's `Z` (or no offset, read as UTC) needs no conversion: only another offset is checked.
    if created_at is not None and created_at.utcoffset() and not _fits_utc(created_at):
        errors.append("rating.created_at: out of range once converted to UTC")
    if updated_at is not None and updated_at.utcoffset() and not _fits_utc(updated_at):
        errors.append("rating.updated_at: out of range once converted to UTC")
    elif updated_at is not None:
        updated_at = _utc(updated_at)
        # The clock is read only for a version to compare with it (an original rating has none).
        if updated_at > datetime.now(UTC) + MAX_VERSION_AHEAD:
            errors.append(
                f"rating.updated_at: {format_instant(updated_at)} is more than {MAX_VERSION_AHEAD.days} day "
                "ahead of the relay's clock, not a plausible version"
            )
    if external_id is not None and len(external_id) > MAX_EXTERNAL_ID_CHARS:
        errors.append(
            f"rating.task.external_id: {len(external_id)} characters, an order id has at most "
            f"{MAX_EXTERNAL_ID_CHARS}"
        )
    elif external_id is not None and NUL in external_id:
        errors.append(f"rating.task.external_id: {HOLDS_NUL}")
    if errors or merchant_id is None or rating_id is None or stars is None:
        return Judgement("quarantined", RATING_SUBMITTED, merchant_id, rating_id, reported(errors))
    normalized = _rating(
        {
            "merchant_id": merchant_id,
            "rating_id": rating_id,
            "stars": stars,
            "comment": rating.get("comment"),
            "reasons": tuple(
                [
                    reason["text"]
                    for reason in rating.get("rating_reasons") or ()
                    if reason and reason.get("text")
                ]
            ),
            "task_id": task.get("id"),
            "external_id": external_id,
            "task_title": task.get("title"),
            "task_status": task.get("status"),
            "created_at": None if created_at is None else _utc(created_at),
            "updated_at": updated_at,
        }
    )
    return Judgement("accepted", RATING_SUBMITTED, merchant_id, rating_id, rating=normalized)


def _rating(values: dict[str, Any]) -> Rating:
    """The Rating validating `values` would give, without validating them again: the wire model gave each its
    type (ints, text, UTC datetimes, the reasons' tuple) and judging checked the stars' range, as the model
    would (tests/test_payload_judgements.py compares each accepted rating of its corpus with the validated
    one). Validating again cost about an eighth of judging a webhook."""
    # What model_construct sets, without its loop over the fields and their aliases.
    rating = _new_rating(Rating)
    _set(rating, "__dict__", values)
    _set(rating, "__pydantic_fields_set__", set(_RATING_FIELDS))
    _set(rating, "__pydantic_extra__", None)
    _set(rating, "__pydantic_private__", None)
    return rating


def _utc(moment: datetime) -> datetime:
    # Bringg documents UTC; a timestamp without an offset is read as UTC rather than local time.
    if moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _fits_utc(moment: datetime) -> bool:
    # An offset can carry a valid local time past year 9999 or before year 1 in UTC, where versions live.
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _describe(item: Any) -> str:
    where = ".".join(str(part) for part in item.get("loc", ())) or "body"
    # A custom validator's message comes prefixed by pydantic; the reason alone reads better.
    return f"{where}: {str(item.get('msg', 'invalid')).removeprefix('Value error, ')}"
