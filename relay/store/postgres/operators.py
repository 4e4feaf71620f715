"""What operators ask of the store: find, inspect, replay and cancel deliveries; webhooks; stats."""

import json
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from relay.domain.delivery import DELIVERY_STATES, WAITING_STATES
from relay.store.filters import (
    CANCELLABLE_STATES,
    CANCELLED,
    REPLAYABLE_STATES,
    WEBHOOK_STATUSES,
    DeliveryFilter,
    WebhookFilter,
)
from relay.store.postgres.connection import Conn
from relay.store.records import (
    Backlog,
    DeliveryAttempt,
    DeliveryDetail,
    DeliveryRecord,
    DeliverySummary,
    Recent,
    ReplayBatch,
    SkippedReplay,
    StateChange,
    Stats,
    WebhookDetail,
    WebhookSource,
    WebhookStatus,
    WebhookSummary,
    webhook_status,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")

# Counts -------------------------------------------------------------------------------------------


async def deliveries_by_state(conn: Conn) -> dict[str, int]:
    """How many deliveries are in each state, every state present (0 when none)."""
    counts: dict[str, int] = dict.fromkeys(DELIVERY_STATES, 0)
    rows = await conn.fetch("SELECT state, count(*) FROM deliveries GROUP BY state")
    counts.update({row[0]: row[1] for row in rows})
    return counts


async def deliveries_by_tenant(conn: Conn) -> dict[str, dict[str, int]]:
    """How many deliveries each tenant that has any holds in each state, every state present."""
    tenants: dict[str, dict[str, int]] = {}
    for tenant, state, count in await conn.fetch(
        "SELECT tenant, state, count(*) FROM deliveries GROUP BY tenant, state"
    ):
        tenants.setdefault(tenant, dict.fromkeys(DELIVERY_STATES, 0))[state] = count
    return tenants


async def read_backlog(conn: Conn, *, now: datetime) -> Backlog:
    """The backlog's age and the workers' lag at `now` (each along its partial index)."""
    waiting = await conn.fetchval(
        "SELECT min(COALESCE(replayed_at, created_at)) FROM deliveries WHERE state = ANY($1::text[])",
        list(WAITING_STATES),
    )
    # A 'sending' row is due once its lease ran out (a worker died mid-send), just as claims see it.
    due = await conn.fetchval(
        "SELECT next_attempt_at FROM deliveries WHERE state IN ('pending', 'retrying', 'sending') "
        "AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT 1",
        now,
    )
    return Backlog(age_s=_seconds_since(waiting, now), worker_lag_s=_seconds_since(due, now))


def _seconds_since(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else (now - moment).total_seconds()


async def stats(conn: Conn, *, now: datetime) -> Stats:
    """Deliveries by state, webhooks by status, the backlog, deliveries done and dead lately."""
    statuses: dict[str, int] = dict.fromkeys(WEBHOOK_STATUSES, 0)
    for row in await conn.fetch(
        "SELECT status, dismissed_at IS NOT NULL, count(*) FROM webhooks GROUP BY 1, 2"
    ):
        statuses[webhook_status(row[0], row[1])] += row[2]
    backlog = await read_backlog(conn, now=now)
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)
    # A delivered row is never touched again, so its updated_at is when it was delivered.
    recent = (
        "SELECT count(*), count(*) FILTER (WHERE updated_at >= $1) FROM deliveries "
        "WHERE state = $3 AND updated_at >= $2"
    )
    delivered = await conn.fetchrow(recent, hour, day, "delivered")
    dead = await conn.fetchrow(recent, hour, day, "dead")
    assert delivered is not None and dead is not None
    return Stats(
        deliveries=await deliveries_by_state(conn),
        webhooks=statuses,
        backlog_age_s=backlog.age_s,
        worker_lag_s=backlog.worker_lag_s,
        delivered=Recent(last_hour=delivered[1], last_day=delivered[0]),
        dead=Recent(last_hour=dead[1], last_day=dead[0]),
        tenants=await deliveries_by_tenant(conn),
    )


# Deliveries ---------------------------------------------------------------------------------------

_SUMMARY_COLUMNS = ", ".join(field.name for field in fields(DeliverySummary))


async def list_deliveries(
    conn: Conn, where: DeliveryFilter, *, after: int | None, limit: int
) -> list[DeliverySummary]:
    """Up to `limit` deliveries matching `where`, newest (highest id) first, from below the id `after`."""
    conditions = _matching(where)
    if conditions is None:
        return []
    rows = await _newest_first(conn, f"SELECT {_SUMMARY_COLUMNS} FROM deliveries", conditions, after, limit)
    return [_record(DeliverySummary, row) for row in rows]


async def count_deliveries(conn: Conn, where: DeliveryFilter) -> int:
    """How many deliveries match `where`."""
    conditions = _matching(where)
    if conditions is None:
        return 0
    clause = f" WHERE {' AND '.join(conditions.clauses)}" if conditions.clauses else ""
    count: int = await conn.fetchval(f"SELECT count(*) FROM deliveries{clause}", *conditions.arguments)
    return count


async def delivery_comments(conn: Conn, delivery_ids: Sequence[int]) -> dict[int, str | None]:
    """The consumer's comment of each of these deliveries (those that exist)."""
    rows = await conn.fetch(
        "SELECT id, rating::json ->> 'comment' FROM deliveries WHERE id = ANY($1::bigint[])",
        list(delivery_ids),
    )
    return {row[0]: row[1] for row in rows}


def _matching(where: DeliveryFilter) -> "_Conditions | None":
    """The conditions of `where`; None when nothing can match it."""
    # text holds no NUL, so no order id stored here has one (and the server refuses one); nor has a number
    if any(text is not None and "\x00" in text for text in (where.external_id, where.search)):
        return None
    conditions = _Conditions()
    if where.state:
        conditions.add("state = ANY({}::text[])", list(where.state))
    for column in ("tenant", "merchant_id", "external_id", "rating_id", "inquiry_id"):
        if (value := getattr(where, column)) is not None:
            conditions.add(f"{column} = {{}}", value)
    if where.search is not None:
        number = where.searched_number()
        if number is None:
            conditions.add("external_id = {}", where.search)
        else:
            conditions.add("(external_id = {0} OR rating_id = {1} OR inquiry_id = {1})", where.search, number)
    if where.since is not None:
        conditions.add("created_at >= {}", where.since)
    if where.until is not None:
        conditions.add("created_at < {}", where.until)
    return conditions


async def get_delivery(conn: Conn, delivery_id: int) -> DeliveryDetail | None:
    """One delivery with its calls to Quivo and the webhook it came from; None when there is none."""
    row = await conn.fetchrow("SELECT * FROM deliveries WHERE id = $1", delivery_id)
    if row is None:
        return None
    calls = await conn.fetch(
        "SELECT number, action, started_at, duration_ms, status_code, outcome, error "
        "FROM attempts WHERE delivery_id = $1 ORDER BY id",
        delivery_id,
    )
    webhook = await conn.fetchrow(
        "SELECT id, received_at, request_id, status FROM webhooks WHERE id = $1", row["webhook_id"]
    )
    return DeliveryDetail(
        delivery=_record(DeliveryRecord, row, rating=json.loads(row["rating"])),
        attempts=[_record(DeliveryAttempt, call) for call in calls],
        webhook=None if webhook is None else _record(WebhookSource, webhook),
    )


_NEWER = """(
    SELECT n.id FROM deliveries n
    WHERE n.merchant_id = d.merchant_id AND n.rating_id = d.rating_id AND n.version > d.version
    ORDER BY n.version DESC LIMIT 1)"""


async def replay_delivery(conn: Conn, delivery_id: int, *, now: datetime) -> StateChange:
    """Send a dead or unmatched delivery back to pending, due `now`, unconfirmed, attempts from 0."""
    # FOR UPDATE: the state read is the state replaced, whatever a worker does meanwhile.
    row = await conn.fetchrow(
        f"SELECT d.state, {_NEWER} AS newer FROM deliveries d WHERE d.id = $1 FOR UPDATE", delivery_id
    )
    if row is None:
        return StateChange(None)
    state = row["state"]
    if state not in REPLAYABLE_STATES:
        return StateChange(state, f"delivery {delivery_id} is {state}: only dead or unmatched ones replay")
    if row["newer"] is not None:
        return StateChange(state, _newer_version(row["newer"]))
    await _replay(conn, [delivery_id], now)
    return StateChange(state)


async def replay_batch(conn: Conn, delivery_ids: Sequence[int], *, now: datetime) -> ReplayBatch:
    """Replay the listed deliveries as `replay_delivery` does; say why any stayed (newest first)."""
    done = set(await _replay(conn, list(delivery_ids), now))
    left = sorted(set(delivery_ids) - done, reverse=True)
    rows = await conn.fetch(
        f"SELECT d.id, d.state, {_NEWER} AS newer FROM deliveries d WHERE d.id = ANY($1::bigint[]) "
        "ORDER BY d.id DESC",
        left,
    )
    skipped = [
        SkippedReplay(
            row["id"],
            _newer_version(row["newer"])
            if row["newer"] is not None
            else f"it became {row['state']} since it was listed: only dead or unmatched ones replay",
        )
        for row in rows
    ]
    return ReplayBatch(replayed=[i for i in dict.fromkeys(delivery_ids) if i in done], skipped=skipped)


def _newer_version(newer_id: int) -> str:
    return f"delivery {newer_id} holds a newer version of this rating; replaying would undo it"


async def _replay(conn: Conn, ids: list[int], now: datetime) -> list[int]:
    # States are checked again here: between listing and this commit a worker may have moved a row.
    rows = await conn.fetch(
        """
        UPDATE deliveries SET state = 'pending', next_attempt_at = $2, attempts = 0, unconfirmed = true,
            replayed_at = $2, updated_at = $2,
            -- Quivo said the inquiry does not exist: match again, so a corrected link takes effect.
            inquiry_id = CASE WHEN last_status = 404 THEN NULL ELSE inquiry_id END
        WHERE id = ANY($1::bigint[]) AND state IN ('dead', 'unmatched')
          AND NOT EXISTS (
              SELECT 1 FROM deliveries n
              WHERE n.merchant_id = deliveries.merchant_id AND n.rating_id = deliveries.rating_id
                AND n.version > deliveries.version)
        RETURNING id
        """,
        ids,
        now,
    )
    return [int(row["id"]) for row in rows]


async def cancel_delivery(conn: Conn, delivery_id: int, *, now: datetime) -> StateChange:
    """Stop a delivery neither delivered nor in flight: it becomes dead, 'cancelled by operator'."""
    state = await conn.fetchval("SELECT state FROM deliveries WHERE id = $1 FOR UPDATE", delivery_id)
    if state is None:
        return StateChange(None)
    if state == "sending":
        return StateChange(state, f"delivery {delivery_id} is sending: a call to Quivo is in flight")
    if state not in CANCELLABLE_STATES:
        return StateChange(state, f"delivery {delivery_id} is already {state}")
    await conn.execute(
        "UPDATE deliveries SET state = 'dead', next_attempt_at = NULL, last_error = $1, updated_at = $2 "
        "WHERE id = $3",
        CANCELLED,
        now,
        delivery_id,
    )
    return StateChange(state)


# Webhooks -----------------------------------------------------------------------------------------

_WEBHOOK_COLUMNS = (
    "id, tenant, received_at, request_id, status, webhook_type, merchant_id, rating_id, errors, "
    "octet_length(body) AS bytes, dismissed_at, dismissed_reason"
)


async def list_webhooks(
    conn: Conn, where: WebhookFilter, *, after: int | None, limit: int
) -> list[WebhookSummary]:
    """Up to `limit` stored webhooks matching `where`, newest first, from below the id `after`."""
    conditions = _Conditions()
    if where.tenant is not None:
        conditions.add("tenant = {}", where.tenant)
    statuses, dismissed = where.stored_statuses()
    if statuses:
        conditions.add("status = ANY({}::text[])", list(statuses))
    if dismissed is not None:
        conditions.add("(status <> 'quarantined' OR (dismissed_at IS NOT NULL) = {})", dismissed)
    if where.since is not None:
        conditions.add("received_at >= {}", where.since)
    rows = await _newest_first(conn, f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks", conditions, after, limit)
    return [_record(WebhookSummary, row, errors=_errors(row), status=_status(row)) for row in rows]


async def get_webhook(conn: Conn, webhook_id: int) -> WebhookDetail | None:
    """One stored webhook with its raw body and the ids of the deliveries it created."""
    row = await conn.fetchrow(
        f"SELECT {_WEBHOOK_COLUMNS}, content_type, body FROM webhooks WHERE id = $1", webhook_id
    )
    if row is None:
        return None
    delivery_ids: list[int] = []
    if row["merchant_id"] is not None and row["rating_id"] is not None:
        # Through the rating's key: deliveries have no index on webhook_id.
        found = await conn.fetch(
            "SELECT id FROM deliveries WHERE merchant_id = $1 AND rating_id = $2 AND webhook_id = $3 "
            "ORDER BY id",
            row["merchant_id"],
            row["rating_id"],
            webhook_id,
        )
        delivery_ids = [int(delivery["id"]) for delivery in found]
    return _record(
        WebhookDetail,
        row,
        errors=_errors(row),
        status=_status(row),
        body=bytes(row["body"]),
        delivery_ids=delivery_ids,
    )


def _status(row: asyncpg.Record) -> WebhookStatus:
    return webhook_status(row["status"], row["dismissed_at"] is not None)


def _errors(row: asyncpg.Record) -> list[str]:
    return list(json.loads(row["errors"])) if row["errors"] else []


# Helpers ------------------------------------------------------------------------------------------


class _Conditions:
    """A WHERE clause built up with numbered parameters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.arguments: list[Any] = []

    def add(self, clause: str, *values: Any) -> None:
        """`clause` with its `{}` placeholders (or `{0}`, `{1}`, ...) numbered for `values`."""
        numbers = []
        for value in values:
            self.arguments.append(value)
            numbers.append(f"${len(self.arguments)}")
        self.clauses.append(clause.format(*numbers))


async def _newest_first(
    conn: Conn, select: str, conditions: _Conditions, after: int | None, limit: int
) -> list[asyncpg.Record]:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if after is not None:
        conditions.add("id < {}", after)
    where = f" WHERE {' AND '.join(conditions.clauses)}" if conditions.clauses else ""
    arguments = [*conditions.arguments, limit]
    return await conn.fetch(f"{select}{where} ORDER BY id DESC LIMIT ${len(arguments)}", *arguments)


def _record(kind: type[R], row: asyncpg.Record, **overrides: Any) -> R:
    """A record dataclass from the row's columns of the same names; `overrides` for converted ones."""
    names = [field.name for field in fields(kind)]
    return kind(**{name: overrides[name] if name in overrides else row[name] for name in names})
