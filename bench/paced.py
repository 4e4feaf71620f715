"""An open-loop load at a fixed rate from Debian's wrk, paced by bench/paced.lua: its report read."""

import math
import subprocess
import time
from pathlib import Path

from bench.loadgen import LoadResult

HERE = Path(__file__).resolve().parent
# One connection per wrk thread, each paced on its own share of the schedule: 50 keep up with 1,000/s
# while the server answers within 50 ms, and a late answer delays only its own connection's next one.
CONNECTIONS = 50
START_AFTER_S = 0.5  # for wrk's threads to start and connect before the first request is due


def run_paced(port: int, *, rate: float, seconds: float, token: str, first_rating_id: int) -> LoadResult:
    """POST distinct ratings at `rate` per second for `seconds`, latency as bench/paced.lua counts it."""
    total = int(rate * seconds)
    start = time.monotonic() + START_AFTER_S
    out = subprocess.run(
        [
            "wrk",
            f"-t{CONNECTIONS}",
            f"-c{CONNECTIONS}",
            f"-d{math.ceil(seconds + START_AFTER_S) + 2}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "paced.lua"),
            f"http://127.0.0.1:{port}/webhooks/bringg",
            "--",
            str(CONNECTIONS),
            str(rate),
            str(total),
            repr(start),
            str(first_rating_id),
            token,
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    return paced_result(out, sent=total, duration_s=seconds)


def paced_result(report: str, *, sent: int, duration_s: float) -> LoadResult:
    """The latencies and statuses bench/paced.lua prints; what was sent and never answered is an error."""
    result = LoadResult(sent=sent, duration_s=duration_s)
    for line in report.splitlines():
        match line.split():
            case ["latency_ms", ms]:
                result.latencies_ms.append(float(ms))
            case ["status", status, count]:
                result.statuses[int(status)] = result.statuses.get(int(status), 0) + int(count)
    result.errors = sent - len(result.latencies_ms)
    return result
