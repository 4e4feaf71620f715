"""The benchmark harness's own pieces: reading wrk's report, seeding and copying databases on both backends,
reading them back through the store, judging targets and writing the results."""

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench import run
from bench.backends import Backend, PostgresDatabases, SqliteFiles
from bench.loadgen import LoadResult
from bench.procs import cpu_s, family_cpu_s
from bench.results import Row, exit_status, fixed, missed, relative, write_results
from bench.run import REFERENCE, Bench, RateRun, accepted_to_delivered_ms, claims_per_second
from bench.seed import opened, seed
from bench.steal import stolen
from bench.wrk import WrkResult, wrk_result
from relay.store.records import Outcome
from tests.pg_server import PostgresServer
from tests.processes import wait_for

WRK_REPORT = """Running 10s test @ http://127.0.0.1:40000/webhooks/bringg
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    22.01ms    5.12ms  61.38ms   82.11%
    Req/Sec     2.91k   250.12     3.30k    71.00%
  Latency Distribution
     50%   21.30ms
     75%   23.90ms
     90%   27.55ms
     99%  850.00us
  29011 requests in 10.01s, 5.37MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   2898.16
Transfer/sec:    549.67KB
"""


def test_wrk_report_is_read_with_units_and_every_failure_counted():
    result = wrk_result(WRK_REPORT)

    assert result.rps == 2898.16
    assert result.p99_ms == 0.85
    assert result.non_2xx == 7  # 4 non-2xx answers and 3 socket errors


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend the bench runs on; PostgreSQL on the tests' throwaway server."""
    if request.param == "sqlite":
        return SqliteFiles(tmp_path)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return PostgresDatabases(server)


def test_seeded_backlog_is_claimed_by_the_relay_and_delivered_rows_are_not(backend: Backend):
    url = backend.fresh("seeded")
    seed(url, 120, state="delivered", merchant_id=99)
    seed(url, 150, state="pending", first_rating_id=10**6)

    async def claim_all() -> tuple[int, dict[str, int], dict[str, int]]:
        async with opened(url) as store:
            now = datetime.now(UTC) + timedelta(seconds=1)
            claimed = await store.claim_due(
                "default", now=now, lease_until=now + timedelta(minutes=1), limit=500
            )
            return len(claimed), await store.row_counts(), await store.deliveries_by_state()

    claimed, counts, states = asyncio.run(claim_all())

    assert claimed == 150
    assert counts["webhooks"] == counts["deliveries"] == 270
    assert states["delivered"] == 120 and states["sending"] == 150


def test_a_copy_holds_the_seeded_rows_and_the_latencies_are_read_from_them(backend: Backend):
    url = backend.fresh("original")
    seed(url, 40, state="delivered")

    copy = backend.copy(url, "copy")

    latencies = asyncio.run(accepted_to_delivered_ms(copy))
    assert latencies == [0.0] * 40  # seeded as accepted and delivered at one instant


def test_claims_per_second_claims_the_whole_backlog(backend: Backend):
    url = backend.fresh("claims")

    assert claims_per_second(url, pending=200) > 0

    async def states() -> dict[str, int]:
        async with opened(url) as store:
            return await store.deliveries_by_state()

    assert asyncio.run(states())["delivered"] == 200


def test_a_server_s_cpu_counts_the_children_doing_its_work():
    # A parent that only waits, and a child that burns 0.5 s of CPU and then waits too. /proc counts in
    # clock ticks, a little behind the child's own clock: the wait asks for less than the child burns.
    child = "import time\nwhile time.process_time() < 0.5: pass\ntime.sleep(60)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"]
    )
    try:
        wait_for(lambda: family_cpu_s(parent.pid) >= 0.4, "the child's CPU counted in its parent's family")
        assert cpu_s(parent.pid) < 0.2  # the parent's own: starting Python, then waiting
    finally:
        for process in Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split():
            os.kill(int(process), signal.SIGKILL)
        parent.kill()
        parent.wait()


