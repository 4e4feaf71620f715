"""Group commit: concurrent writes of one process share a transaction, and so one WAL flush."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import asyncpg
import structlog

from relay.store.api import StoreUnavailable
from relay.store.batching import MAX_BATCH, Deadlines, Waiting, fail, settle, waiting
from relay.store.postgres.connection import DRIVER_FAILURES, Conn, is_transient, unavailable

A = TypeVar("A")
R = TypeVar("R")
# Runs a batch atomically in one round trip (one statement, or a pipelined executemany or fetchmany, is one
# implicit transaction: all of it commits or none): one result per item, in order.
Batch = Callable[[Conn, list[A]], Awaitable[list[R]]]

log = structlog.get_logger(__name__)

# Batches in flight at once: the next one may be sent while the last one's commit waits for its flush.
COMMITTERS = 2


class GroupCommit(Generic[A, R]):
    """A queue and loops: each turn takes every waiting item and runs them in one transaction."""

    def __init__(
        self, pool: asyncpg.Pool, run: Batch[A, R], *, timeout_s: float, overlap_at: int = 1
    ) -> None:
        self._pool = pool
        self._run = run
        self._timeout_s = timeout_s
        # A batch sent while another is in flight commits only after that one's flush, and then waits for a
        # flush of its own: it gains its own running time only. Below `overlap_at` items, it waits instead.
        self._overlap_at = overlap_at
        self._in_flight = 0
        self._changed = asyncio.Event()  # an item queued, or a batch done
        self._deadlines = Deadlines(timeout_s)
        self._queue: asyncio.Queue[Waiting[A, R]] = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._loop(), name=f"relay-pg-commits-{n}") for n in range(COMMITTERS)
        ]
        self.commits = 0

    async def write(self, item: A) -> R:
        """Run `item` in a transaction shared with other concurrent ones; return once committed."""
        if not self._tasks:
            raise StoreUnavailable("database is closed")
        entry: Waiting[A, R] = waiting(item)
        self._queue.put_nowait(entry)
        self._changed.set()
        return await self._deadlines.committed(entry)

    async def close(self) -> None:
        """Finish the queued writes, then stop."""
        if not self._tasks:
            return
        await self._queue.join()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._take_waiting(batch)
            while self._in_flight and len(batch) < self._overlap_at:
                self._changed.clear()
                await self._changed.wait()
                self._take_waiting(batch)
            self._in_flight += 1
            try:
                await self._commit(batch)
            finally:
                self._in_flight -= 1
                self._changed.set()
                for _ in batch:
                    self._queue.task_done()

    def _take_waiting(self, batch: list[Waiting[A, R]]) -> None:
        while len(batch) < MAX_BATCH and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _commit(self, batch: list[Waiting[A, R]]) -> None:
        try:
            # Bounded: a server that stops answering fails the batch instead of holding the loop.
            async with asyncio.timeout(self._timeout_s):
                # No BEGIN and COMMIT of its own: each is a round trip, and the batch is atomic without.
                async with self._pool.acquire() as conn:
                    results = await self._run(conn, [entry.item for entry in batch])
        except Exception as error:
            # The server failing fails every item alike; an item's own fault must not fail its neighbours.
            if len(batch) == 1 or is_transient(error):
                fail(batch, _as_store_error(error))
                return
            for entry in batch:
                await self._commit([entry])
            return
        self.commits += 1
        settle(batch, results)


def _as_store_error(error: Exception) -> Exception:
    if not isinstance(error, DRIVER_FAILURES):
        return error
    failure = unavailable(error)
    log.error("store.commit_failed", error=str(failure))
    return failure
