"""A commit PostgreSQL cuts off part way is the store being unavailable, whatever the driver calls it."""

import asyncpg
import pytest

from relay.store.api import StoreUnavailable
from relay.store.postgres.commits import GroupCommit
from relay.store.postgres.connection import Conn
from tests.pg_server import PostgresServer


@pytest.mark.parametrize(
    "cut",
    [
        # What asyncpg raises when the server goes away in the middle of a pipelined batch.
        asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ],
    ids=["internal-client-error", "connection-closed"],
)
async def test_a_batch_cut_off_by_the_server_fails_as_store_unavailable(
    postgres_server: PostgresServer, postgres_database: str, cut: Exception
) -> None:
    async def cut_off(conn: Conn, items: list[int]) -> list[int]:
        raise cut

    pool = await asyncpg.create_pool(postgres_server.url(postgres_database), min_size=1, max_size=2)
    commits: GroupCommit[int, int] = GroupCommit(pool, cut_off, timeout_s=5.0)
    try:
        # The intake answers StoreUnavailable with 503 and Retry-After; anything else would be a 500.
        with pytest.raises(StoreUnavailable):
            await commits.write(1)
    finally:
        await commits.close()
        await pool.close()
