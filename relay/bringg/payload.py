"""Bringg `rating_submitted` payloads: the wire models, and judging raw bytes into a rating or a reason."""

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

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


class _Wire(BaseModel):
    # Bringg is loose: unknown fields come and go, numbers arrive where strings are documented.
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class WireReason(_Wire):
    text: str | None = None


class WireTask(_Wire):
    id: Id | None = None
    status: int | None = None
    title: str | None = None
    external_id: str | None = None


class WireRating(_Wire):
    id: Id | None = None
    rating: Stars | None = None
    comment: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    task: WireTask | None = None
    rating_reasons: Annotated[list[WireReason | None], Field(max_length=MAX_REASONS)] | None = None


class WireWebhook(_Wire):
    webhook_type: str | None = None
    merchant_id: Id | None = None
    rating: WireRating | None = None


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
        wire = WireWebhook.model_validate_json(body)
    except ValidationError as error:
        return _judge_unparsable(body, error)
    if wire.webhook_type != RATING_SUBMITTED:
        return _other_type(wire.webhook_type, wire.merchant_id)
    return _normalize(wire)


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


def _normalize(wire: WireWebhook) -> Judgement:
    rating = wire.rating
    rating_id = rating.id if rating else None
    errors = []
    if wire.merchant_id is None:
        errors.append("merchant_id: missing")
    if rating is None:
        errors.append("rating: missing")
    else:
        if rating.id is None:
            errors.append("rating.id: missing")
        if rating.rating is None:
            errors.append("rating.rating: stars missing")
        elif not 1 <= rating.rating <= 5:
            errors.append(f"rating.rating: stars must be 1..5, got {rating.rating}")
        for name, moment in (("created_at", rating.created_at), ("updated_at", rating.updated_at)):
            if moment is not None and not _fits_utc(moment):
                errors.append(f"rating.{name}: out of range once converted to UTC")
        updated_at = _utc(rating.updated_at) if rating.updated_at and _fits_utc(rating.updated_at) else None
        # The clock is read only for a version to compare with it (an original rating has none).
        if updated_at is not None and updated_at > datetime.now(UTC) + MAX_VERSION_AHEAD:
            errors.append(
                f"rating.updated_at: {format_instant(updated_at)} is more than {MAX_VERSION_AHEAD.days} day "
                "ahead of the relay's clock, not a plausible version"
            )
        external_id = rating.task.external_id if rating.task else None
        if external_id is not None and len(external_id) > MAX_EXTERNAL_ID_CHARS:
            errors.append(
                f"rating.task.external_id: {len(external_id)} characters, an order id has at most "
                f"{MAX_EXTERNAL_ID_CHARS}"
            )
        elif external_id is not None and NUL in external_id:
            errors.append(f"rating.task.external_id: {HOLDS_NUL}")
    if errors or rating is None or wire.merchant_id is None or rating.id is None or rating.rating is None:
        return Judgement("quarantined", RATING_SUBMITTED, wire.merchant_id, rating_id, reported(errors))
    task = rating.task or WireTask()
    normalized = Rating(
        merchant_id=wire.merchant_id,
        rating_id=rating.id,
        stars=rating.rating,
        comment=rating.comment,
        reasons=tuple(reason.text for reason in rating.rating_reasons or () if reason and reason.text),
        task_id=task.id,
        external_id=task.external_id,
        task_title=task.title,
        task_status=task.status,
        created_at=_utc(rating.created_at),
        updated_at=_utc(rating.updated_at),
    )
    return Judgement("accepted", RATING_SUBMITTED, wire.merchant_id, rating.id, rating=normalized)


def _utc(moment: datetime | None) -> datetime | None:
    # Bringg documents UTC; a timestamp without an offset is read as UTC rather than local time.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _fits_utc(moment: datetime) -> bool:
    # An offset can carry a valid local time past year 9999 or before year 1 in UTC, where versions live.
    if not moment.utcoffset():
        return True  # none (read as UTC) or zero, as Bringg's `Z` is: nothing to convert
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _describe(item: Any) -> str:
    where = ".".join(str(part) for part in item.get("loc", ())) or "body"
    # A custom validator's message comes prefixed by pydantic; the reason alone reads better.
    return f"{where}: {str(item.get('msg', 'invalid')).removeprefix('Value error, ')}"
