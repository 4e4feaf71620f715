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

from tests.pg_server import PostgresServer

SCHEMA = """
DROP TABLE IF EXISTS bench_deliveries, bench_webhooks;
CREATE TABLE bench_webhooks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, received_at timestamptz NOT NULL,
    request_id text NOT NULL, status text NOT NULL, body bytea NOT NULL);
CREATE TABLE bench_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, webhook_id bigint NOT NULL,
    merchant_id bigint NOT NULL, rating_id bigint NOT NULL, rating text NOT NULL,
    state text NOT NULL, next_attempt_at timestamptz, created_at timestamptz NOT NULL);
CREATE INDEX bench_deliveries_due ON bench_deliveries (next_attempt_at) WHERE state = 'pending';
"""
# A webhook and its delivery in one statement, as the store writes them; a batch is pipelined by each
# driver's executemany (one round trip for the lot).
BOTH = """
WITH webhook AS (
    INSERT INTO bench_webhooks (received_at, request_id, status, body)
    VALUES ($1, $2, 'accepted', $3) RETURNING id)
INSERT INTO bench_deliveries (webhook_id, merchant_id, rating_id, rating, state, next_attempt_at, created_at)
SELECT webhook.id, 7, $4, $5, 'pending', $1, $1 FROM webhook
"""
BODY = b'{"event":"rating_submitted","rating":{"id":1,"stars":5,"comment":"' + b"x" * 600 + b'"}}'
RATING = '{"merchant_id": 7, "rating_id": 1, "stars": 5, "comment": "fine"}'
# One commit's webhooks with their deliveries, numbered n; and closing the driver's pool.
Insert = Callable[[int], Awaitable[None]]
Close = Callable[[], Awaitable[None]]


def _rows(n: int, per_commit: int) -> list[tuple[object, ...]]:
    now = datetime.now(UTC)
    return [(now, f"r{n}-{i}", BODY, n * per_commit + i, RATING) for i in range(per_commit)]


async def _asyncpg(url: str, pool_size: int, per_commit: int) -> tuple[Insert, Close]:
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)

    async def insert(n: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(BOTH, _rows(n, per_commit))

    return insert, pool.close


async def _psycopg(url: str, pool_size: int, per_commit: int) -> tuple[Insert, Close]:
    pool = psycopg_pool.AsyncConnectionPool(url, min_size=pool_size, max_size=pool_size, open=False)
    await pool.open(wait=True)
    # psycopg's placeholders are positional %s: $1 stands in three places, so it is passed three times.
    both = re.sub(r"\$\d", "%s", BOTH)

    async def insert(n: int) -> None:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(both, [(*row, row[0], row[0]) for row in _rows(n, per_commit)])

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
    parser.add_argument(
        "url", nargs="?", help="postgresql://user:password@host:port/db to use (default: a throwaway server)"
    )
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32, help="webhooks per commit in the batched run")
    args = parser.parse_args()
    if args.url is not None:
        await _compare(args.url, args.commits, args.batch)
        return
    # The tests' throwaway server: its own folders and port, removed afterwards.
    server = PostgresServer()
    try:
        server.set_up()
        await _compare(server.url(server.create_database()), args.commits, args.batch)
    finally:
        server.tear_down()


async def _compare(url: str, commits: int, batch: int) -> None:
    for label, per_commit, count in (
        ("one per commit", 1, commits),
        (f"{batch} per commit", batch, commits // 8),
    ):
        # Alternate the drivers twice so neither profits from a warmer server.
        rates: dict[str, list[float]] = {"asyncpg": [], "psycopg": []}
        for _ in range(2):
            rates["asyncpg"].append(await _measure(_asyncpg, url, count, per_commit))
            rates["psycopg"].append(await _measure(_psycopg, url, count, per_commit))
        best = {name: max(values) for name, values in rates.items()}
        print(
            f"{label}: asyncpg {best['asyncpg']:,.0f} rows/s, psycopg {best['psycopg']:,.0f} rows/s, "
            f"asyncpg/psycopg = {best['asyncpg'] / best['psycopg']:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
