"""Scenario 10, PostgreSQL: two web processes and three workers on one database, killed one at a time,
PostgreSQL itself stopped and started again, Quivo flaky: exactly once, one send at a time per inquiry."""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import (
    PG_STOP_MODES,
    PROFILE,
    WEB_ANSWERS,
    Fleet,
    FleetSender,
    RelayProcess,
    fleet,
    fleet_ledger,
    http_call,
    plan_versions,
    record_fleet,
    seeded_rng,
    stop_postgres,
    wait_for,
)
from tests.chaos.test_delivery_faults import kill_moments, sleep_until
from tests.conftest import AUTH
from tests.forwarding import rating_webhook
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.chaos

MERCHANT = 110
# Probes post as another merchant, with an order no inquiry pattern matches: never delivered, never counted.
PROBE_MERCHANT = 111
KNOBS = {"error_rate": 0.1, "drop_after_commit_rate": 0.1}
BASE_LATENCY_MS, SLOW_LATENCY_MS = 40, 1500


@dataclass
class Outage:
    """One stop of PostgreSQL: how, from when to when (monotonic), what the probes got, how long its start
    took (recovery included), and then how long until every process was ready again."""

    mode: str
    began: float
    ended: float
    probes: list[tuple[int, dict[str, str], Any]]
    start_s: float
    resumed_s: float


class Faults:
    """The scenario's fault actions on a fleet, and the pid each process must still have."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.pids = {process.log_path.stem: process.pid for process in fleet.processes}
        self.victims: list[str] = []
        self.outages: list[Outage] = []
        self._probes = 0

    def kill(self, process: RelayProcess, down_s: float) -> None:
        """SIGKILL, down for a while, started again: the only way a process may get a new pid."""
        self.victims.append(process.log_path.stem)
        process.kill()
        time.sleep(down_s)  # down for a while: its webhooks go to the other web process or are refused
        process.start(timeout=60)
        self.pids[process.log_path.stem] = process.pid

    def slow_quivo(self, slow_s: float) -> None:
        """Quivo answers (and commits) only after QUIVO_TIMEOUT_S for a while."""
        self.fleet.sim.faults(latency_ms=SLOW_LATENCY_MS)
        time.sleep(slow_s)
        self.fleet.sim.faults(latency_ms=BASE_LATENCY_MS)

    def stop_database(self, mode: str, down_s: float) -> None:
        """PostgreSQL stopped (`fast` or `immediate`) for `down_s`, probed meanwhile, then started again."""
        stop_postgres(self.fleet.server, mode)
        began = time.monotonic()
        try:
            probes = [self._probe(web) for web in self.fleet.webs]
            time.sleep(max(0.0, down_s - (time.monotonic() - began)))  # the outage lasts: nothing to wait for
            alive_while_down = self.running()
        finally:
            # Started again whatever happened: the other tests of the run share this server.
            ended = time.monotonic()
            self.fleet.server.start()
        accepting = time.monotonic()
        assert alive_while_down == self.pids, f"exited while PostgreSQL was down: {alive_while_down}"
        wait_for(
            lambda: all(self.fleet.ready(process) for process in self.fleet.processes),
            60,
            "every process ready again after PostgreSQL started",
            interval=0.1,
        )
        resumed = time.monotonic()
        self.outages.append(
            Outage(mode, began, ended, probes, round(accepting - ended, 1), round(resumed - accepting, 1))
        )
        self.assert_same_processes()

    def running(self) -> dict[str, int | None]:
        """Each process's pid, None for one that is not running."""
        return {
            process.log_path.stem: process.pid if process.running else None
            for process in self.fleet.processes
        }

    def assert_same_processes(self) -> None:
        """Every process runs with the pid it was given: none exited and came back, none crash-loops."""
        now = self.running()
        assert now == self.pids, f"processes that exited by themselves: {now} (expected {self.pids})"

    def _probe(self, web: RelayProcess) -> tuple[int, dict[str, str], Any]:
        self._probes += 1
        body = rating_webhook(self._probes, f"PROBE-{self._probes}", merchant_id=PROBE_MERCHANT)
        headers = {**AUTH, "Content-Type": "application/json"}
        return http_call("POST", f"{web.url}/webhooks/bringg", body, headers)


