"""Moving house: every row of a stopped relay's store into an empty one, on any two backends, then counted."""

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta

from relay.store.api import DatabaseUnusable, Store
from relay.store.records import COPIED_TABLES

# Rows a batch carries, one export read and one import commit each: 100 webhook bodies of at most
# RELAY_MAX_BODY_BYTES (1 MiB by default) stay a bounded amount of memory.
BATCH_ROWS = 100

# Told after every committed batch: the table, its rows copied so far, and its rows in the source.
Progress = Callable[[str, int, int], None]


class CopyRefused(Exception):
    """The copy cannot start or would lose or mix data; nothing was copied. The message says why."""


@dataclass(frozen=True)
class CopyCheck:
    """Each copied table's rows in the source and in the target, counted once the copy was done."""

    source: dict[str, int]
    target: dict[str, int]

    @property
    def differing(self) -> list[str]:
        """The tables whose counts differ, in copy order; empty: the target holds every row."""
        return [table for table in COPIED_TABLES if self.source[table] != self.target[table]]


async def copy_store(
    source: Store, target: Store, *, now: datetime, silent_after_s: float, progress: Progress
) -> CopyCheck:
    """Open both stores (migrating them), copy every row of COPIED_TABLES parents first, count, close both.

    Refused before anything is copied when a relay delivers from either store (a running one would change
    the source under the copy, or deliver from a half-copied target), when the source holds nothing (a
    mistyped SQLite path makes a new, empty file), or when the target holds any row.
    """
    opened: list[Store] = []
    try:
        for role, store in (("source", source), ("target", target)):
            try:
                await store.open()
            except DatabaseUnusable as error:
                raise CopyRefused(f"cannot use the {role}: {error}") from None
            opened.append(store)
        with ExitStack() as slots:
            for role, store in (("source", source), ("target", target)):
                await _keep_workers_off(store, role, slots, now=now, silent_after_s=silent_after_s)
            await _refuse_unfit(source, target)
            return await _copy_rows(source, target, progress)
    finally:
        for store in opened:
            await store.close()


async def _keep_workers_off(
    store: Store, role: str, slots: ExitStack, *, now: datetime, silent_after_s: float
) -> None:
    """Refuse a store a relay worker delivers from; where only one worker may run, hold its place."""
    if store.single_worker:
        # The slot is exact where it exists (a lock the kernel drops when its holder dies, even killed),
        # and held for the copy's length no relay can start delivering from either store meanwhile.
        try:
            slots.enter_context(store.worker_slot())
        except DatabaseUnusable as error:
            raise CopyRefused(f"stop the relay first: the {role} is in use ({error})") from None
    # Elsewhere a worker is known by its beats: one that stopped or died counts until it has been silent long.
    elif workers := await store.live_workers(since=now - timedelta(seconds=silent_after_s)):
        last = max(worker.beat_at for worker in workers)
        running = ", ".join(f"pid {worker.pid} on {worker.host}" for worker in workers)
        raise CopyRefused(
            f"stop the relay first: a relay worker beat on the {role} {(now - last).total_seconds():.0f} s "
            f"ago ({running}); one that has stopped counts as running until silent for {silent_after_s:.0f} s"
        )


async def _refuse_unfit(source: Store, target: Store) -> None:
    if not any((await source.row_counts()).values()):
        raise CopyRefused("the source holds no rows: nothing to copy (is SOURCE_URL right?)")
    held = {table: count for table, count in (await target.row_counts()).items() if count}
    if held:
        tables = ", ".join(f"{table} ({count} rows)" for table, count in held.items())
        raise CopyRefused(f"the target holds data: {tables}; copy only into an empty database")


async def _copy_rows(source: Store, target: Store, progress: Progress) -> CopyCheck:
    totals = await source.row_counts()
    for table in COPIED_TABLES:
        copied = 0
        progress(table, copied, totals[table])
        async for rows in source.export_rows(table, batch_size=BATCH_ROWS):
            await target.import_rows(table, rows)
            copied += len(rows)
            progress(table, copied, totals[table])
    await target.refresh_statistics()
    # Counted again, not taken from the start: a source that changed meanwhile shows as a difference.
    return CopyCheck(source=await source.row_counts(), target=await target.row_counts())
