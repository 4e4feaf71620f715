"""`/readyz` and the backlog through HTTP and the CLI: one definition of its age, wherever it is shown."""

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.app import create_app
from relay.keys import DATABASE
from relay.store.gauges import beat
from tests.processes import run_relay
from tests.test_admin import ADMIN, TOKEN, ago, seed

LIMIT_S = 60
BACKLOG = re.compile(
    r"oldest undelivered rating waited (\d+) s since accepted \(over RELAY_READY_MAX_BACKLOG_AGE_S=60\)"
)


@pytest.fixture
async def relay(aiohttp_client, make_settings):
    """A web-only relay whose worker (elsewhere) beat just now: only the backlog can make it unready."""
    settings = make_settings(relay_admin_token=TOKEN, relay_ready_max_backlog_age_s=LIMIT_S)
    client = await aiohttp_client(create_app(settings, run_worker=False))
    await client.app[DATABASE].write(beat(datetime.now(UTC)))
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


async def test_status_stats_readiness_and_metrics_agree_on_a_send_whose_lease_ran_out(relay):
    # A relay died mid-send twenty minutes after the rating came; its lease ran out ten minutes ago.
    seed(relay, state="sending", created_at=ago(minutes=30), next_attempt_at=ago(minutes=10), attempts=1)
    path: Path = relay.app[DATABASE].path

    cli = await asyncio.to_thread(
        run_relay, "status", "--json", env={"DATABASE_URL": f"sqlite:///{path}"}, cwd=path.parent
    )
    stats = await (await relay.get("/admin/stats", headers=ADMIN)).json()
    shown = await gauges(relay)
    ready_age = await backlog_problem(relay)

    assert cli.returncode == 0, cli.stderr
    status = json.loads(cli.stdout)
    ages = [status["backlog_age_s"], stats["backlog_age_s"], shown["relay_backlog_age_seconds"], ready_age]
    lags = [status["worker_lag_s"], stats["worker_lag_s"], shown["relay_worker_lag_seconds"]]
    assert all(1800 <= age < 1860 for age in ages), ages
    assert all(600 <= lag < 660 for lag in lags), lags
