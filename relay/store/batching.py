"""Group commit's waiting side, shared by both backends: callers queue items, one batch commits them."""

import asyncio
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from relay.store.api import StoreUnavailable

A = TypeVar("A")
R = TypeVar("R")

# Enough to share one flush among a burst of webhooks, small enough to keep each transaction short.
MAX_BATCH = 256


@dataclass(frozen=True)
class Waiting(Generic[A, R]):
    """An item queued for the next batch, and the future its caller awaits (created on the caller's loop)."""

    item: A
    done: asyncio.Future[R]


def waiting(item: A) -> Waiting[A, Any]:
    """`item` with a new future of the running loop."""
    return Waiting(item, asyncio.get_running_loop().create_future())


async def committed(entry: Waiting[A, R], timeout_s: float) -> R:
    """The item's result once its batch committed; StoreUnavailable past `timeout_s` (the batch goes on)."""
    try:
        # A caller that gives up cancels its own future only: its batch, which others share, goes on, and
        # the outcome finds that future done and leaves it.
        async with asyncio.timeout(timeout_s):
            return await entry.done
    except TimeoutError:
        raise StoreUnavailable(f"no commit within {timeout_s:g}s") from None


def settle(batch: list[Waiting[A, R]], results: list[R]) -> None:
    """Each caller hears its own result (on the loop's thread)."""
    for entry, result in zip(batch, results, strict=True):
        if not entry.done.done():
            entry.done.set_result(result)


def fail(batch: list[Waiting[A, R]], error: BaseException) -> None:
    """Every caller of the batch hears the same failure (on the loop's thread)."""
    for entry in batch:
        if not entry.done.done():
            entry.done.set_exception(error)
