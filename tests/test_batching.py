"""Group commit's waiting side: each caller waits its own timeout, under one timer for them all."""

import asyncio

import pytest

from relay.store.api import StoreUnavailable
from relay.store.batching import Deadlines, Waiting, fail, settle, waiting


async def caller(deadlines: Deadlines, entry: Waiting[str, str]) -> str:
    """A caller of a store's write: it awaits what `committed` gives it."""
    return await deadlines.committed(entry)


async def test_each_caller_hears_store_unavailable_its_own_timeout_after_it_began_waiting():
    deadlines = Deadlines(0.2)
    first_entry = waiting("first")
    first = asyncio.create_task(caller(deadlines, first_entry))
    await asyncio.sleep(0.1)
    second_entry = waiting("second")
    second = asyncio.create_task(caller(deadlines, second_entry))

    with pytest.raises(StoreUnavailable, match=r"no commit within 0\.2s"):
        await first
    # The second began 0.1 s later: it is still waiting when the first gives up.
    assert not second.done()
    with pytest.raises(StoreUnavailable, match=r"no commit within 0\.2s"):
        await second
    # The batch that commits late finds its callers gone and leaves them.
    settle([first_entry, second_entry], ["late", "late"])


async def test_a_caller_whose_batch_commits_in_time_hears_its_result_and_later_ones_still_time_out():
    deadlines = Deadlines(0.2)
    entries = [waiting(str(n)) for n in range(3)]
    callers = [asyncio.create_task(caller(deadlines, entry)) for entry in entries]
    await asyncio.sleep(0)
    settle(entries[:2], ["one", "two"])

    assert await callers[0] == "one"
    assert await callers[1] == "two"
    with pytest.raises(StoreUnavailable):
        await callers[2]


async def test_a_failed_batch_and_a_cancelled_caller_leave_the_others_waiting():
    deadlines = Deadlines(5)
    failing, cancelled, staying = waiting("a"), waiting("b"), waiting("c")
    callers = [asyncio.create_task(caller(deadlines, entry)) for entry in (failing, cancelled, staying)]
    await asyncio.sleep(0)
    fail([failing], StoreUnavailable("disk full"))
    callers[1].cancel()

    with pytest.raises(StoreUnavailable, match="disk full"):
        await callers[0]
    with pytest.raises(asyncio.CancelledError):
        await callers[1]
    settle([staying], ["kept"])
    assert await callers[2] == "kept"


async def test_a_store_used_on_a_second_loop_times_its_callers_there():
    deadlines = Deadlines(0.05)

    async def one_caller() -> None:
        with pytest.raises(StoreUnavailable):
            await deadlines.committed(waiting("x"))

    await one_caller()
    # A second loop, as when a command opens the store again in its own asyncio.run.
    await asyncio.to_thread(asyncio.run, one_caller())
