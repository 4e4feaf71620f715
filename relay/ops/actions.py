"""What operators do to deliveries (replay one, replay all a filter matches, cancel), from any front."""

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog

from relay.store.api import Store
from relay.store.filters import ReplayFilter
from relay.store.operations import replay_matching
from relay.store.records import BulkReplay, StateChange

# The admin API's logger: a replay is the same `admin.*` line whether the API, the console or the CLI asked.
log = structlog.get_logger("relay.admin")


async def replay_delivery(
    store: Store, delivery_id: int, *, now: datetime, new_delivery: asyncio.Event | None = None
) -> StateChange:
    """Send a dead or unmatched delivery back to pending; set `new_delivery` to wake this process's worker."""
    change = await store.replay_delivery(delivery_id, now=now)
    if change.moved:
        if new_delivery is not None:
            new_delivery.set()
        log.info("admin.delivery_replayed", delivery_id=delivery_id, was=change.before)
    return change


async def replay_deliveries(
    store: Store,
    where: ReplayFilter | None,
    *,
    now: datetime,
    new_delivery: asyncio.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> BulkReplay:
    """Replay every delivery `where` matches (None: a filter nothing can match), as `replay_matching` does."""
    done = (
        BulkReplay(0, [])
        if where is None
        else await replay_matching(store, where, now=now, progress=progress)
    )
    if done.replayed and new_delivery is not None:
        new_delivery.set()
    log.info(
        "admin.deliveries_replayed",
        replayed=done.replayed,
        skipped=len(done.skipped),
        filter=None if where is None else where.model_dump(mode="json", exclude_none=True),
    )
    return done


async def cancel_delivery(store: Store, delivery_id: int, *, now: datetime) -> StateChange:
    """Stop a delivery neither delivered nor in flight: it becomes dead, 'cancelled by operator'."""
    change = await store.cancel_delivery(delivery_id, now=now)
    if change.moved:
        log.info("admin.delivery_cancelled", delivery_id=delivery_id, was=change.before)
    return change
