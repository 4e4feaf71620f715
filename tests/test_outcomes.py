"""The worker's outcomes recorded together: one store call for those finishing at once, each its answer."""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from relay.outcomes import OutcomeRecorder
from relay.store.api import Store, StoreUnavailable
from relay.store.records import Finish, Outcome

NOW = datetime(2026, 12, 2, tzinfo=UTC)
REFUSED = 13


class Refusing:
    """A store whose commit fails whenever it holds delivery REFUSED's outcome (a fault of that one)."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def record_outcomes(self, finishes: Sequence[Finish], *, now: datetime) -> list[str]:
        ids = [finish.outcome.delivery_id for finish in finishes]
        self.calls.append(ids)
        await asyncio.sleep(0)
        if REFUSED in ids:
            raise StoreUnavailable("value too long for type character varying(300)")
        return [finish.outcome.state for finish in finishes]


async def test_an_outcome_the_store_refuses_does_not_fail_the_others_recorded_with_it() -> None:
    store = Refusing()
    recorder = OutcomeRecorder(cast(Store, store), lambda: NOW)

    answers = await asyncio.gather(
        *(recorder.record(Outcome(n, "delivered", 1, False), leased_until=NOW) for n in (11, 12, REFUSED)),
        return_exceptions=True,
    )

    assert answers[:2] == ["delivered", "delivered"]
    assert isinstance(answers[2], StoreUnavailable)
    # Together first, in one call; then each alone once that call failed.
    assert store.calls[0] == [11, 12, REFUSED]
    assert sorted(store.calls[1:]) == [[11], [12], [REFUSED]]


async def test_a_store_that_is_down_fails_every_outcome_handed_over() -> None:
    store = Refusing()
    recorder = OutcomeRecorder(cast(Store, store), lambda: NOW)

    answers = await asyncio.gather(
        *(recorder.record(Outcome(REFUSED, "delivered", 1, False), leased_until=NOW) for _ in range(3)),
        return_exceptions=True,
    )

    assert [type(answer) for answer in answers] == [StoreUnavailable] * 3
