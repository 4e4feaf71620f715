"""The benchmark harness's own pieces: reading wrk's report, seeding a backlog the relay can claim, judging
targets and writing the results."""

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench import run
from bench.run import Bench, Row, exit_status, fixed, missed, relative, wrk_result
from bench.seed import seed
from relay.store import create_store

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


def test_seeded_backlog_is_claimed_by_the_relay(tmp_path):
    database_path = tmp_path / "bench.db"
    seed(database_path, 150, state="pending")

    async def claim_all() -> int:
        store = create_store(f"sqlite:///{database_path}", timeout_s=5, pool_size=1)
        await store.open()
        try:
            now = datetime.now(UTC) + timedelta(seconds=1)
            claimed = await store.claim_due(now=now, lease_until=now + timedelta(minutes=1), limit=500)
            return len(claimed)
        finally:
            await store.close()

    assert asyncio.run(claim_all()) == 150
    conn = sqlite3.connect(database_path)
    assert conn.execute("SELECT COUNT(*) FROM webhooks").fetchone()[0] == 150
    conn.close()


def rows(*met: bool | None) -> list[Row]:
    return [
        Row(f"measure {i}", str(i), None if m is None else fixed(f"<= {i}"), m) for i, m in enumerate(met)
    ]


def test_a_missed_target_fails_the_bench_and_each_miss_is_named():
    judged = [
        Row("relay throughput (req/s)", "2,877", relative(">= 0.75 x the bare app's"), False),
        Row("relay p99 at 1,000 req/s (ms)", "6.84", fixed("<= 10 ms"), True),
        Row("drain (deliveries/s)", "1,409", fixed(">= 2,000/s"), False),
        Row("bare app throughput (req/s)", "12,899", None, None),
    ]

    assert missed(judged) == [
        "MISSED relay throughput (req/s): 2,877, target relative: >= 0.75 x the bare app's",
        "MISSED drain (deliveries/s): 1,409, target fixed: >= 2,000/s",
    ]
    assert exit_status(judged, quick=False) == 1


def test_every_target_met_passes_and_a_quick_run_checks_only_the_harness():
    assert exit_status(rows(True, None, True), quick=False) == 0
    assert exit_status(rows(True, False), quick=True) == 0


def test_the_results_name_the_commit_each_targets_kind_and_the_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(run, "machine", lambda: "2 cores")
    bench = Bench(run.QUICK, tmp_path)
    bench.add("relay throughput (req/s)", "2,877", relative(">= 0.75 x the bare app's"), False)
    bench.add("peak RSS, ingest (MB)", "59", fixed("<= 150 MB"), True)
    out = tmp_path / "RESULTS.md"

    run.write_results(bench, out, quick=False, took_s=1, commit="abc1234 with uncommitted changes")

    page = out.read_text()
    assert "on commit abc1234 with uncommitted changes, on: 2 cores." in page
    assert "| relay throughput (req/s) | 2,877 | relative: >= 0.75 x the bare app's | **no** |" in page
    assert "| peak RSS, ingest (MB) | 59 | fixed: <= 150 MB | yes |" in page
    assert "- MISSED relay throughput (req/s): 2,877, target relative: >= 0.75 x the bare app's" in page
