"""`/readyz` and the backlog through HTTP and the CLI: one definition of its age, wherever it is shown."""

import asyncio
import json
import re
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.app import create_app
from relay.keys import READINESS_CHECKS, SETTINGS, STORE
from relay.ops.fresh import FRESH_FOR_S
from relay.ops.health import READINESS, Readiness
from relay.ops.metrics import METRICS, RelayMetrics
from tests.beats import worker_beat
from tests.conftest import BACKENDS, FakeClock
from tests.processes import run_relay
from tests.test_admin import ADMIN, TOKEN, ago, seed

LIMIT_S = 60
BACKLOG = re.compile(
    r"oldest undelivered rating waited (\d+) s since accepted \(over RELAY_READY_MAX_BACKLOG_AGE_S=60\)"
)

pytestmark = pytest.mark.backends(*BACKENDS)


@pytest.fixture
async def relay(aiohttp_client, make_settings):
    """A web-only relay whose worker (elsewhere) beat just now: only the backlog can make it unready."""
    settings = make_settings(relay_admin_token=TOKEN, relay_ready_max_backlog_age_s=LIMIT_S)
    client = await aiohttp_client(create_app(settings, run_worker=False))
    await client.app[STORE].beat(worker_beat(datetime.now(UTC)))
    return client


async def gauges(relay) -> dict[str, float]:
    response = await relay.get("/metrics")
    assert response.status == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
        if not sample.labels
    }


async def readiness(relay) -> tuple[int, list[str]]:
    response = await relay.get("/readyz")
    return response.status, (await response.json()).get("problems", [])


async def backlog_problem(relay) -> float:
    status, problems = await readiness(relay)
    assert status == 503, problems
    [age] = [float(found[1]) for problem in problems if (found := BACKLOG.fullmatch(problem))]
    return age


async def test_a_delivery_backing_off_past_the_limit_makes_readiness_fail_and_shows_its_age(relay):
    # Retried for ten minutes and not due again for five: time since due says nothing is late.
    seed(relay, state="retrying", created_at=ago(minutes=10), next_attempt_at=ago(minutes=-5), attempts=6)

    age = await backlog_problem(relay)
    shown = await gauges(relay)

    assert 600 <= age < 660
    assert 600 <= shown["relay_backlog_age_seconds"] < 660
    assert shown["relay_worker_lag_seconds"] == 0


async def test_unmatched_ones_wait_for_a_link_not_for_quivo_and_are_not_backlog(relay):
    seed(relay, state="unmatched", created_at=ago(hours=5))
    seed(relay, state="pending", created_at=ago(seconds=5), next_attempt_at=ago(seconds=5))

    status, problems = await readiness(relay)
    shown = await gauges(relay)

    assert (status, problems) == (200, [])
    assert shown["relay_backlog_age_seconds"] < LIMIT_S


async def test_a_replay_starts_the_backlog_clock_again(relay):
    delivery = seed(relay, state="dead", created_at=ago(days=2))

    replayed = await relay.post(f"/admin/deliveries/{delivery}/replay", headers=ADMIN)

    assert replayed.status == 200
    assert (await readiness(relay)) == (200, [])
    assert (await gauges(relay))["relay_backlog_age_seconds"] < LIMIT_S


async def test_status_stats_readiness_and_metrics_agree_on_a_send_whose_lease_ran_out(relay, tmp_path: Path):
    # A relay died mid-send twenty minutes after the rating came; its lease ran out ten minutes ago.
    seed(relay, state="sending", created_at=ago(minutes=30), next_attempt_at=ago(minutes=10), attempts=1)
    url = relay.app[SETTINGS].database_url

    cli = await asyncio.to_thread(run_relay, "status", "--json", env={"DATABASE_URL": url}, cwd=tmp_path)
    stats = await (await relay.get("/admin/stats", headers=ADMIN)).json()
    shown = await gauges(relay)
    ready_age = await backlog_problem(relay)

    assert cli.returncode == 0, cli.stderr
    status = json.loads(cli.stdout)
    ages = [status["backlog_age_s"], stats["backlog_age_s"], shown["relay_backlog_age_seconds"], ready_age]
    lags = [status["worker_lag_s"], stats["worker_lag_s"], shown["relay_worker_lag_seconds"]]
    assert all(1800 <= age < 1860 for age in ages), ages
    assert all(600 <= lag < 660 for lag in lags), lags


class Calls:
    """Stands in for an async function and counts the calls it passes on."""

    def __init__(self, function: Callable[..., Awaitable[Any]]) -> None:
        self.function = function
        self.count = 0

    async def __call__(self, *args: Any) -> Any:
        self.count += 1
        return await self.function(*args)


@pytest.fixture
def clocked(aiohttp_client, make_settings):
    """Starts a web-only relay whose shared readings follow a clock the test moves by hand."""

    async def start(**settings: Any) -> tuple[Any, FakeClock]:
        clock = FakeClock()
        app = create_app(make_settings(**settings), run_worker=False)
        app[READINESS] = Readiness(clock=clock)
        app[METRICS] = RelayMetrics(clock=clock)
        client = await aiohttp_client(app)
        await app[STORE].beat(worker_beat(datetime.now(UTC)))
        return client, clock

    return start


async def test_a_crowd_of_callers_costs_one_store_check_and_one_gauge_read_a_second(clocked, monkeypatch):
    # The usual store timeout: sixty callers on a busy machine may wait longer than a short one for the pool.
    relay, clock = await clocked()
    checks = relay.app[READINESS_CHECKS]
    store = relay.app[STORE]
    at = checks.index(store.readiness_problems)
    store_checks = checks[at] = Calls(checks[at])  # the one that commits a write
    gauge_reads = Calls(store.deliveries_by_state)  # the count over every delivery
    monkeypatch.setattr(store, "deliveries_by_state", gauge_reads)

    async def crowd() -> set[int]:
        paths = ("/readyz", "/readyz?scope=intake", "/metrics") * 20
        return {answer.status for answer in await asyncio.gather(*(relay.get(path) for path in paths))}

    first = await crowd()
    clock.now += FRESH_FOR_S
    second = await crowd()

    assert first == second == {200}
    assert (store_checks.count, gauge_reads.count) == (2, 2)


# Another process holding SQLite's one write lock; PostgreSQL has no such lock to hold.
@pytest.mark.backends("sqlite")
async def test_a_store_that_stops_taking_writes_shows_within_a_second(clocked):
    relay, clock = await clocked(relay_store_timeout_s=0.3)
    before = await relay.get("/readyz?scope=intake")
    blocker = sqlite3.connect(relay.app[SETTINGS].database_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        clock.now += FRESH_FOR_S / 2
        shared = await relay.get("/readyz?scope=intake")
        clock.now += FRESH_FOR_S / 2
        after = await relay.get("/readyz?scope=intake")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert before.status == shared.status == 200
    assert after.status == 503
    assert "database not writable" in " ".join((await after.json())["problems"])
