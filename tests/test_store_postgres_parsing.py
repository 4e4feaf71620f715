"""A batch of webhooks on PostgreSQL costs the server no parsing or planning once its session has done it."""

from datetime import UTC, datetime

import asyncpg

from relay.domain.judgement import Judgement
from relay.domain.rating import Rating
from relay.store.postgres import intake
from relay.store.postgres.store import PostgresStore
from relay.store.records import InboundWebhook

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def webhook(rating_id: int) -> InboundWebhook:
    rating = Rating(merchant_id=7, rating_id=rating_id, stars=4, external_id=f"order-{rating_id}")
    judgement = Judgement("accepted", "rating_submitted", 7, rating_id, (), rating)
    return InboundWebhook("req", NOW, b'{"rating": 1}', "application/json", judgement)


async def test_recording_batches_parses_no_sql_after_the_first(postgres_store: PostgresStore) -> None:
    # The server reports each statement it parses to a session that asks (log_parser_stats, a superuser's
    # setting): a function whose body is parsed at every call shows up at every batch.
    parsed: list[str] = []

    def heard(_: object, message: asyncpg.PostgresLogMessage) -> None:
        if "PARSER STATISTICS" in str(message):
            parsed.append(str(message))

    pool = postgres_store._pool
    assert pool is not None
    async with pool.acquire() as conn:
        await conn.execute("SET client_min_messages = log; SET log_parser_stats = on")
        conn.add_log_listener(heard)
        try:
            for first in (1, 11):  # the session's first batch parses and plans what it runs
                await intake.record_webhooks(conn, [(webhook(n), NOW) for n in range(first, first + 10)])
            parsed.clear()
            stored = await intake.record_webhooks(conn, [(webhook(n), NOW) for n in range(21, 31)])
        finally:
            conn.remove_log_listener(heard)
            await conn.execute("RESET log_parser_stats; RESET client_min_messages")
    assert [one.status for one in stored] == ["accepted"] * 10
    assert parsed == []
