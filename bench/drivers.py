"""asyncpg against psycopg 3 on the relay's ingest: one webhook and one delivery per commit, and batched."""

import argparse
import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import psycopg
import psycopg_pool

SCHEMA = """
DROP TABLE IF EXISTS bench_deliveries, bench_webhooks;
CREATE TABLE bench_webhooks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, received_at timestamptz NOT NULL,
    request_id text NOT NULL, status text NOT NULL, body bytea NOT NULL);
CREATE TABLE bench_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, webhook_id bigint NOT NULL,
    merchant_id bigint NOT NULL, rating_id bigint NOT NULL, rating jsonb NOT NULL,
    state text NOT NULL, next_attempt_at timestamptz, created_at timestamptz NOT NULL);
CREATE INDEX bench_deliveries_due ON bench_deliveries (next_attempt_at) WHERE state = 'pending';
"""
WEBHOOK = (
    "INSERT INTO bench_webhooks (received_at, request_id, status, body) "
    "VALUES ($1, $2, 'accepted', $3) RETURNING id"
)
DELIVERY = (
    "INSERT INTO bench_deliveries (webhook_id, merchant_id, rating_id, rating, state, next_attempt_at, "
    "created_at) VALUES ($1, $2, $3, $4, 'pending', $5, $5)"
)
BODY = b'{"event":"rating_submitted","rating":{"id":1,"stars":5,"comment":"' + b"x" * 600 + b'"}}'
RATING = '{"merchant_id": 7, "rating_id": 1, "stars": 5, "comment": "fine"}'
# One webhook with its delivery, as record_webhook writes them.
Insert = Callable[[int], Awaitable[None]]
Close = Callable[[], Awaitable[None]]


async def _asyncpg(url: str, pool_size: int, per_commit: int) -> tuple[Insert, Close]:
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)

    async def insert(n: int) -> None:
        now = datetime.now(UTC)
        async with pool.acquire() as conn, conn.transaction():
            for i in range(per_commit):
                webhook_id = await conn.fetchval(WEBHOOK, now, f"r{n}-{i}", BODY)
                await conn.execute(DELIVERY, webhook_id, 7, n * per_commit + i, RATING, now)

    return insert, pool.close


async def _psycopg(url: str, pool_size: int, per_commit: int) -> tuple[Insert, Close]:
    pool = psycopg_pool.AsyncConnectionPool(url, min_size=pool_size, max_size=pool_size, open=False)
    await pool.open(wait=True)
    webhook, delivery = (re.sub(r"\$\d", "%s", sql) for sql in (WEBHOOK, DELIVERY))

    async def insert(n: int) -> None:
        now = datetime.now(UTC)
        async with pool.connection() as conn, conn.transaction():
            for i in range(per_commit):
                cursor = await conn.execute(webhook, (now, f"r{n}-{i}", BODY))
                row = await cursor.fetchone()
                assert row is not None
                await conn.execute(delivery, (row[0], 7, n * per_commit + i, RATING, now, now))

    return insert, pool.close


async def _measure(
    make: Callable[[str, int, int], Awaitable[tuple[Insert, Close]]], url: str, commits: int, per_commit: int
) -> float:
    """Rows (webhook + delivery pairs) per second from 64 coroutines sharing a pool of 10."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(SCHEMA)
    insert, close = await make(url, 10, per_commit)
    queue = iter(range(commits))

    async def worker() -> None:
        for n in queue:
            await insert(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(64)))
    elapsed = time.perf_counter() - started
    await close()
    return commits * per_commit / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="postgresql://user:password@host:port/db of a throwaway server")
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32, help="webhooks per commit in the batched run")
    args = parser.parse_args()
    for label, per_commit, commits in (
        ("one per commit", 1, args.commits),
        (f"{args.batch} per commit", args.batch, args.commits // 8),
    ):
        # Alternate the drivers twice so neither profits from a warmer server.
        rates: dict[str, list[float]] = {"asyncpg": [], "psycopg": []}
        for _ in range(2):
            rates["asyncpg"].append(await _measure(_asyncpg, args.url, commits, per_commit))
            rates["psycopg"].append(await _measure(_psycopg, args.url, commits, per_commit))
        best = {name: max(values) for name, values in rates.items()}
        print(
            f"{label}: asyncpg {best['asyncpg']:,.0f} rows/s, psycopg {best['psycopg']:,.0f} rows/s, "
            f"asyncpg/psycopg = {best['asyncpg'] / best['psycopg']:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
