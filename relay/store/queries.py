"""What operators ask of the store: find, inspect, replay and cancel deliveries; webhooks; links; stats."""

import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, get_args

import aiosqlite
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
)

from relay.domain.delivery import DELIVERY_STATES, DeliveryState
from relay.domain.ids import MAX_ID
from relay.domain.rating import format_instant
from relay.linkfile import Link
from relay.store.db import Database, WriteJob
from relay.store.gauges import read_backlog
from relay.store.inbox import WebhookStatus
from relay.store.links import LinkUpsert, upsert_links

WEBHOOK_STATUSES: tuple[WebhookStatus, ...] = get_args(WebhookStatus)
REPLAYABLE_STATES: tuple[DeliveryState, ...] = ("dead", "unmatched")
# Neither delivered nor in flight: stopping these cannot cut a call to Quivo short.
CANCELLABLE_STATES: tuple[DeliveryState, ...] = ("pending", "retrying", "unmatched", "dead")
CANCELLED = "cancelled by operator"

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")

# Filters ------------------------------------------------------------------------------------------

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


class DeliveryFilter(BaseModel):
    """Which deliveries to list or replay, from a query string, a JSON body or command-line options.

    `state` takes one or more states (`dead,unmatched` or repeated); `since` and `until` take an ISO-8601
    time or a duration back from now (`2h`), and bound `created_at` as since <= created_at < until (an
    `until` not after `since` matches nothing). An `external_id` without `merchant_id` matches that order
    id at every merchant. Pass `context={"now": ...}` to `model_validate` to fix what "now" means.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: Annotated[tuple[DeliveryState, ...], _one_or_more_of(DELIVERY_STATES)] = ()
    merchant_id: Id | None = None
    external_id: Annotated[str, Field(min_length=1)] | None = None
    inquiry_id: Id | None = None
    since: Instant | None = None
    until: Instant | None = None


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
        for name in ("merchant_id", "external_id", "inquiry_id"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None and mine != theirs:
                return None
            fields[name] = theirs if mine is None else mine
        fields["since"] = max((t for t in (self.since, other.since) if t is not None), default=None)
        fields["until"] = min((t for t in (self.until, other.until) if t is not None), default=None)
        return self.model_copy(update=fields) if fields["state"] else None


class WebhookFilter(BaseModel):
    """Which stored webhooks to list: by status (one or more) and received since a time or duration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Annotated[tuple[WebhookStatus, ...], _one_or_more_of(WEBHOOK_STATUSES)] = ()
    since: Instant | None = None


# Records ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliverySummary:
    """One line of the delivery listing."""

    id: int
    state: str
    merchant_id: int
    rating_id: int
    external_id: str | None
    inquiry_id: int | None
    stars: int
    attempts: int
    next_attempt_at: str | None
    last_error: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class DeliveryAttempt:
    """One call made to Quivo for a delivery."""

    number: int
    action: str
    started_at: str
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None


@dataclass(frozen=True)
class WebhookSource:
    """The webhook a delivery came from, without its body."""

    id: int
    received_at: str
    request_id: str
    status: str


@dataclass(frozen=True)
class DeliveryRecord(DeliverySummary):
    """Every field of a delivery, its normalized rating parsed."""

    webhook_id: int
    version: str
    unconfirmed: bool
    last_status: int | None
    current_rating: float | None
    delivered_at: str | None
    replayed_at: str | None
    rating: dict[str, Any]


@dataclass(frozen=True)
class DeliveryDetail:
    """A delivery in full, its calls to Quivo (oldest first), and the webhook it came from."""

    delivery: DeliveryRecord
    attempts: list[DeliveryAttempt]
    webhook: WebhookSource | None


@dataclass(frozen=True)
class WebhookSummary:
    """One line of the webhook listing; `bytes` is the size of the raw body."""

    id: int
    received_at: str
    request_id: str
    status: str
    webhook_type: str | None
    merchant_id: int | None
    rating_id: int | None
    errors: list[str]
    bytes: int


