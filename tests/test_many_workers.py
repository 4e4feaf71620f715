"""Many `relay worker` processes on one PostgreSQL database: the relay's promises hold across them all."""

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest

from relay import worker as worker_module
from relay.ops.metrics import RelayMetrics
from relay.quivo.client import QuivoClient
from relay.quivo.sessions import quivo_session
from relay.settings import Settings
from relay.store import create_store
from relay.store.api import Store
from relay.store.records import ClaimedDelivery, PruneResult, UnmatchedSweep
from relay.tenants.tenant import Tenant, implicit_tenant
from relay.worker import Worker
from tests.chaos.harness import http_call, relay_env, wait_for
from tests.conftest import AUTH
from tests.forwarding import rating_webhook
from tests.pg_server import PostgresServer
from tests.processes import free_port, relay_process, run_relay, sim_quivo_process, wait_until_ready

ADMIN_TOKEN = "many-workers-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WORKERS = 3
# The relay's budget towards Quivo in these tests: low enough that three workers could each spend it alone.
MAX_RPS = 10
TAG = "[bringg:1:"


@dataclass
class Relay:
    """One web process and WORKERS worker processes on one PostgreSQL database, against one stand-in."""

    sim: str
    web: str
    env: dict[str, str]
    cwd: Path
    workers: list[subprocess.Popen[str]]

    def post_ratings(self, rating_ids: range, inquiries: int) -> None:
        """Webhooks for these ratings, spread over `inquiries` inquiries, sent 8 at a time."""

        def post(rating_id: int) -> None:
            body = rating_webhook(rating_id, f"INQ-{rating_id % inquiries + 1}")
            status, _, _ = http_call("POST", f"{self.web}/webhooks/bringg", body, AUTH)
            assert status in (200, 202)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, rating_ids))

    def sim_stats(self) -> dict[str, Any]:
        return http_call("GET", f"{self.sim}/_sim/stats")[2]

    def sim_faults(self, **knobs: Any) -> None:
        assert http_call("PUT", f"{self.sim}/_sim/faults", json.dumps(knobs).encode())[0] == 200

    def delivered_tags(self) -> Counter[str]:
        ratings = http_call("GET", f"{self.sim}/_sim/ratings")[2]["ratings"]
        return Counter(record["message"].rsplit("\n", 1)[-1] for record in ratings)

    def delivered(self) -> int:
        return int(http_call("GET", f"{self.web}/admin/stats", headers=ADMIN)[2]["deliveries"]["delivered"])

    def status(self) -> dict[str, Any]:
        result = run_relay("status", "--json", env=self.env, cwd=self.cwd)
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document