def test_two_web_processes_and_three_workers_on_postgresql_survive_kills_and_a_database_restart(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
):
    started = time.monotonic()
    seed, rng = seeded_rng("postgres_fleet")
    # Slow enough in the fast profile that the posts go on through the faults (each takes seconds).
    count, rate, inquiries = PROFILE.pick(80, 1500), PROFILE.pick(8.0, 20.0), PROFILE.pick(6, 12)
    worker_kills, web_kills = PROFILE.pick(1, PROFILE.kill_cycles), PROFILE.pick(1, 3)
    stops, down_s, slow_s = PROFILE.pick(2, 4), PROFILE.pick(1.5, 10.0), PROFILE.pick(1.5, 10.0)
    plan = plan_versions(rng, count, merchant_id=MERCHANT, inquiries=inquiries, updated_share=0.3)
    actions = [
        *["worker"] * worker_kills,
        *["web"] * web_kills,
        *[f"database {PG_STOP_MODES[n % 2]}" for n in range(stops)],
        "slow Quivo",
    ]
    rng.shuffle(actions)
    with fleet(tmp_path, postgres_server, postgres_database, "--latency-ms", str(BASE_LATENCY_MS)) as f:
        f.sim.faults(**KNOBS)
        faults = Faults(f)
        with FleetSender([web.url for web in f.webs], plan, rate_per_s=rate) as sender:
            for offset, action in zip(
                kill_moments(rng, len(actions), len(plan) / rate), actions, strict=True
            ):
                sleep_until(sender.started_at + offset)
                if action == "worker":
                    faults.kill(rng.choice(f.workers), rng.uniform(0.0, 1.0))
                elif action == "web":
                    faults.kill(rng.choice(f.webs), rng.uniform(0.0, 1.0))
                elif action == "slow Quivo":
                    faults.slow_quivo(slow_s)
                else:
                    faults.stop_database(action.removeprefix("database "), down_s)
            assert sender.wait(timeout=PROFILE.drain_s), "every version acknowledged once PostgreSQL is back"
        f.sim.healthy()
        during = [
            post
            for post in sender.posts
            for outage in faults.outages
            if outage.began <= post.began and post.ended <= outage.ended
        ]
        statuses = {post.outcome for post in sender.posts if post.outcome.isdigit()}
        restarts = sum(process.starts - 1 for process in f.processes)
        figures, broken = fleet_ledger(
            "10. PostgreSQL: 2 web + 3 workers, kills, database stopped and started, flaky Quivo",
            sender,
            f,
            started_at=started,
            seed=seed,
            extra={
                **KNOBS,
                "latency_ms": BASE_LATENCY_MS,
                "slow_s": slow_s,
                "slow_latency_ms": SLOW_LATENCY_MS,
                "faults": actions,
                "killed": faults.victims,
                "restarts": restarts,
                "database_stops": [
                    {
                        "mode": o.mode,
                        "down_s": round(o.ended - o.began, 1),
                        "start_s": o.start_s,
                        "all_ready_within_s": o.resumed_s,
                    }
                    for o in faults.outages
                ],
                "posts_while_database_down": len(during),
                "answered_503": sum(post.outcome == "503" for post in sender.posts),
            },
        )
        # Every process still the one started (none crash-looped), then each stopped as an operator would.
        faults.assert_same_processes()
        exits = {process.log_path.stem: process.stop() for process in f.processes}
        logs = {
            process.log_path.stem: [event.get("event") for event in process.log_events()]
            for process in f.processes
        }
        figures.extra["sigterm_exits"] = {name: code for name, (code, _) in exits.items()}
        record_fleet(figures)

    assert restarts == worker_kills + web_kills == len(faults.victims)
    assert statuses <= WEB_ANSWERS, f"answers other than 2xx and 503: {statuses - WEB_ANSWERS}"
    # The probes make sure of one webhook per web process and stop; the sender's posts add to them.
    assert not [post for post in during if post.acknowledged], "a 2xx while PostgreSQL was down"
    for outage in faults.outages:
        for status, headers, problem in outage.probes:
            assert status == 503, (outage.mode, status, problem)
            assert headers.get("Retry-After", "").isdigit(), headers
    assert {name: code for name, (code, _) in exits.items()} == dict.fromkeys(exits, 0), exits
    for name, events in logs.items():
        goodbye = "worker.stopped" if name.startswith("worker") else "relay.stopped"
        assert events.count(goodbye) == 1, f"{name}: {goodbye} {events.count(goodbye)} times"
    assert figures.dead == 0
    assert not broken, f"promises broken: {broken}"
