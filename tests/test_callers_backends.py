"""The relay's parts through HTTP on each backend: a rating in, delivered once, and every report agrees."""

import asyncio
import json
import random
import re
from typing import Any

from relay.app import create_app
from relay.sim.app import create_sim_app
from relay.sim.state import SimState
from tests.conftest import AUTH
from tests.forwarding import Quivo, forwarding_settings, rating_webhook
from tests.processes import run_relay
from tests.test_admin import ADMIN, TOKEN

INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


async def test_a_rating_is_delivered_once_and_reported_alike_on_each_backend(
    aiohttp_client, aiohttp_server, make_settings, store_url, tmp_path
):
    state = SimState(rng=random.Random(3))
    quivo = Quivo(state, str((await aiohttp_server(create_sim_app(state))).make_url("")).rstrip("/"))
    settings = make_settings(database_url=store_url, relay_admin_token=TOKEN, **forwarding_settings(quivo))
    relay = await aiohttp_client(create_app(settings, run_worker=True))

    accepted = await (
        await relay.post("/webhooks/bringg", data=rating_webhook(5, "INQ-50"), headers=AUTH)
    ).json()
    detail = await _until(relay, f"/admin/deliveries/{accepted['delivery_id']}", "delivered")
    ready = await _ready(relay)
    stats = await (await relay.get("/admin/stats", headers=ADMIN)).json()
    scraped = await (await relay.get("/metrics")).text()
    # While the worker runs: a clean stop takes it out of the registry.
    status = await asyncio.to_thread(
        run_relay, "status", "--json", env={"DATABASE_URL": store_url}, cwd=tmp_path
    )
    await relay.close()  # before the test's database is dropped

    assert [rating.inquiry_id for rating in state.ratings] == [50]
    assert all(INSTANT.fullmatch(detail["delivery"][name]) for name in ("created_at", "delivered_at"))
    assert INSTANT.fullmatch(detail["attempts"][0]["started_at"])
    assert ready == (200, {"status": "ready"})
    assert stats["deliveries"]["delivered"] == 1 and stats["delivered"]["last_hour"] == 1
    assert re.search(r"^relay_worker_heartbeat_age_seconds \d", scraped, re.MULTILINE)
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["deliveries"] == stats["deliveries"]
    assert INSTANT.fullmatch(document["worker"]["last_heartbeat"]) and document["worker"]["paused"] is None
    assert re.search(r'^relay_deliveries\{state="delivered"\} 1\.0$', scraped, re.MULTILINE)


async def _until(relay: Any, path: str, state: str, within_s: float = 15) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        answer: dict[str, Any] = await (await relay.get(path, headers=ADMIN)).json()
        if answer["delivery"]["state"] == state:
            return answer
        assert asyncio.get_running_loop().time() < deadline, answer["delivery"]
        await asyncio.sleep(0.02)


async def _ready(relay: Any, within_s: float = 15) -> tuple[int, Any]:
    """/readyz once the worker's first beat is in (it beats as its loop starts)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        answer = await relay.get("/readyz")
        if answer.status == 200 or asyncio.get_running_loop().time() > deadline:
            return answer.status, await answer.json()
        await asyncio.sleep(0.02)
