"""What composes the store's verbs the same way on every backend: bulk replay, link imports, pruning."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from relay.linkfile import Link, LinkCheck, LinkFileProblem, parse_links_csv, unchecked
from relay.store.api import Store
from relay.store.filters import ReplayFilter
from relay.store.records import BulkReplay, PruneResult, SkippedReplay

_NOTHING = PruneResult(0, 0, 0)


async def replay_matching(
    store: Store,
    where: ReplayFilter,
    *,
    now: datetime,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> BulkReplay:
    """Replay (as `replay_delivery` does) every delivery `where` matches; how many, and those it left.

    A delivery whose rating has a newer version is left (replaying it would undo the newer one), as is
    one the worker moved on between the listing and its batch's commit; each is reported with why.
    One commit per `batch_size` matches, so webhooks never wait long behind a large replay. `progress`
    hears the number replayed so far after each commit.
    """
    replayed = 0
    skipped: list[SkippedReplay] = []
    after: int | None = None
    while page := await store.list_deliveries(where, after=after, limit=batch_size):
        ids = [delivery.id for delivery in page]
        batch = await store.replay_batch(ids, now=now)
        replayed += len(batch.replayed)
        skipped += batch.skipped
        after = ids[-1]
        if progress is not None:
            progress(replayed)
    return BulkReplay(replayed, skipped)


@dataclass(frozen=True)
class LinkImport:
    """What importing a links file did: links saved, deliveries woken, and the rows that were not links."""

    saved: int
    woken: int
    problems: list[LinkFileProblem]


async def import_links_file(
    store: Store,
    path: Path,
    *,
    now: datetime,
    check: LinkCheck = unchecked,
    batch_size: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> LinkImport:
    """Save the good rows of a links CSV file in batches of `batch_size`, one commit each.

    `progress` hears the number of links saved so far after each batch. Bad rows are reported, never
    saved, and never stop the good ones; so are rows `check` refuses. Saving is idempotent, so an import
    cut short can be run again.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # Off the event loop: a large file takes a while to read and parse, and webhooks keep coming.
    links, problems = await asyncio.to_thread(_read_links_file, path, check)
    saved = woken = 0
    for start in range(0, len(links), batch_size):
        result = await store.save_links(links[start : start + batch_size], now=now)
        saved += result.saved
        woken += len(result.woken)
        if progress is not None:
            progress(saved)
    return LinkImport(saved=saved, woken=woken, problems=problems)


def _read_links_file(path: Path, check: LinkCheck) -> tuple[list[Link], list[LinkFileProblem]]:
    # surrogateescape: a row with bytes that are not UTF-8 becomes that row's problem, not the file's.
    return parse_links_csv(path.read_bytes().decode("utf-8", errors="surrogateescape"), check)


async def prune(
    store: Store,
    *,
    older_than: datetime,
    batch_size: int = 500,
    pause_s: float = 0.0,
    progress: Callable[[PruneResult], None] | None = None,
) -> PruneResult:
    """Prune batch after batch until one deletes nothing; return the totals.

    Each batch is its own short commit, so webhooks being stored wait for one batch at most.
    `progress` hears the running totals after each batch that deleted something.
    """
    total = _NOTHING
    while True:
        batch = await store.prune_batch(older_than=older_than, batch_size=batch_size)
        if batch == _NOTHING:
            return total
        total += batch
        if progress is not None:
            progress(total)
        await asyncio.sleep(pause_s)
