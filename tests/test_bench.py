"""The benchmark harness's own pieces: reading wrk's report, and seeding a backlog the relay can claim."""

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

from bench.run import wrk_result
from bench.seed import seed
from relay.store.db import Database
from relay.store.outbox import claim_due

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
        database = Database(database_path, timeout_s=5)
        await database.open()
        try:
            now = datetime.now(UTC) + timedelta(seconds=1)
            claimed = await database.write(
                claim_due(now=now, lease_until=now + timedelta(minutes=1), limit=500)
            )
            return len(claimed)
        finally:
            await database.close()

    assert asyncio.run(claim_all()) == 150
    conn = sqlite3.connect(database_path)
    assert conn.execute("SELECT COUNT(*) FROM webhooks").fetchone()[0] == 150
    conn.close()
