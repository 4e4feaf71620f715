"""A delivery loop's outcomes recorded together: those finishing while a record runs share the next."""

import asyncio
from collections.abc import Callable
from datetime import datetime

from relay.store.api import Store
from relay.store.records import Finish, Outcome

# Store calls recording outcomes at once, as many as the store's own group commit runs: an outcome goes to
# the store at once unless both are running, and then with every other one that finished meanwhile.
RECORDS_IN_FLIGHT = 2


class OutcomeRecorder:
    """Records each outcome it is handed by Store.record_outcomes, batched with those waiting beside it."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._waiting: list[tuple[Finish, asyncio.Future[str]]] = []
        self._records: set[asyncio.Task[None]] = set()
        # A record started but not yet running takes whatever waits when it runs: no second one is needed.
        self._starting = False

    async def record(self, outcome: Outcome, *, leased_until: datetime) -> str:
        """Store.record_outcome's answer for this outcome, recorded in one store call with its neighbours."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((Finish(outcome, leased_until), done))
        if not self._starting and len(self._records) < RECORDS_IN_FLIGHT:
            self._starting = True
            task = asyncio.create_task(self._run(), name="relay-outcomes")
            self._records.add(task)
            task.add_done_callback(self._records.discard)
        return await done

    async def wait_recorded(self) -> None:
        """Until every outcome handed over is recorded (or failed): its caller may have stopped listening."""
        while self._records:
            await asyncio.wait(set(self._records))

    async def _run(self) -> None:
        self._starting = False
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                finishes = [finish for finish, _ in batch]
                answers = await self._store.record_outcomes(finishes, now=self._clock())
            except Exception as error:
                # The store failed the whole call (one commit): each delivery's pass hears it, as its own.
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            for (_, done), answer in zip(batch, answers, strict=True):
                if not done.done():
                    done.set_result(answer)