def test_a_drain_ends_at_the_last_delivery_s_own_instant_and_counts_cpu_per_delivery_watched(tmp_path: Path):
    url = SqliteFiles(tmp_path).fresh("drain")
    seed(url, 30, state="pending")
    # Every outcome stamped two seconds ahead, all stored at once: the first poll already sees them all.
    stamped = datetime.now(UTC) + timedelta(seconds=2)

    async def deliver_all() -> None:
        async with opened(url) as store:
            leased = stamped + timedelta(minutes=5)
            batch = await store.claim_due("default", now=stamped, lease_until=leased, limit=64)
            for claimed in batch:
                outcome = Outcome(claimed.id, "delivered", attempts=1, unconfirmed=False)
                await store.record_outcome(outcome, leased_until=leased, now=stamped)

    async def drain(worker: subprocess.Popen[bytes]) -> run.Drained:
        # A meter of CPU seconds, read once as the watch begins and once when all are delivered: the
        # deliveries start only once it has been read.
        readings, watching_began = iter([1.0, 1.006]), asyncio.Event()

        def meter() -> float:
            watching_began.set()
            return next(readings)

        watching = asyncio.create_task(run.watch_drain(url, 30, [worker], [meter]))
        await watching_began.wait()
        await deliver_all()
        return await watching

    worker = subprocess.Popen(["sleep", "60"])  # a process for the watcher to find alive
    try:
        drained = asyncio.run(drain(worker))
    finally:
        worker.kill()
        worker.wait()

    # 30 deliveries over the two seconds up to their stamp (less the moments before the watch began).
    assert 30 / 2.0 <= drained.rate <= 30 / 1.5
    # 6 ms of CPU over the 30 delivered while watched.
    assert drained.cpu_us == [pytest.approx(200.0)]