@dataclass(frozen=True)
class WebhookDetail(WebhookSummary):
    """A stored webhook with its raw body and the deliveries it created."""

    content_type: str | None
    body: bytes
    delivery_ids: list[int]


@dataclass(frozen=True)
class StateChange:
    """What asking to move one delivery found: its state then (None: no such delivery), and why it stayed."""

    before: str | None
    refusal: str | None = None

    @property
    def moved(self) -> bool:
        return self.before is not None and self.refusal is None


@dataclass(frozen=True)
class SkippedReplay:
    """A delivery a bulk replay matched but left as it was, and why."""

    delivery_id: int
    reason: str


@dataclass(frozen=True)
class BulkReplay:
    """What a bulk replay did: how many deliveries went back to pending, and each one it left, with why."""

    replayed: int
    skipped: list[SkippedReplay]


@dataclass(frozen=True)
class Recent:
    """How many deliveries reached a state in the last hour and in the last day."""

    last_hour: int
    last_day: int


@dataclass(frozen=True)
class Stats:
    """The relay at a glance; every state and status is present, 0 when none."""

    deliveries: dict[str, int]
    webhooks: dict[str, int]
    backlog_age_s: float | None
    worker_lag_s: float | None
    delivered: Recent
    dead: Recent


# Deliveries ---------------------------------------------------------------------------------------

_SUMMARY_COLUMNS = ", ".join(field.name for field in fields(DeliverySummary))


async def list_deliveries(
    conn: aiosqlite.Connection, where: DeliveryFilter, *, after: int | None = None, limit: int = 50
) -> list[DeliverySummary]:
    """Up to `limit` deliveries matching `where`, newest (highest id) first, from below the id `after`."""
    conditions: list[str] = []
    parameters: list[Any] = []
    if where.merchant_id is not None:
        # With an external id, (merchant_id, external_id) yields rows in id order; alone, it would mean
        # sorting all of a merchant's rows, so walk the ids instead (`+` keeps SQLite off that index).
        conditions.append("merchant_id = ?" if where.external_id is not None else "+merchant_id = ?")
        parameters.append(where.merchant_id)
    if where.external_id is not None:
        # Without its merchant no index leads with the order id: walk the ids, as for a merchant alone.
        conditions.append("external_id = ?" if where.merchant_id is not None else "+external_id = ?")
        parameters.append(where.external_id)
    if where.inquiry_id is not None:
        conditions.append("inquiry_id = ?")
        parameters.append(where.inquiry_id)
    if where.since is not None:
        conditions.append("created_at >= ?")
        parameters.append(format_instant(where.since))
    if where.until is not None:
        conditions.append("created_at < ?")
        parameters.append(format_instant(where.until))
    rows = await _newest_first(
        conn,
        f"SELECT {_SUMMARY_COLUMNS} FROM deliveries",
        ("state", where.state),
        conditions,
        parameters,
        after,
        limit,
    )
    return [_record(DeliverySummary, row) for row in rows]


