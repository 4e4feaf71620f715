"""Saturating load from Debian's wrk on one port, and its report read."""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONNECTIONS = 64


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p99_ms: float
    non_2xx: int


def wrk(port: int, seconds: int, *, run_base: int, token: str) -> WrkResult:
    """Saturate one port with wrk, C so the load generator is never the bottleneck: 64 connections."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / "ratings.lua"),
            f"http://127.0.0.1:{port}/webhooks/bringg",
            "--",
            str(run_base),  # every webhook a new rating: runs 10**9 apart, more than a run sends
            token,
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    return wrk_result(out)


def wrk_result(report: str) -> WrkResult:
    """Throughput, p99 and failures (non-2xx answers plus socket errors) from wrk's --latency report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", report)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", report)
    assert rps is not None and p99 is not None, report
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(n) for n in socket_errors.groups())
    return WrkResult(float(rps.group(1)), float(p99.group(1)) * scale, failed)