class NoDatabases:
    """A backend by its name alone, for judging figures no database was needed for."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fresh(self, label: str) -> str:
        raise AssertionError("no database expected")

    def copy(self, url: str, label: str) -> str:
        raise AssertionError("no database expected")

    def server_pid(self) -> None:
        raise AssertionError("no database expected")


def judged(bench: Bench, measure: str) -> Row:
    (row,) = (row for row in bench.rows if row.measure == measure)
    return row


def test_two_workers_are_judged_against_one_and_each_against_its_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rates = {(0, 1): 2500.0, (50, 1): 1100.0, (50, 2): 1650.0, (50, 3): 3000.0}
    monkeypatch.setattr(
        Bench,
        "drain_rate",
        lambda self, backend, count, *, workers, latency_ms: rates[(latency_ms, workers)],
    )
    bench = Bench(run.QUICK, tmp_path)
    bench.figures["PostgreSQL bare client"] = 6000.0

    bench.drain(NoDatabases("PostgreSQL"))

    two = judged(bench, "drain, 50 ms latency, 2 workers / 1")
    assert (two.value, two.met, str(two.target)) == ("1.50", False, "relative: >= 1.70 x one worker's")
    assert judged(bench, "drain, 50 ms latency, 3 workers / 1").met is None
    assert judged(bench, "  ratio to 3 x 64 / 50 ms = 3,840/s").value == "0.78"
    assert judged(bench, "drain, 50 ms latency, 1 worker(s) x 64 (1,500 deliveries/s)").met is True
    against_client = judged(bench, "  ratio drain, no added latency / bare client")
    assert (against_client.value, against_client.met) == ("0.42", False)
    assert str(against_client.target) == "relative: >= 0.5 (the bare client's)"


def test_each_timed_run_at_a_fixed_rate_starts_once_earlier_writes_are_settled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    steps: list[str] = []
    relay_port, bare_port = 1, 2

    def paced(port: int, *, rate: int, seconds: int, token: str, first_rating_id: int) -> LoadResult:
        server = "relay" if port == relay_port else "bare"
        steps.append(f"{server} from {first_rating_id}" if server == "relay" else server)
        return LoadResult(sent=1, statuses={202: 1}, latencies_ms=[1.0])

    @contextmanager
    def web(self: Bench, url: str, processes: int, *, table: str, phase: str) -> Iterator[int]:
        yield relay_port

    @contextmanager
    def serving(self: Bench, name: str, args: list[str]) -> Iterator[int]:
        assert args[0].endswith("bare_app.py")
        yield bare_port

    monkeypatch.setattr(run, "run_paced", paced)
    monkeypatch.setattr(Bench, "web", web)
    monkeypatch.setattr(Bench, "serving", serving)
    bench = Bench(run.QUICK, tmp_path)
    bench.settle = lambda: steps.append("settle")

    bench.at_rate(SqliteFiles(tmp_path))

    # The warm-up seconds are not timed; each timed run of the relay follows the bare app's at the same rate,
    # then a settle of its own.
    assert steps[:2] == [f"relay from {10**9}", "bare"]
    assert steps[2:] == [step for n in range(2, 5) for step in ("bare", "settle", f"relay from {n * 10**9}")]
    assert judged(bench, "  bare app p99 at 1,000 req/s, just before run 3 (ms)").value == "1.00"
    assert judged(bench, "  CPU taken by the host during run 3 (steal, %)").met is None


def test_one_web_process_is_judged_against_the_bare_app_and_the_naive_receiver(tmp_path: Path):
    bench = Bench(run.QUICK, tmp_path)
    measured = {"bare_rps": 20000.0, "bare_p99_ms": 5.0, "naive_rps": 6000.0, "probe_rps": 10000.0}
    bench.figures.update({f"SQLite {name}": value for name, value in measured.items()})
    # The run-start references, from a slower moment: the relay is judged against those measured beside it.
    bench.figures.update({f"{REFERENCE} {name}": value / 2 for name, value in measured.items()})

    bench.judge_ingest("SQLite", WrkResult(8500.0, 14.0, 0))

    assert missed(bench.rows) == [
        "MISSED SQLite: relay throughput (req/s): 8,500, target relative: >= 0.5 x the bare app's",
        "MISSED SQLite: ratio relay / naive: 1.42, target relative: >= 1.5 (the naive receiver's)",
    ]
    assert judged(bench, "relay p99 at saturation (ms)").met is True  # 14 <= 3 x 5
    assert judged(bench, "  ratio relay / bare").value == "0.42"
    assert judged(bench, "  ratio relay / group-commit probe").value == "0.85"


def test_each_run_at_a_fixed_rate_is_reported_and_judged_on_its_own(tmp_path: Path):
    bench = Bench(run.QUICK, tmp_path)
    loads = [
        LoadResult(sent=100, statuses={202: 100}, latencies_ms=[1.0] * 100),
        LoadResult(sent=100, statuses={202: 99, 503: 1}, latencies_ms=[2.0] * 98 + [30.0] * 2),
        LoadResult(sent=100, statuses={202: 100}, latencies_ms=[3.0] * 100),
    ]
    bare = LoadResult(sent=100, statuses={202: 100}, latencies_ms=[0.5] * 100)

    bench.judge_at_rate("PostgreSQL", [RateRun(load, bare, 0.02) for load in loads])

    assert missed(bench.rows) == [
        "MISSED PostgreSQL: relay p99 at 1,000 req/s, run 2 (ms): 30.00, target fixed: <= 10 ms",
        "MISSED PostgreSQL: relay non-2xx at 1,000 req/s, run 2: 1, target fixed: 0",
    ]
    assert [judged(bench, f"relay p99 at 1,000 req/s, run {n} (ms)").value for n in (1, 3)] == [
        "1.00",
        "3.00",
    ]
    # Beside each run, unjudged: the bare app's p99 at the same rate and the host's steal.
    beside = judged(bench, "  bare app p99 at 1,000 req/s, just before run 2 (ms)")
    assert (beside.value, beside.met) == ("0.50", None)
    assert judged(bench, "  CPU taken by the host during run 2 (steal, %)").value == "2.0"


def test_ingest_on_postgresql_is_judged_against_sqlite_in_the_same_run(tmp_path: Path):
    bench = Bench(run.QUICK, tmp_path)
    bench.figures.update(
        {
            "SQLite ingest rps x1": 3000.0,
            "PostgreSQL ingest rps x1": 2400.0,
            "PostgreSQL ingest rps x2": 3300.0,
            **{f"{name} {key}": 1000.0 for name in ("SQLite", "PostgreSQL") for key in ("drain", "claims")},
            **{f"{name} drain 50ms x1": 1000.0 for name in ("SQLite", "PostgreSQL")},
        }
    )

    bench.across()

    assert missed(bench.rows) == [
        "MISSED PostgreSQL against SQLite, in this run: ingest, one web process: PostgreSQL / SQLite: 0.80,"
        " target relative: >= 1.00 (SQLite's, this run)"
    ]
    assert judged(bench, "ingest, two web processes on PostgreSQL / one on SQLite").value == "1.10"


def test_a_missed_target_fails_the_bench_and_each_miss_is_named_with_its_table():
    rows = [
        Row("SQLite", "relay throughput (req/s)", "2,877", relative(">= 0.75 x the bare app's"), False),
        Row("SQLite", "relay p99 at 1,000 req/s (ms)", "6.84", fixed("<= 10 ms"), True),
        Row("PostgreSQL", "drain (deliveries/s)", "1,409", fixed(">= 2,000/s"), False),
        Row("Reference", "bare app throughput (req/s)", "12,899", None, None),
    ]

    assert missed(rows) == [
        "MISSED SQLite: relay throughput (req/s): 2,877, target relative: >= 0.75 x the bare app's",
        "MISSED PostgreSQL: drain (deliveries/s): 1,409, target fixed: >= 2,000/s",
    ]
    assert exit_status(rows, quick=False) == 1


def test_every_target_met_passes_and_a_quick_run_checks_only_the_harness():
    met = [Row("SQLite", "a", "1", fixed("<= 1"), True), Row("SQLite", "b", "2", None, None)]
    assert exit_status(met, quick=False) == 0
    assert exit_status([*met, Row("PostgreSQL", "c", "3", fixed("<= 2"), False)], quick=True) == 0


def test_the_results_name_the_commit_and_hold_a_table_per_backend_and_one_across(tmp_path: Path):
    rows = [
        Row("SQLite", "relay throughput (req/s)", "2,877", relative(">= 0.75 x the bare app's"), False),
        Row("PostgreSQL", "relay throughput (req/s)", "3,100", relative(">= 0.75 x the bare app's"), False),
        Row("SQLite", "peak RSS, ingest (MB)", "59", fixed("<= 150 MB"), True),
        Row("PostgreSQL against SQLite", "ingest: PostgreSQL / SQLite", "1.08", relative(">= 1.00"), True),
    ]
    out = tmp_path / "RESULTS.md"

    write_results(
        rows, out, quick=False, took_s=1, commit="abc1234 with uncommitted changes", machine="2 cores"
    )

    page = out.read_text()
    assert "on commit abc1234 with uncommitted changes, on: 2 cores." in page
    sqlite, postgres, across = (
        page.index(f"\n## {title}\n") for title in ("SQLite", "PostgreSQL", "PostgreSQL against SQLite")
    )
    assert sqlite < page.index("| peak RSS, ingest (MB) | 59 | fixed: <= 150 MB | yes |") < postgres < across
    assert postgres < page.index("| relay throughput (req/s) | 3,100 |") < across
    assert "- MISSED PostgreSQL: relay throughput (req/s): 3,100, target relative: >= 0.75 x" in page


def test_the_hosts_steal_is_the_share_of_all_ticks_taken_while_the_block_ran():
    readings = iter([(100, 10_000), (160, 11_000)])

    with stolen(lambda: next(readings)) as steal:
        assert steal.share == 0.0  # known only once the block has ended

    assert steal.share == pytest.approx(0.06)