async def get_delivery(conn: aiosqlite.Connection, delivery_id: int) -> DeliveryDetail | None:
    """One delivery with its calls to Quivo and the webhook it came from; None when there is no such one."""
    row = await _one(conn, "SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
    if row is None:
        return None
    calls = await conn.execute_fetchall(
        "SELECT number, action, started_at, duration_ms, status_code, outcome, error "
        "FROM attempts WHERE delivery_id = ? ORDER BY id",
        (delivery_id,),
    )
    webhook = await _one(
        conn, "SELECT id, received_at, request_id, status FROM webhooks WHERE id = ?", (row["webhook_id"],)
    )
    return DeliveryDetail(
        delivery=_record(
            DeliveryRecord, row, unconfirmed=bool(row["unconfirmed"]), rating=json.loads(row["rating"])
        ),
        attempts=[_record(DeliveryAttempt, call) for call in calls],
        webhook=None if webhook is None else _record(WebhookSource, webhook),
    )


def replay_delivery(delivery_id: int, *, now: datetime) -> WriteJob[StateChange]:
    """A write job that sends a dead or unmatched delivery back to pending, due `now`.

    Attempts start again from 0 and its age from `now` (`replayed_at`); it is marked unconfirmed, so the
    worker reads the inquiry back before sending and never posts a rating twice. The last error is kept.
    A delivery with a newer version of its rating stays as it is: replaying it would overwrite the newer.
    """

    def job(conn: sqlite3.Connection) -> StateChange:
        row = conn.execute(
            """
            SELECT d.state, (
                SELECT n.id FROM deliveries n
                WHERE n.merchant_id = d.merchant_id AND n.rating_id = d.rating_id AND n.version > d.version
                ORDER BY n.version DESC LIMIT 1) AS newer
            FROM deliveries d WHERE d.id = ?
            """,
            (delivery_id,),
        ).fetchone()
        if row is None:
            return StateChange(None)
        state = row["state"]
        if state not in REPLAYABLE_STATES:
            return StateChange(
                state, f"delivery {delivery_id} is {state}: only dead or unmatched ones replay"
            )
        if row["newer"] is not None:
            return StateChange(state, _newer_version(row["newer"]))
        _replay(conn, [delivery_id], now)
        return StateChange(state)

    return job


async def replay_matching(
    database: Database,
    where: ReplayFilter,
    *,
    now: datetime,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> BulkReplay:
    """Replay (as `replay_delivery` does) every delivery `where` matches; how many, and those it left.

    A delivery whose rating has a newer version is left (replaying it would undo the newer one), as is
    one the worker moved on between the listing and its batch's commit; each is reported with why.
    One commit per `batch_size` matches, so webhooks never wait long behind a large replay. `progress`
    hears the number replayed so far after each commit.
    """
    replayed = 0
    skipped: list[SkippedReplay] = []
    after: int | None = None
    while page := await list_deliveries(database.reader, where, after=after, limit=batch_size):
        ids = [delivery.id for delivery in page]
        done, left = await database.write(_replay_job(ids, now))
        replayed += len(done)
        skipped += left
        after = ids[-1]
        if progress is not None:
            progress(replayed)
    return BulkReplay(replayed, skipped)


def _replay_job(ids: list[int], now: datetime) -> WriteJob[tuple[list[int], list[SkippedReplay]]]:
    def job(conn: sqlite3.Connection) -> tuple[list[int], list[SkippedReplay]]:
        done = _replay(conn, ids, now)
        return done, _why_left(conn, sorted(set(ids) - set(done), reverse=True))

    return job


def _why_left(conn: sqlite3.Connection, ids: list[int]) -> list[SkippedReplay]:
    """Why each of these matched deliveries was not replayed, newest first."""
    rows = conn.execute(
        """
        SELECT d.id, d.state, (
            SELECT n.id FROM deliveries n
            WHERE n.merchant_id = d.merchant_id AND n.rating_id = d.rating_id AND n.version > d.version
            ORDER BY n.version DESC LIMIT 1) AS newer
        FROM deliveries d WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.id DESC
        """,
        (json.dumps(ids),),
    ).fetchall()
    return [
        SkippedReplay(
            row["id"],
            _newer_version(row["newer"])
            if row["newer"] is not None
            else f"it became {row['state']} since it was listed: only dead or unmatched ones replay",
        )
        for row in rows
    ]


def _newer_version(newer_id: int) -> str:
    return f"delivery {newer_id} holds a newer version of this rating; replaying would undo it"


def _replay(conn: sqlite3.Connection, ids: list[int], now: datetime) -> list[int]:
    # States are checked again here: between listing and this commit the worker may have moved a row.
    rows = conn.execute(
        """
        UPDATE deliveries SET state = 'pending', next_attempt_at = :now, attempts = 0, unconfirmed = 1,
            replayed_at = :now, updated_at = :now,
            -- Quivo said the inquiry does not exist: match again, so a corrected link takes effect.
            inquiry_id = CASE WHEN last_status = 404 THEN NULL ELSE inquiry_id END
        WHERE id IN (SELECT value FROM json_each(:ids)) AND state IN ('dead', 'unmatched')
          AND NOT EXISTS (
              SELECT 1 FROM deliveries n
              WHERE n.merchant_id = deliveries.merchant_id AND n.rating_id = deliveries.rating_id
                AND n.version > deliveries.version)
        RETURNING id
        """,
        {"now": format_instant(now), "ids": json.dumps(ids)},
    ).fetchall()
    return [int(row["id"]) for row in rows]


def cancel_delivery(delivery_id: int, *, now: datetime) -> WriteJob[StateChange]:
    """A write job that stops a delivery not yet delivered nor in flight: it becomes dead, 'cancelled'."""

    def job(conn: sqlite3.Connection) -> StateChange:
        row = conn.execute("SELECT state FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if row is None:
            return StateChange(None)
        state = row["state"]
        if state == "sending":
            return StateChange(state, f"delivery {delivery_id} is sending: a call to Quivo is in flight")
        if state not in CANCELLABLE_STATES:
            return StateChange(state, f"delivery {delivery_id} is already {state}")
        conn.execute(
            "UPDATE deliveries SET state = 'dead', next_attempt_at = NULL, last_error = ?, updated_at = ? "
            "WHERE id = ?",
            (CANCELLED, format_instant(now), delivery_id),
        )
        return StateChange(state)

    return job


# Webhooks -----------------------------------------------------------------------------------------

_WEBHOOK_COLUMNS = (
    "id, received_at, request_id, status, webhook_type, merchant_id, rating_id, errors, length(body) AS bytes"
)


async def list_webhooks(
    conn: aiosqlite.Connection, where: WebhookFilter, *, after: int | None = None, limit: int = 50
) -> list[WebhookSummary]:
    """Up to `limit` stored webhooks matching `where`, newest first, from below the id `after`."""
    conditions: list[str] = []
    parameters: list[Any] = []
    if where.since is not None:
        conditions.append("received_at >= ?")
        parameters.append(format_instant(where.since))
    rows = await _newest_first(
        conn,
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks",
        ("status", where.status),
        conditions,
        parameters,
        after,
        limit,
    )
    return [_record(WebhookSummary, row, errors=_errors(row)) for row in rows]


async def get_webhook(conn: aiosqlite.Connection, webhook_id: int) -> WebhookDetail | None:
    """One stored webhook with its raw body and the ids of the deliveries it created; None if unknown."""
    row = await _one(
        conn, f"SELECT {_WEBHOOK_COLUMNS}, content_type, body FROM webhooks WHERE id = ?", (webhook_id,)
    )
    if row is None:
        return None
    delivery_ids: list[int] = []
    if row["merchant_id"] is not None and row["rating_id"] is not None:
        # Through the rating's key: deliveries have no index on webhook_id.
        found = await conn.execute_fetchall(
            "SELECT id FROM deliveries WHERE merchant_id = ? AND rating_id = ? AND webhook_id = ? "
            "ORDER BY id",
            (row["merchant_id"], row["rating_id"], webhook_id),
        )
        delivery_ids = [int(delivery["id"]) for delivery in found]
    return _record(
        WebhookDetail, row, errors=_errors(row), body=bytes(row["body"]), delivery_ids=delivery_ids
    )


def _errors(row: sqlite3.Row) -> list[str]:
    return list(json.loads(row["errors"])) if row["errors"] else []


# Links --------------------------------------------------------------------------------------------


async def save_links(
    database: Database, links: Sequence[Link], *, now: datetime, batch_size: int = 5000
) -> LinkUpsert:
    """Save `links` and wake the unmatched deliveries of their orders, one commit per `batch_size` links."""
    saved = 0
    woken: list[int] = []
    for start in range(0, len(links), batch_size):
        result = await database.write(upsert_links(links[start : start + batch_size], now=now))
        saved += result.saved
        woken += result.woken
    return LinkUpsert(saved=saved, woken=sorted(woken))


# Stats --------------------------------------------------------------------------------------------


async def get_stats(conn: aiosqlite.Connection, *, now: datetime) -> Stats:
    """Deliveries by state, webhooks by status, the backlog's age and the worker's lag, recent outcomes."""
    states: dict[str, int] = dict.fromkeys(DELIVERY_STATES, 0)
    for row in await conn.execute_fetchall("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
        states[row[0]] = row[1]
    statuses: dict[str, int] = dict.fromkeys(WEBHOOK_STATUSES, 0)
    for row in await conn.execute_fetchall("SELECT status, COUNT(*) FROM webhooks GROUP BY status"):
        statuses[row[0]] = row[1]
    backlog = await read_backlog(conn, now)
    window = {
        "hour": format_instant(now - timedelta(hours=1)),
        "day": format_instant(now - timedelta(days=1)),
    }
    # A delivered row is never touched again, so its updated_at is when it was delivered.
    delivered = await _one(
        conn,
        "SELECT COUNT(*), COALESCE(SUM(updated_at >= :hour), 0) "
        "FROM deliveries INDEXED BY deliveries_finished "
        "WHERE state IN ('delivered', 'superseded') AND state = 'delivered' AND updated_at >= :day",
        window,
    )
    dead = await _one(
        conn,
        "SELECT COUNT(*), COALESCE(SUM(updated_at >= :hour), 0) FROM deliveries "
        "WHERE state = 'dead' AND updated_at >= :day",
        window,
    )
    assert delivered is not None and dead is not None
    return Stats(
        deliveries=states,
        webhooks=statuses,
        backlog_age_s=backlog.age_s,
        worker_lag_s=backlog.worker_lag_s,
        delivered=Recent(last_hour=delivered[1], last_day=delivered[0]),
        dead=Recent(last_hour=dead[1], last_day=dead[0]),
    )


# Helpers ------------------------------------------------------------------------------------------


async def _newest_first(
    conn: aiosqlite.Connection,
    select: str,
    split: tuple[str, Sequence[str]],
    conditions: list[str],
    parameters: list[Any],
    after: int | None,
    limit: int,
) -> Iterable[sqlite3.Row]:
    """Rows of `select` matching `conditions` and one of the `split` column's values, by id descending."""
    if limit < 1:
        # SQLite reads a negative LIMIT as no limit at all.
        raise ValueError(f"limit must be at least 1, got {limit}")
    if after is not None:
        conditions = [*conditions, "id < ?"]
        parameters = [*parameters, after]
    column, values = split
    # One arm per value: each walks its (value, id) index in id order and SQLite merges them without a sort.
    arms = [[f"{column} = ?", *conditions] for _ in values] or [conditions]
    sql = " UNION ALL ".join(select + (f" WHERE {' AND '.join(arm)}" if arm else "") for arm in arms)
    arguments = [argument for value in values for argument in (value, *parameters)] or parameters
    return await conn.execute_fetchall(f"{sql} ORDER BY id DESC LIMIT ?", [*arguments, limit])


async def _one(conn: aiosqlite.Connection, sql: str, parameters: Any) -> sqlite3.Row | None:
    async with conn.execute(sql, parameters) as cursor:
        row: sqlite3.Row | None = await cursor.fetchone()
    return row


def _record(kind: type[R], row: sqlite3.Row, **overrides: Any) -> R:
    """A record dataclass from the row's columns of the same names; `overrides` for converted ones."""
    names = [field.name for field in fields(kind)]
    return kind(**{name: overrides[name] if name in overrides else row[name] for name in names})
