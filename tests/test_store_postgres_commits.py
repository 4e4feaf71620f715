"""Group commit on PostgreSQL: when a second batch goes while one is in flight, and when it waits."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

import asyncpg

from relay.store.postgres.commits import GroupCommit
from relay.store.postgres.connection import Conn


class Connections:
    """Stands in for the pool: a connection at once, always (the batches below never touch it)."""

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        yield None


class HeldBatches:
    """Runs batches as the store would, holding the first one in flight until `release`."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.running = [asyncio.Event(), asyncio.Event()]  # the first batch, the second
        self.release = asyncio.Event()

    async def run(self, conn: Conn, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.running[min(len(self.batches), 2) - 1].set()
        if len(self.batches) == 1:
            await self.release.wait()
        return [item * 10 for item in items]


def group_commit(batches: HeldBatches, *, overlap_at: int) -> GroupCommit[int, int]:
    pool = cast(asyncpg.Pool, Connections())
    return GroupCommit(pool, batches.run, timeout_s=5, overlap_at=overlap_at)


async def test_a_few_items_wait_for_the_batch_in_flight_and_go_together_after_it() -> None:
    batches = HeldBatches()
    commits = group_commit(batches, overlap_at=4)
    try:
        first = asyncio.create_task(commits.write(1))
        await batches.running[0].wait()
        rest = [asyncio.create_task(commits.write(n)) for n in (2, 3, 4)]
        for _ in range(20):
            await asyncio.sleep(0)  # every task runs as far as it can: no second batch starts
        assert batches.batches == [[1]]
        batches.release.set()
        assert await asyncio.gather(first, *rest) == [10, 20, 30, 40]
        assert batches.batches == [[1], [2, 3, 4]]
    finally:
        await commits.close()


async def test_enough_items_waiting_go_while_the_batch_in_flight_commits() -> None:
    batches = HeldBatches()
    commits = group_commit(batches, overlap_at=4)
    try:
        first = asyncio.create_task(commits.write(1))
        await batches.running[0].wait()
        rest = [asyncio.create_task(commits.write(n)) for n in (2, 3, 4, 5)]
        await batches.running[1].wait()
        assert not first.done()
        assert await asyncio.gather(*rest) == [20, 30, 40, 50]
        batches.release.set()
        assert await first == 10
        assert batches.batches == [[1], [2, 3, 4, 5]]
    finally:
        await commits.close()
