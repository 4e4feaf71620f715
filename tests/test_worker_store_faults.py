"""A delivery whose outcome cannot be written (a full disk) is a store fault, logged as one, and retried."""

import asyncio
import random
from typing import Any

import pytest
from structlog.testing import capture_logs

from relay.app import create_app
from relay.keys import STORE
from relay.sim.app import create_sim_app
from relay.sim.state import SimState
from relay.store.api import StoreUnavailable
from tests.conftest import AUTH, BACKENDS
from tests.forwarding import Quivo, all_deliveries, forwarding_settings, rating_webhook

# The fault is the store's own answer (StoreUnavailable), whichever backend gave it.
pytestmark = pytest.mark.backends(*BACKENDS)


async def test_an_outcome_the_full_disk_refused_is_logged_as_a_store_fault_not_a_bug(
    aiohttp_client, aiohttp_server, make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = SimState(rng=random.Random(5))
    quivo = Quivo(state, str((await aiohttp_server(create_sim_app(state))).make_url("")).rstrip("/"))

    async def disk_full(finishes: Any, *, now: Any) -> list[str]:
        raise StoreUnavailable("database or disk is full")

    relay = await aiohttp_client(create_app(make_settings(**forwarding_settings(quivo)), run_worker=True))
    monkeypatch.setattr(relay.app[STORE], "record_outcomes", disk_full)
    with capture_logs() as logs:
        answer = await relay.post("/webhooks/bringg", data=rating_webhook(71, "INQ-710"), headers=AUTH)
        assert answer.status == 202
        deadline = asyncio.get_running_loop().time() + 15
        while not any(line["event"] == "worker.store_unavailable" for line in logs):
            assert asyncio.get_running_loop().time() < deadline, "no worker.store_unavailable within 15 s"
            await asyncio.sleep(0.02)

    fault = next(line for line in logs if line["event"] == "worker.store_unavailable")
    assert fault["delivery_id"] == (await answer.json())["delivery_id"]
    assert "disk is full" in fault["error"]
    assert not [line for line in logs if line["event"] == "worker.delivery_crashed"]
    # The delivery keeps its lease (the send went out, unconfirmed): it is not lost, only not yet recorded.
    assert [row.state for row in await all_deliveries(relay.app[STORE])] == ["sending"]
