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


async def test_a_claim_seeks_its_tenants_due_rows_past_another_tenants_backlog(
    postgres_store: PostgresStore,
) -> None:
    # The plan the claim runs, as the server explains it to a session that asks (auto_explain).
    explained: list[str] = []

    def heard(_: object, message: asyncpg.PostgresLogMessage) -> None:
        if "Query Text" in str(message):
            explained.append(str(message))

    pool = postgres_store._pool
    assert pool is not None
    now, lease_until = NOW + timedelta(minutes=1), NOW + timedelta(minutes=6)
    async with pool.acquire() as conn:
        for first in range(1, DUE + 1, 100):
            await intake.record_webhooks(conn, [(webhook(n), NOW) for n in range(first, first + 100)])
        # Most of the backlog is another tenant's (paused, say), due as early as this one's.
        await conn.execute("UPDATE deliveries SET tenant = 'other' WHERE rating_id > 100")
        await conn.execute("ANALYZE deliveries")
        await conn.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
            "SET auto_explain.log_nested_statements = on; SET client_min_messages = log"
        )
        conn.add_log_listener(heard)
        try:
            claimed = await outbox.claim_due(conn, "default", now=now, lease_until=lease_until, limit=10)
        finally:
            conn.remove_log_listener(heard)
            await conn.execute("RESET client_min_messages; RESET auto_explain.log_min_duration")
    assert len(claimed) == 10
    (plan,) = [text for text in explained if "WITH due AS" in text]
    assert "Index Scan using deliveries_due_tenant on deliveries d" in plan
