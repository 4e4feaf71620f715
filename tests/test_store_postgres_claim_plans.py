"""A worker's claim on PostgreSQL costs the server no planning once its session has planned it."""

from datetime import timedelta

import asyncpg

from relay.store.postgres import intake, outbox
from relay.store.postgres.store import PostgresStore
from tests.test_store_postgres_parsing import NOW, webhook

# A drain's backlog: with this many due, a plan made for each call's own instant and limit looked cheaper
# than the generic one, so every claim was planned again.
DUE = 1000


async def test_claims_plan_nothing_once_the_session_has_planned_them(postgres_store: PostgresStore) -> None:
    # The server reports each plan it makes to a session that asks (log_planner_stats, a superuser's setting).
    planned: list[str] = []

    def heard(_: object, message: asyncpg.PostgresLogMessage) -> None:
        if "PLANNER STATISTICS" in str(message):
            planned.append(str(message))

    pool = postgres_store._pool
    assert pool is not None
    now, lease_until = NOW + timedelta(minutes=1), NOW + timedelta(minutes=6)
    async with pool.acquire() as conn:
        for first in range(1, DUE + 1, 100):
            await intake.record_webhooks(conn, [(webhook(n), NOW) for n in range(first, first + 100)])
        await conn.execute("ANALYZE deliveries")  # as autovacuum would after such a burst
        await conn.execute("SET client_min_messages = log; SET log_planner_stats = on")
        conn.add_log_listener(heard)
        try:
            # PostgreSQL plans a prepared statement for each of its first five calls' own arguments, then
            # once for any: the session's first six claims plan.
            for _ in range(6):
                await outbox.claim_due(conn, "default", now=now, lease_until=lease_until, limit=10)
            planned.clear()
            claimed = [
                await outbox.claim_due(conn, "default", now=now, lease_until=lease_until, limit=10)
                for _ in range(3)
            ]
        finally:
            conn.remove_log_listener(heard)
            await conn.execute("RESET log_planner_stats; RESET client_min_messages")
    assert [len(claim) for claim in claimed] == [10, 10, 10]
    assert planned == []
