"""A delivery loop's outcomes recorded together: those finishing while a record runs share the next."""

import asyncio
from collections.abc import Callable
from datetime import datetime

from relay.store.api import Store
from relay.store.batching import Waiting, fail, settle, waiting
from relay.store.records import Finish, Outcome

# Store calls recording outcomes at once, as many as the store's own group commit runs: an outcome goes to
# the store at once unless both are running, and then with every other one that finished meanwhile.
RECORDS_IN_FLIGHT = 2

# An outcome handed over, and the future its delivery's pass awaits.
_Waiting = Waiting[Finish, str]


class OutcomeRecorder:
    """Records each outcome it is handed by Store.record_outcomes, batched with those waiting beside it."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._waiting: list[_Waiting] = []
        self._records: set[asyncio.Task[None]] = set()
        # A record started but not yet running takes whatever waits when it runs: no second one is needed.
        self._starting = False

    async def record(self, outcome: Outcome, *, leased_until: datetime) -> str:
        """Store.record_outcome's answer for this outcome, recorded in one store call with its neighbours."""
        entry: _Waiting = waiting(Finish(outcome, leased_until))
        self._waiting.append(entry)
        if not self._starting and len(self._records) < RECORDS_IN_FLIGHT:
            self._starting = True
            task = asyncio.create_task(self._run(), name="relay-outcomes")
            self._records.add(task)
            task.add_done_callback(self._records.discard)
        return await entry.done

    async def wait_recorded(self) -> None:
        """Until every outcome handed over is recorded (or failed): its caller may have stopped listening."""
        while self._records:
            await asyncio.wait(set(self._records))

    async def _run(self) -> None:
        self._starting = False
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._record(batch)
            except Exception:
                if len(batch) == 1:
                    continue  # its caller heard it
                # One outcome the store refuses must not fail its neighbours: each goes again alone, all at
                # once (a store that is down fails them together again, within its timeout).
                await asyncio.gather(*(self._record([one]) for one in batch), return_exceptions=True)

    async def _record(self, batch: list[_Waiting]) -> None:
        """One store call for the batch; each caller hears its answer, or the call's failure when alone."""
        try:
            answers = await self._store.record_outcomes([entry.item for entry in batch], now=self._clock())
        except Exception as error:
            if len(batch) == 1:
                fail(batch, error)
            raise
        settle(batch, answers)
