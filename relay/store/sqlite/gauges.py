"""The reads behind the operator gauges: deliveries by state, the backlog, and the relay at a glance."""

from datetime import datetime, timedelta

import aiosqlite

from relay.domain.delivery import DELIVERY_STATES
from relay.store.filters import WEBHOOK_STATUSES
from relay.store.records import Backlog, Recent, Stats, webhook_status
from relay.store.sqlite.instants import from_text, to_text
from relay.store.sqlite.reading import one

# The waiting states as the partial indexes spell them: SQLite uses one only for a WHERE implying it.
_WAITING = "(state = 'pending' OR state = 'retrying' OR state = 'sending')"


async def deliveries_by_state(conn: aiosqlite.Connection) -> dict[str, int]:
    """How many deliveries are in each state, every state present (0 when none)."""
    counts: dict[str, int] = dict.fromkeys(DELIVERY_STATES, 0)
    rows = await conn.execute_fetchall("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
    counts.update({row[0]: row[1] for row in rows})
    return counts


async def deliveries_by_tenant(conn: aiosqlite.Connection) -> dict[str, dict[str, int]]:
    """How many deliveries each tenant that has any holds in each state, every state present."""
    tenants: dict[str, dict[str, int]] = {}
    rows = await conn.execute_fetchall(
        "SELECT tenant, state, COUNT(*) FROM deliveries GROUP BY tenant, state"
    )
    for tenant, state, count in rows:
        tenants.setdefault(tenant, dict.fromkeys(DELIVERY_STATES, 0))[state] = count
    return tenants


async def read_backlog(conn: aiosqlite.Connection, now: datetime) -> Backlog:
    """The backlog's age and the workers' lag at `now`: the one definition every report uses."""
    # INDEXED BY: without ANALYZE statistics the planner would walk deliveries_state for either.
    # The age counts from when the worker's age limits do (a replay starts the clock again).
    waiting = await one(
        conn,
        """
        SELECT MIN(COALESCE(replayed_at, created_at)) FROM deliveries INDEXED BY deliveries_waiting
        WHERE (state = 'pending' OR state = 'retrying' OR state = 'sending')
        """,
        (),
    )
    # The soonest due of each tenant's first entry in deliveries_due_tenant, the claim's index, found tenant
    # by tenant (each next tenant one seek past the last): no index of its own to write for every delivery.
    # The states as the index's own WHERE spells them. A 'sending' row is due once its lease ran out (a
    # relay died mid-send), just as claim_due sees it.
    due = await one(
        conn,
        f"""
        WITH RECURSIVE tenants (tenant) AS (
            SELECT MIN(tenant) FROM deliveries INDEXED BY deliveries_due_tenant WHERE {_WAITING}
            UNION ALL
            SELECT (SELECT MIN(d.tenant) FROM deliveries d INDEXED BY deliveries_due_tenant
                    WHERE {_WAITING} AND d.tenant > tenants.tenant)
            FROM tenants WHERE tenant IS NOT NULL)
        SELECT MIN((SELECT d.next_attempt_at FROM deliveries d INDEXED BY deliveries_due_tenant
                    WHERE {_WAITING} AND d.tenant = tenants.tenant AND d.next_attempt_at <= ?
                    ORDER BY d.next_attempt_at LIMIT 1))
        FROM tenants WHERE tenant IS NOT NULL
        """,
        (to_text(now),),
    )
    return Backlog(
        age_s=_seconds_since(waiting[0] if waiting else None, now),
        worker_lag_s=_seconds_since(due[0] if due else None, now),
    )


async def stats(conn: aiosqlite.Connection, *, now: datetime) -> Stats:
    """Deliveries by state, webhooks by status, the backlog's age and the workers' lag, recent outcomes."""
    statuses: dict[str, int] = dict.fromkeys(WEBHOOK_STATUSES, 0)
    for row in await conn.execute_fetchall(
        "SELECT status, dismissed_at IS NOT NULL, COUNT(*) FROM webhooks GROUP BY 1, 2"
    ):
        statuses[webhook_status(row[0], bool(row[1]))] += row[2]
    backlog = await read_backlog(conn, now)
    window = {"hour": to_text(now - timedelta(hours=1)), "day": to_text(now - timedelta(days=1))}
    # A delivered row is never touched again, so its updated_at is when it was delivered.
    delivered = await one(
        conn,
        "SELECT COUNT(*), COALESCE(SUM(updated_at >= :hour), 0) "
        "FROM deliveries INDEXED BY deliveries_finished "
        "WHERE state IN ('delivered', 'superseded') AND state = 'delivered' AND updated_at >= :day",
        window,
    )
    dead = await one(
        conn,
        "SELECT COUNT(*), COALESCE(SUM(updated_at >= :hour), 0) FROM deliveries "
        "WHERE state = 'dead' AND updated_at >= :day",
        window,
    )
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


def _seconds_since(stamp: str | None, now: datetime) -> float | None:
    return None if stamp is None else (now - from_text(stamp)).total_seconds()
