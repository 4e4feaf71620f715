"""How many deliveries a worker keeps claimed: what it finishes in a tenth of a second, within bounds."""

import time
from collections.abc import Callable

# Deliveries claimed per Quivo call slot, at least: the spare ones keep every slot busy while the next claim
# and its turns (two store round trips, each behind a commit) come back; with two, the slots stood idle 19%
# of a drain waiting for them.
LEAST_PER_SLOT = 3
# At most: a worker holds no more than this from the others (a claimed delivery waits for this one's slots).
MOST_PER_SLOT = 8
# Claimed deliveries last this long at the rate the worker finishes them. A claim and its turns took 10-25 ms
# in a drain, each behind the store's commits of outcomes: three slots' worth, 192 at 64 slots, ran out
# meanwhile and the slots stood idle (all 64 free while a claim was out, in a drain of 5,300/s).
HORIZON_S = 0.1
# The rate is measured over windows at least this long: a claim every few milliseconds measures none.
WINDOW_S = 0.05


class ClaimAhead:
    """The claim cap of a worker with `slots` call slots: LEAST_PER_SLOT of them while it finishes few
    deliveries, growing with the rate it finishes them to MOST_PER_SLOT."""

    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._least = LEAST_PER_SLOT * slots
        self._most = MOST_PER_SLOT * slots
        self._clock = clock
        self._finished = 0
        self._window_start = clock()
        self._counted = 0
        # Deliveries finished per second, the windows measured so far weighed half each time.
        self._rate = 0.0
        self.cap = self._least

    def finished(self) -> None:
        """One delivery's pass ended."""
        self._finished += 1

    def update(self) -> int:
        """The cap for the claim about to be made."""
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed >= WINDOW_S:
            measured = (self._finished - self._counted) / elapsed
            self._rate = (self._rate + measured) / 2
            self._window_start, self._counted = now, self._finished
            self.cap = max(self._least, min(self._most, round(self._rate * HORIZON_S)))
        return self.cap
