"""PostgreSQL connections of a serving relay: all opened at start, none opened while webhooks arrive."""

import asyncio
import time
from pathlib import Path

import aiohttp
import psycopg

from tests.chaos.harness import relay_env
from tests.conftest import AUTH
from tests.forwarding import rating_webhook
from tests.pg_server import PostgresServer
from tests.processes import free_port, relay_process, wait_until_ready

POOL_SIZE = 3


def relay_backends(server: PostgresServer, database: str) -> set[tuple[int, float]]:
    """(pid, start) of each server process serving the relay's pool on `database`."""
    with psycopg.connect(server.url(database)) as conn:
        rows = conn.execute(
            "SELECT pid, extract(epoch FROM backend_start)::float8 FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = 'relay'",
            (database,),
        ).fetchall()
    return {(pid, start) for pid, start in rows}


def wait_for_backends(server: PostgresServer, database: str, count: int) -> set[tuple[int, float]]:
    deadline = time.monotonic() + 10
    while len(found := relay_backends(server, database)) != count:
        assert time.monotonic() < deadline, f"{len(found)} of the pool's {count} connections"
        time.sleep(0.05)
    return found


async def post_at_once(port: int, first: int, count: int) -> list[int]:
    url = f"http://127.0.0.1:{port}/webhooks/bringg"
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def one(rating_id: int) -> int:
            async with session.post(url, data=rating_webhook(rating_id, f"INQ-{rating_id}")) as answer:
                return answer.status

        return await asyncio.gather(*(one(n) for n in range(first, first + count)))


def test_the_pool_is_opened_whole_at_start_and_serving_opens_no_connection(
    tmp_path: Path, postgres_server: PostgresServer, postgres_template: str
) -> None:
    database = postgres_server.create_database(template=postgres_template)
    port = free_port()
    env = relay_env(
        tmp_path,
        "http://127.0.0.1:9",
        port,
        DATABASE_URL=postgres_server.url(database),
        RELAY_DB_POOL_SIZE=str(POOL_SIZE),
    )
    try:
        log = tmp_path / "serve.log"
        with relay_process("serve", "--no-worker", env=env, cwd=tmp_path, log_path=log) as relay:
            wait_until_ready(f"http://127.0.0.1:{port}/readyz?scope=intake", relay)
            opened = wait_for_backends(postgres_server, database, POOL_SIZE)
            # Bursts that keep both group-commit batches in flight, and readiness checks beside them.
            for burst in range(3):
                assert set(asyncio.run(post_at_once(port, 1000 * burst + 1, 200))) == {202}
            assert relay_backends(postgres_server, database) == opened
    finally:
        postgres_server.drop_database(database)