@pytest.fixture(scope="module")
def relay(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """The processes for the whole module; each test sends ratings of its own and resets the stand-in."""
    cwd = tmp_path_factory.mktemp("many-workers")
    database = postgres_server.create_database()
    web_port = free_port()
    env = relay_env(
        cwd,
        "",
        web_port,
        DATABASE_URL=postgres_server.url(database),
        RELAY_ADMIN_TOKEN=ADMIN_TOKEN,
        QUIVO_MAX_RPS=str(MAX_RPS),
        QUIVO_MAX_CONCURRENCY="4",
    )
    try:
        with ExitStack() as stack:
            sim = stack.enter_context(sim_quivo_process(cwd=cwd))
            env["QUIVO_BASE_URL"] = sim
            web = stack.enter_context(
                relay_process("serve", "--no-worker", env=env, cwd=cwd, log_path=cwd / "web.log")
            )
            web_url = f"http://127.0.0.1:{web_port}"
            wait_until_ready(f"{web_url}/readyz?scope=intake", web)
            workers = [
                stack.enter_context(
                    relay_process("worker", env=env, cwd=cwd, log_path=cwd / f"worker-{number}.log")
                )
                for number in range(WORKERS)
            ]
            cluster = Relay(sim, web_url, env, cwd, workers)
            wait_for(lambda: len(cluster.status()["workers"]) == WORKERS, 30, "every worker live")
            yield cluster
            # A clean stop leaves the registry at once.
            for process in workers:
                process.send_signal(signal.SIGTERM)
            assert [process.wait(timeout=30) for process in workers] == [0] * WORKERS
            assert cluster.status()["workers"] == []
    finally:
        postgres_server.drop_database(database)


@pytest.fixture
def quivo(relay: Relay) -> Relay:
    assert http_call("POST", f"{relay.sim}/_sim/reset")[0] == 200
    return relay


def all_delivered(relay: Relay, expected: int) -> Callable[[], bool]:
    return lambda: relay.delivered() >= expected


def test_relay_status_lists_every_live_worker(quivo: Relay) -> None:
    text = run_relay("status", env=quivo.env, cwd=quivo.cwd)
    document = quivo.status()

    assert text.returncode == 0, text.stderr
    assert f"live workers  {WORKERS}" in text.stdout
    pids = {process.pid for process in quivo.workers}
    assert {worker["pid"] for worker in document["workers"]} == pids
    assert all(worker["paused"] is None for worker in document["workers"])
    assert all(0 <= worker["heartbeat_age_s"] < 60 for worker in document["workers"])
    for worker in document["workers"]:
        assert worker["worker_id"] in text.stdout


def test_many_ratings_for_few_inquiries_are_each_delivered_once_one_call_at_a_time(quivo: Relay) -> None:
    before = quivo.delivered()
    ratings = range(1000, 1040)
    # Calls slower than the budget's spacing: several are out at once, for the same inquiries if allowed.
    quivo.sim_faults(latency_ms=400)

    quivo.post_ratings(ratings, inquiries=3)
    wait_for(all_delivered(quivo, before + len(ratings)), 40, "every rating delivered")

    tags = quivo.delivered_tags()
    assert sorted(tags) == sorted(f"{TAG}{rating_id}]" for rating_id in ratings)
    assert set(tags.values()) == {1}
    stats = quivo.sim_stats()
    assert stats["most_calls_at_once_per_inquiry"] == 1
    assert stats["most_rating_posts_at_once_per_inquiry"] == 1


def test_quivo_max_rps_is_the_whole_relays_budget(quivo: Relay) -> None:
    before = quivo.delivered()
    ratings = range(2000, 2060)

    quivo.post_ratings(ratings, inquiries=len(ratings))
    calls = []  # (when, rating posts so far), sampled while the backlog drains
    while quivo.delivered() < before + len(ratings):
        calls.append((time.monotonic(), quivo.sim_stats()["requests"].get("post_rating", {}).get("200", 0)))
        assert not calls or calls[-1][0] - calls[0][0] < 60, "the backlog did not drain within 60 s"
        time.sleep(0.2)

    # From the first sample that saw a call to the last: three workers spending MAX_RPS each would make
    # about three times as many calls a second; the bound is generous for a busy machine's sampling.
    moving = [(when, count) for when, count in calls if count > 0]
    (first_at, first_count), (last_at, last_count) = moving[0], moving[-1]
    assert last_count - first_count >= 30, calls  # a window long enough to measure a rate over
    rate = (last_count - first_count) / (last_at - first_at)
    assert rate <= 1.5 * MAX_RPS, f"{rate:.1f} calls a second"


def test_an_unanswered_send_keeps_its_inquiry_until_quivo_may_have_finished_it(quivo: Relay) -> None:
    # Every worker logged in first: a login slower than the timeout would never let a send go out.
    assert http_call("POST", f"{quivo.sim}/_sim/tokens/expire")[0] == 200
    warm_up = iter(range(4100, 4200, 4))
    while quivo.sim_stats()["logins"] < WORKERS:
        first = next(warm_up)
        expected = quivo.delivered() + 4
        quivo.post_ratings(range(first, first + 4), inquiries=4)
        wait_for(all_delivered(quivo, expected), 20, "the warm-up ratings delivered")
    before = quivo.delivered()
    # Slower than QUIVO_TIMEOUT_S (1 s): the first send goes unanswered while Quivo still works on it.
    quivo.sim_faults(latency_ms=1500)
    quivo.post_ratings(range(4000, 4001), inquiries=1)
    wait_for(lambda: quivo.sim_stats()["rating_posts_open"] == 1, 20, "the first send at Quivo")
    quivo.sim_faults(latency_ms=0)
    # The second rating for the inquiry must not go out while Quivo may still commit the first.
    quivo.post_ratings(range(4001, 4002), inquiries=1)

    wait_for(all_delivered(quivo, before + 2), 40, "both ratings delivered")
    assert set(quivo.delivered_tags().values()) == {1}
    assert quivo.sim_stats()["most_calls_at_once_per_inquiry"] == 1


def test_refused_credentials_pause_every_worker_until_fixed(quivo: Relay) -> None:
    before = quivo.delivered()
    quivo.sim_faults(reject_credentials=True)
    assert http_call("POST", f"{quivo.sim}/_sim/tokens/expire")[0] == 200

    # One rating: one worker learns of the refusal; the others must hold because it told them.
    quivo.post_ratings(range(3000, 3001), inquiries=1)
    wait_for(lambda: all(worker["paused"] for worker in quivo.status()["workers"]), 30, "every worker paused")
    quivo.post_ratings(range(3001, 3011), inquiries=10)
    # Nothing to wait for: the promise is that nothing happens. Long enough for a worker to claim and call.
    time.sleep(3)

    # At most the one call that met the refusal (none if that worker had no token yet to try): every
    # other worker held its own token back.
    calls = quivo.sim_stats()["requests"]
    assert calls.get("post_rating", {}) in ({}, {"401": 1}) and "get_inquiry" not in calls, calls
    assert quivo.delivered() == before

    quivo.sim_faults(reject_credentials=False)
    wait_for(all_delivered(quivo, before + 11), 40, "every rating delivered once the login works")
    assert set(quivo.delivered_tags().values()) == {1}
    assert not any(worker["paused"] for worker in quivo.status()["workers"])


class CountingStore:
    """One worker's view of a shared store, counting the relay-wide work that worker did through it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.sweeps = 0
        self.prunes = 0
        self.claims = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_due(
        self, tenant: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[ClaimedDelivery]:
        self.claims += 1
        return await self._store.claim_due(tenant, now=now, lease_until=lease_until, limit=limit)

    async def sweep_unmatched(
        self, *, now: datetime, expire_before: Mapping[str, datetime]
    ) -> UnmatchedSweep:
        self.sweeps += 1
        return await self._store.sweep_unmatched(now=now, expire_before=expire_before)

    async def prune_batch(self, *, older_than: datetime, batch_size: int) -> PruneResult:
        self.prunes += 1
        return await self._store.prune_batch(older_than=older_than, batch_size=batch_size)


async def test_retention_and_the_unmatched_sweep_run_on_one_worker_and_pass_on_when_it_stops(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both every 50 ms, so that a second worker doing either would show at once.
    monkeypatch.setattr(worker_module, "MAINTENANCE_INTERVAL_S", 0.05)
    monkeypatch.setattr(worker_module, "RETENTION_INTERVAL_S", 0.05)
    settings = make_settings(
        quivo_base_url="http://127.0.0.1:9",
        quivo_api_key="k",
        quivo_username="u",
        quivo_password="p",
        relay_sweep_interval_s=0.05,
    )
    store = create_store(settings.database_url, timeout_s=5, pool_size=2)
    await store.open()
    first, second = CountingStore(store), CountingStore(store)
    tenants = [implicit_tenant(settings)]
    metrics = RelayMetrics()

    def connect(tenant: Tenant) -> AbstractAsyncContextManager[QuivoClient]:
        return quivo_session(settings, tenant, metrics)

    holder = Worker(settings, cast(Store, first), metrics, tenants, connect)
    other = Worker(settings, cast(Store, second), metrics, tenants, connect)
    try:
        holder.start()
        await until(lambda: first.sweeps >= 1 and first.prunes >= 1, "the first worker's sweep and prune")
        other.start()
        # Its loop goes round every 50 ms too: 20 rounds, 20 chances to sweep and prune.
        await until(lambda: second.claims >= 20, "the second worker's loop going round")
        assert (second.sweeps, second.prunes) == (0, 0)
        assert first.sweeps >= 2  # the holder went on meanwhile

        await holder.stop()
        await until(lambda: second.sweeps >= 1 and second.prunes >= 1, "the second worker taking over")
    finally:
        for worker in (holder, other):
            await worker.stop()
        await store.close()


async def until(condition: Callable[[], bool], what: str, within_s: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {within_s} s"
        await asyncio.sleep(0.02)
