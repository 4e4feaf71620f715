"""Group commit's waiting side, shared by both backends: callers queue items, one batch commits them."""

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from relay.store.api import StoreUnavailable

A = TypeVar("A")
R = TypeVar("R")

# Enough to share one flush among a burst of webhooks, small enough to keep each transaction short.
MAX_BATCH = 256


# Not frozen: one is made for every write, and a frozen dataclass costs several times as much to make.
@dataclass(slots=True)
class Waiting(Generic[A, R]):
    """An item queued for the next batch, and the future its caller awaits (created on the caller's loop)."""

    item: A
    done: asyncio.Future[R]


def waiting(item: A) -> Waiting[A, Any]:
    """`item` with a new future of the running loop."""
    return Waiting(item, asyncio.get_running_loop().create_future())


class Deadlines:
    """How long callers wait for their batch: StoreUnavailable past `timeout_s` (the batch goes on).

    One timer for every caller of a loop, not one each: callers start waiting in order and all wait as long,
    so their deadlines come in order too, and the timer is set for the earliest one still waiting.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def committed(self, entry: Waiting[A, R]) -> asyncio.Future[R]:
        """What to await for the item's result once its batch committed; StoreUnavailable past the timeout.

        The entry's own future, not a coroutine around it: one object fewer for every write.
        """
        # A caller cancelled cancels its own future only: its batch, which others share, goes on, and the
        # outcome finds that future done and leaves it.
        done = entry.done
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Another loop (a store reopened by a test or a command): the last one's callers are gone.
            self._loop, self._waiting, self._timer = loop, deque(), None
        ahead = self._waiting
        # Batches commit in the order they queued: the callers heard from leave from the front.
        while ahead and ahead[0][1].done():
            ahead.popleft()
        deadline = loop.time() + self.timeout_s
        ahead.append((deadline, done))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        return done

    def _expire(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        ahead = self._waiting
        while ahead and (ahead[0][0] <= now or ahead[0][1].done()):
            _, done = ahead.popleft()
            if not done.done():
                done.set_exception(StoreUnavailable(f"no commit within {self.timeout_s:g}s"))
        if ahead:
            self._timer = self._loop.call_at(ahead[0][0], self._expire)


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
