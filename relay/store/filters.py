"""Which deliveries and webhooks an operator means: filters read from query strings, JSON or the CLI."""

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
)

from relay.domain.delivery import DELIVERY_STATES, DeliveryState
from relay.domain.ids import MAX_ID
from relay.store.records import WebhookStatus

WEBHOOK_STATUSES: tuple[WebhookStatus, ...] = get_args(WebhookStatus)
REPLAYABLE_STATES: tuple[DeliveryState, ...] = ("dead", "unmatched")
# Neither delivered nor in flight: stopping these cannot cut a call to Quivo short.
CANCELLABLE_STATES: tuple[DeliveryState, ...] = ("pending", "retrying", "unmatched", "dead")
CANCELLED = "cancelled by operator"


# ASCII digits only: int() would also read "٣" or " 3", which no id is written as.
_ID_DIGITS = re.compile(r"[0-9]{1,19}")
_DURATION = re.compile(r"(\d{1,9})\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_instant(text: str, now: datetime) -> datetime:
    """An ISO-8601 time (naive means UTC) or a duration back from `now`: `45s`, `30m`, `2h`, `7d`, `2w`."""
    value = text.strip()
    if duration := _DURATION.fullmatch(value):
        try:
            return now - timedelta(seconds=int(duration[1]) * _UNIT_SECONDS[duration[2]])
        except OverflowError:
            raise ValueError(f"{value} reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("expected an ISO-8601 time or a duration such as 30m, 2h or 7d") from None
    return _as_utc(moment)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    # In UTC now, not when the query is built: 9999-12-31T23:59:59-01:00 is beyond the year 9999 there.
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("must fall within the years 1 to 9999 in UTC") from None


def _read_instant(value: object, info: ValidationInfo) -> object:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        # Not a number either, which pydantic would read as seconds since 1970.
        raise ValueError("expected an ISO-8601 time or a duration such as 30m, 2h or 7d")
    now = (info.context or {}).get("now") or datetime.now(UTC)
    return parse_instant(value, now)


def _one_or_more_of(allowed: tuple[str, ...]) -> BeforeValidator:
    """Accepts `a,b`, a list of such strings, or a tuple; gives a tuple of known values without repeats."""

    def read(value: object) -> object:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        parts = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
        for part in parts:
            if part not in allowed:
                raise ValueError(f"{part!r} is not one of {', '.join(allowed)}")
        return tuple(dict.fromkeys(parts))

    return BeforeValidator(read)


def whole_number(value: object) -> object:
    """JSON's `7.0` as the integer 7 (JSON Schema calls it an integer), for ids validated strictly."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Instant = Annotated[datetime, BeforeValidator(_read_instant), AfterValidator(_as_utc)]
Id = Annotated[int, BeforeValidator(whole_number), Field(ge=0, le=MAX_ID)]
# A tenant's name as relay/tenants/file.py admits it: a removed tenant's rows are still found by it.
TenantName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,40}$")]


class DeliveryFilter(BaseModel):
    """Which deliveries to list or replay, from a query string, a JSON body or command-line options.

    `state` takes one or more states (`dead,unmatched` or repeated); `since` and `until` take an ISO-8601
    time or a duration back from now (`2h`), and bound `created_at` as since <= created_at < until (an
    `until` not after `since` matches nothing). An `external_id` without `merchant_id` matches that order
    id at every merchant. `search` (what an operator pasted: an order id, or a Bringg rating id or Quivo
    inquiry id) matches a delivery whose order id is that text, or, for a whole number, whose rating id or
    inquiry id is that number. Pass `context={"now": ...}` to `model_validate` to fix what "now" means.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: TenantName | None = None
    state: Annotated[tuple[DeliveryState, ...], _one_or_more_of(DELIVERY_STATES)] = ()
    merchant_id: Id | None = None
    external_id: Annotated[str, Field(min_length=1)] | None = None
    rating_id: Id | None = None
    inquiry_id: Id | None = None
    search: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    since: Instant | None = None
    until: Instant | None = None

    def searched_number(self) -> int | None:
        """The search as a rating or inquiry id, when it is a whole number ids can be."""
        if self.search is None or not _ID_DIGITS.fullmatch(self.search):
            return None
        number = int(self.search)
        return number if number <= MAX_ID else None


class ReplayFilter(DeliveryFilter):
    """Which deliveries a bulk replay takes: dead or unmatched ones only, both when no state is named."""

    state: Annotated[
        tuple[DeliveryState, ...],
        _one_or_more_of(REPLAYABLE_STATES),
        AfterValidator(lambda states: states or REPLAYABLE_STATES),
    ] = REPLAYABLE_STATES

    def both(self, other: "ReplayFilter") -> "ReplayFilter | None":
        """What both filters match (states in both, the later since, the earlier until); None: nothing."""
        fields: dict[str, Any] = {"state": tuple(state for state in self.state if state in other.state)}
        # Two different searches could both match one delivery; refusing that rare pair replays nothing.
        for name in ("tenant", "merchant_id", "external_id", "rating_id", "inquiry_id", "search"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None and mine != theirs:
                return None
            fields[name] = theirs if mine is None else mine
        fields["since"] = max((t for t in (self.since, other.since) if t is not None), default=None)
        fields["until"] = min((t for t in (self.until, other.until) if t is not None), default=None)
        return self.model_copy(update=fields) if fields["state"] else None


class WebhookFilter(BaseModel):
    """Which stored webhooks to list: by tenant, status (one or more), received since a time or duration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: TenantName | None = None
    status: Annotated[tuple[WebhookStatus, ...], _one_or_more_of(WEBHOOK_STATUSES)] = ()
    since: Instant | None = None

    def stored_statuses(self) -> tuple[tuple[str, ...], bool | None]:
        """The status column's values to read, and whether a quarantined row must be dismissed (True), must
        not be (False) or may be either (None): a dismissed webhook is stored as quarantined."""
        columns = tuple(
            dict.fromkeys("quarantined" if status == "dismissed" else status for status in self.status)
        )
        dismissed, quarantined = "dismissed" in self.status, "quarantined" in self.status
        return columns, None if dismissed == quarantined else dismissed
