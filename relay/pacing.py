"""Pacing of Quivo calls: at most QUIVO_MAX_RPS for the relay, and calls held while Quivo asks for a pause."""

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from relay.store.api import Store

# After a run of failures every call waits a little longer, so an outage is probed, not hammered.
_STREAK_BASE_S = 0.5
# ...but never longer than this: Quivo's return is noticed within seconds, and one call in 10 s is nothing to
# a Quivo that is still down.
OUTAGE_PROBE_MAX_S = 10.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Pacer:
    """One per worker: spaces calls evenly and holds them during pauses (429, outages, failure streaks)."""

    def __init__(
        self, rps: float, *, max_pause_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = 1.0 / rps
        self._max_pause_s = max_pause_s
        self._clock = clock
        self._next_slot = 0.0
        self._resume_at = 0.0
        self._failure_streak = 0

    def pause_for(self, seconds: float) -> None:
        """Hold every call for `seconds` from now (Quivo said Retry-After)."""
        self._resume_at = max(self._resume_at, self._clock() + min(seconds, self._max_pause_s))

    def note_failure(self) -> None:
        """A call failed on Quivo's side (5xx, timeout, refused): back off all calls a little more."""
        if self.paused_for() > 0:
            return  # calls that were already out when the pause began count as one failure, not many
        self._failure_streak += 1
        pause = _STREAK_BASE_S * 2 ** min(self._failure_streak - 1, 30)
        self.pause_for(min(self._max_pause_s, OUTAGE_PROBE_MAX_S, pause))

    def note_success(self) -> None:
        self._failure_streak = 0

    @property
    def failures_in_a_row(self) -> int:
        """Failures noted since the last success (calls already out when a pause began count once)."""
        return self._failure_streak

    def paused_for(self) -> float:
        """Seconds until calls may go again (0 when they may go now)."""
        return max(0.0, self._resume_at - self._clock())

    def take_turn(self, *, max_wait_s: float) -> float | None:
        """Take this call's slot: how long until it comes (the caller waits that long), or None, without
        taking one, when that would be longer than max_wait_s."""
        now = self._clock()
        slot = max(now, self._next_slot, self._resume_at)
        if slot - now > max_wait_s:
            return None
        self._next_slot = slot + self._interval
        return slot - now


class RelayBudget:
    """An account's QUIVO_MAX_RPS for the whole relay: each call reserves a slot in the store, spaced across
    workers; `account` is the tenant's name, under which its slots are kept."""

    def __init__(
        self, store: Store, rps: float, *, account: str, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self._store = store
        self._account = account
        self._spacing_s = 1.0 / rps
        self._clock = clock

    async def reserve(self, count: int = 1) -> list[datetime]:
        """Reserve the account's next `count` slots for calls to come (wait for each with wait_for).

        A slot reserved and then not used is spent: slots stay spaced, and an unused one only makes the
        relay call Quivo a little less often than it may.
        """
        now, spacing_s = self._clock(), self._spacing_s
        first = await self._store.reserve_send_slot(self._account, now=now, spacing_s=spacing_s, count=count)
        return [first + timedelta(seconds=n * spacing_s) for n in range(count)]

    async def wait_for(self, slot: datetime, *, max_wait_s: float) -> float:
        """Wait for a reserved slot: 0 once it came, else how far off it is (over max_wait_s), unwaited."""
        wait_s = (slot - self._clock()).total_seconds()
        if wait_s > max_wait_s:
            return wait_s
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        return 0.0
