"""A result shared by every caller while it is fresh: one computation at a time, however many ask."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# Anyone can call /readyz and /metrics: a flood of calls costs one read a second, and no answer is older.
FRESH_FOR_S = 1.0


class Fresh(Generic[T]):
    """The last result of a read, given to every caller who asks less than FRESH_FOR_S after it began.

    Callers who ask while a read runs wait for it rather than start their own, so one runs at a time.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last: tuple[float, T] | None = None

    async def get(self, read: Callable[[], Awaitable[T]]) -> T:
        """The last result if it began less than FRESH_FOR_S before this call, else a new one of `read`."""
        asked = self._clock()
        if (last := self._fresh(asked)) is not None:
            return last[1]
        async with self._lock:
            # Whoever held the lock may have just read on this caller's behalf.
            if (last := self._fresh(asked)) is not None:
                return last[1]
            began = self._clock()
            result = await read()
            self._last = (began, result)
            return result

    def _fresh(self, asked: float) -> tuple[float, T] | None:
        last = self._last
        return last if last is not None and last[0] > asked - FRESH_FOR_S else None
