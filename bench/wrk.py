"""Saturating load from Debian's wrk, on one port or side by side on several, and its report read."""

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


def wrk(ports: list[int], seconds: int, *, run_base: int, token: str) -> WrkResult:
    """Saturate with wrk, C so the load generator is never the bottleneck: 64 connections in all.

    With several ports (one web process each), one wrk per port takes an equal share of the connections,
    as a load balancer would spread them.
    """
    share = CONNECTIONS // len(ports)
    runs = [
        subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{share}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(HERE / "ratings.lua"),
                f"http://127.0.0.1:{port}/webhooks/bringg",
                "--",
                # Each port's ids 10**7 apart (more than a run sends): every webhook is a new rating.
                str(run_base + n * 10**7),
                token,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, port in enumerate(ports)
    ]
    results = []
    for process in runs:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"wrk exited with {process.returncode}")
        results.append(wrk_result(out))
    return combined(results)


def combined(results: list[WrkResult]) -> WrkResult:
    """Runs side by side as one: throughputs and failures add up, the worst p99 stands for all."""
    return WrkResult(
        sum(result.rps for result in results),
        max(result.p99_ms for result in results),
        sum(result.non_2xx for result in results),
    )


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
