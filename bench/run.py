"""`make bench`: the relay's speed against targets, each labelled relative (to this run) or fixed.

A relative target is set by a reference measured in the same run; a fixed one is a limit. Prints one table
and writes it, with the commit and machine it ran on, to bench/RESULTS.md; exits 1, naming each one, when a
target is missed. `--quick` runs every phase on small sizes (a smoke test of the harness: its figures are
not the ones to report, and a missed target is named but does not fail it).
"""

import argparse
import asyncio
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

from bench.loadgen import run_at_rate
from bench.procs import free_port, memory_mb, relay, started
from bench.seed import seed
from relay.domain.rating import format_instant
from relay.store import create_store
from scripts.revision import revision

HERE = Path(__file__).resolve().parent
TOKEN = "bench-webhook-token-0123456789"
SIM_LOGIN = {"QUIVO_API_KEY": "sim-key", "QUIVO_USERNAME": "sim-user", "QUIVO_PASSWORD": "sim-pass"}


@dataclass(frozen=True)
class Sizes:
    saturate_s: int
    fixed_rate_s: int
    drain: int
    drain_latency: int
    scale_rows: int
    e2e_s: int


FULL = Sizes(
    saturate_s=10, fixed_rate_s=10, drain=100_000, drain_latency=100_000, scale_rows=1_000_000, e2e_s=15
)
QUICK = Sizes(saturate_s=3, fixed_rate_s=3, drain=5_000, drain_latency=3_000, scale_rows=50_000, e2e_s=3)


@dataclass(frozen=True)
class Target:
    """What a figure must reach, and against what: a reference this run measured, or a fixed limit."""

    relative: bool
    text: str

    def __str__(self) -> str:
        return f"{'relative' if self.relative else 'fixed'}: {self.text}"


def relative(text: str) -> Target:
    """A target set by a reference measured in the same run (the bare app, the empty store, ...)."""
    return Target(True, text)


def fixed(text: str) -> Target:
    """A target that is a fixed limit, whatever else the run measured."""
    return Target(False, text)


@dataclass
class Row:
    """One line of the results table."""

    measure: str
    value: str
    target: Target | None  # None: a figure reported, with no target
    met: bool | None


def missed(rows: Sequence[Row]) -> list[str]:
    """One line per missed target, naming the measure, its value and the target."""
    return [
        f"MISSED {row.measure.strip()}: {row.value}, target {row.target}" for row in rows if row.met is False
    ]


class Bench:
    def __init__(self, sizes: Sizes, workdir: Path) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.rows: list[Row] = []
        self.peak_rss_mb: dict[str, float] = {}
        self.figures: dict[str, float] = {}

    def add(self, measure: str, value: str, target: Target | None = None, met: bool | None = None) -> None:
        self.rows.append(Row(measure, value, target, met))
        mark = {True: "ok", False: "MISSED", None: ""}[met]
        print(f"  {measure:<58} {value:>16}  {target or ''!s:<38} {mark}", flush=True)

    def relay_env(self, database: Path, port: int, **extra: str) -> dict[str, str]:
        return {
            "DATABASE_URL": f"sqlite:///{database}",
            "PORT": str(port),
            "RELAY_HOST": "127.0.0.1",
            # A `relay worker` listens too: not on its default port, which another run may hold.
            "RELAY_WORKER_HOST": "127.0.0.1",
            "RELAY_WORKER_PORT": str(free_port()),
            "BRINGG_WEBHOOK_TOKEN": TOKEN,
            "RELAY_INQUIRY_ID_PATTERN": r"^INQ-(\d+)$",
            **extra,
        }

    # 1. Ingest ----------------------------------------------------------------------------------

    def ingest(self) -> None:
        print(
            "\n1. Ingest: a bare aiohttp app, then relay serve --no-worker (authenticated, distinct ratings)"
        )
        port = free_port()
        bare_cmd = [sys.executable, str(HERE / "bare_app.py"), "--port", str(port)]
        with started(
            bare_cmd, env={}, log=self.workdir / "bare.log", ready_url=f"http://127.0.0.1:{port}/healthz"
        ):
            wrk(port, 2, run_base=0)
            bare = wrk(port, self.sizes.saturate_s, run_base=0)
        database = self.workdir / "ingest.db"
        relay_run = self.relay_ingest(database, label="empty")
        self.add("bare app throughput (req/s)", f"{bare.rps:,.0f}")
        self.add(
            "relay throughput (req/s)",
            f"{relay_run.rps:,.0f}",
            relative(">= 0.75 x the bare app's"),
            relay_run.rps >= 0.75 * bare.rps,
        )
        self.add("  ratio relay / bare", f"{relay_run.rps / bare.rps:.2f}")
        self.add("bare p99 at saturation (ms)", f"{bare.p99_ms:.2f}")
        self.add(
            "relay p99 at saturation (ms)",
            f"{relay_run.p99_ms:.2f}",
            relative("<= 3 x the bare app's p99"),
            relay_run.p99_ms <= 3 * bare.p99_ms,
        )
        self.add("relay non-2xx at saturation", str(relay_run.non_2xx), fixed("0"), relay_run.non_2xx == 0)
        self.figures["ingest_rps_empty"] = relay_run.rps
        port = free_port()
        env = self.relay_env(self.workdir / "fixed.db", port)
        with started(
            relay("serve", "--no-worker"),
            env=env,
            log=self.workdir / "fixed.log",
            ready_url=f"http://127.0.0.1:{port}/readyz?scope=intake",
        ) as process:
            url = f"http://127.0.0.1:{port}/webhooks/bringg"
            asyncio.run(run_at_rate(url, rate=1000, seconds=1, token=TOKEN, first_rating_id=10**9))
            at_rate = asyncio.run(
                run_at_rate(
                    url, rate=1000, seconds=self.sizes.fixed_rate_s, token=TOKEN, first_rating_id=2 * 10**9
                )
            )
            self.note_memory("ingest", process.pid)
        self.add("relay p50 at 1,000 req/s (ms)", f"{at_rate.percentile(0.50):.2f}")
        self.add(
            "relay p99 at 1,000 req/s (ms)",
            f"{at_rate.percentile(0.99):.2f}",
            fixed("<= 10 ms"),
            at_rate.percentile(0.99) <= 10,
        )
        self.add("relay non-2xx at 1,000 req/s", str(at_rate.non_2xx), fixed("0"), at_rate.non_2xx == 0)

    def relay_ingest(self, database: Path, *, label: str) -> "WrkResult":
        port = free_port()
        env = self.relay_env(database, port)
        with started(
            relay("serve", "--no-worker"),
            env=env,
            log=self.workdir / f"ingest-{label}.log",
            ready_url=f"http://127.0.0.1:{port}/readyz?scope=intake",
        ) as process:
            wrk(port, 2, run_base=3 * 10**9)
            result = wrk(port, self.sizes.saturate_s, run_base=4 * 10**9)
            self.note_memory("ingest", process.pid)
        return result

    # 2. Drain -----------------------------------------------------------------------------------

    def drain(self) -> None:
        print("\n2. Drain: relay worker against relay sim-quivo")
        rate = self.drain_rate("no-latency", self.sizes.drain, latency_ms=0)
        self.add(
            f"drain, no added latency ({self.sizes.drain:,} deliveries/s)",
            f"{rate:,.0f}",
            fixed(">= 2,000/s"),
            rate >= 2000,
        )
        self.figures["drain_rate"] = rate
        rate = self.drain_rate("latency-50ms", self.sizes.drain_latency, latency_ms=50)
        ceiling = 64 / 0.05
        self.add(
            f"drain, 50 ms latency, concurrency 64 ({self.sizes.drain_latency:,})",
            f"{rate:,.0f}",
            fixed(f">= 0.8 x {ceiling:,.0f}/s (64 sends / 50 ms)"),
            rate >= 0.8 * ceiling,
        )

    def drain_rate(self, label: str, count: int, *, latency_ms: int) -> float:
        database = self.workdir / f"drain-{label}.db"
        seed(database, count, state="pending")
        sim_port = free_port()
        sim_cmd = relay("sim-quivo", "--port", str(sim_port), "--latency-ms", str(latency_ms))
        with started(sim_cmd, env={}, log=self.workdir / f"sim-{label}.log", ready_url=None):
            time.sleep(1)
            env = {
                **self.relay_env(database, free_port()),
                **SIM_LOGIN,
                "QUIVO_BASE_URL": f"http://127.0.0.1:{sim_port}",
                "QUIVO_MAX_CONCURRENCY": "64",
                "QUIVO_MAX_RPS": "100000",
            }
            with started(relay("worker"), env=env, log=self.workdir / f"worker-{label}.log") as process:
                began = time.perf_counter()
                samples = []
                while (done := count_state(database, "delivered")) < count:
                    if process.poll() is not None:
                        raise RuntimeError(f"worker exited with {process.returncode}")
                    samples.append((done, memory_mb(process.pid)[0]))
                    time.sleep(0.25)
                elapsed = time.perf_counter() - began
                self.note_memory(f"drain {label}", process.pid)
        rss = [mb for done, mb in samples if done > 0]
        if len(rss) >= 3:
            third = len(rss) // 3
            early, late = max(rss[:third]), max(rss[-third:])
            self.add(
                f"  worker RSS early / late in drain ({label}, MB)",
                f"{early:.0f} / {late:.0f}",
                relative("flat: late <= early + 20"),
                late <= early + 20,
            )
        return count / elapsed

    # 3. Memory ----------------------------------------------------------------------------------

    def note_memory(self, phase: str, pid: int) -> None:
        self.peak_rss_mb[phase] = max(self.peak_rss_mb.get(phase, 0.0), memory_mb(pid)[1])

    def memory(self) -> None:
        print("\n3. Memory: peak RSS of the relay processes")
        for phase, peak in self.peak_rss_mb.items():
            self.add(f"peak RSS, {phase} (MB)", f"{peak:.0f}", fixed("<= 150 MB"), peak <= 150)

    # 4. Scale of the store ----------------------------------------------------------------------

    def scale(self) -> None:
        rows = self.sizes.scale_rows
        print(f"\n4. Scale: the same with {rows:,} delivered rows already stored")
        big = self.workdir / "scale.db"
        began = time.perf_counter()
        seed(big, rows, state="delivered", first_rating_id=1, merchant_id=99)
        print(f"  (seeded {rows:,} rows in {time.perf_counter() - began:.0f} s)")
        loaded = self.relay_ingest(big, label="loaded")
        empty_rps = self.figures["ingest_rps_empty"]
        self.add(
            "ingest throughput, loaded / empty",
            f"{loaded.rps / empty_rps:.2f}",
            relative(">= 0.80"),
            loaded.rps >= 0.8 * empty_rps,
        )
        empty_claims = claims_per_second(self.workdir / "claim-empty.db", None)
        loaded_claims = claims_per_second(self.workdir / "claim-loaded.db", big)
        self.add("claims of 64 per second, empty", f"{empty_claims:,.0f}")
        self.add(
            "claims of 64 per second, loaded / empty",
            f"{loaded_claims / empty_claims:.2f}",
            relative(">= 0.80"),
            loaded_claims >= 0.8 * empty_claims,
        )

    # 5. End to end ------------------------------------------------------------------------------

    def end_to_end(self) -> None:
        print("\n5. End to end: relay serve (with worker) + sim-quivo, 200 ratings/s")
        database = self.workdir / "e2e.db"
        sim_port, port = free_port(), free_port()
        with started(relay("sim-quivo", "--port", str(sim_port)), env={}, log=self.workdir / "sim-e2e.log"):
            time.sleep(1)
            env = {
                **self.relay_env(database, port),
                **SIM_LOGIN,
                "QUIVO_BASE_URL": f"http://127.0.0.1:{sim_port}",
                "QUIVO_MAX_RPS": "1000",
            }
            with started(
                relay("serve"),
                env=env,
                log=self.workdir / "e2e.log",
                ready_url=f"http://127.0.0.1:{port}/readyz",
            ) as process:
                url = f"http://127.0.0.1:{port}/webhooks/bringg"
                load = asyncio.run(
                    run_at_rate(
                        url, rate=200, seconds=self.sizes.e2e_s, token=TOKEN, first_rating_id=5 * 10**9
                    )
                )
                deadline = time.monotonic() + 60
                while count_state(database, "delivered") < load.sent and time.monotonic() < deadline:
                    time.sleep(0.2)
                self.note_memory("end to end", process.pid)
        latencies = accepted_to_delivered_ms(database)
        self.add(f"accepted -> delivered p50 (ms, {len(latencies):,} ratings)", f"{pct(latencies, 0.5):.1f}")
        self.add("accepted -> delivered p99 (ms)", f"{pct(latencies, 0.99):.1f}")
        self.add(
            "ratings delivered / sent",
            f"{len(latencies)} / {load.sent}",
            fixed("all"),
            len(latencies) == load.sent,
        )


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p99_ms: float
    non_2xx: int


def wrk(port: int, seconds: int, *, run_base: int) -> WrkResult:
    """Saturate with wrk (one thread, 64 connections): C, so the load generator is never the bottleneck."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            "-c64",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / "ratings.lua"),
            f"http://127.0.0.1:{port}/webhooks/bringg",
            "--",
            str(run_base),
            TOKEN,
        ],
        capture_output=True,
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


def count_state(database: Path, state: str) -> int:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = ?", (state,)).fetchone()[0])
    finally:
        conn.close()


def accepted_to_delivered_ms(database: Path) -> list[float]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT created_at, delivered_at FROM deliveries WHERE state = 'delivered'"
        ).fetchall()
    finally:
        conn.close()
    return sorted(
        (datetime.fromisoformat(done) - datetime.fromisoformat(accepted)).total_seconds() * 1000
        for accepted, done in rows
    )


def pct(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def claims_per_second(database: Path, copy_from: Path | None, pending: int = 20_000) -> float:
    """Claim a backlog in batches of 64, in-process: the worker's store round trip alone."""
    if copy_from is not None:
        source = sqlite3.connect(copy_from)
        target = sqlite3.connect(database)
        source.backup(target)
        source.close()
        target.close()
    seed(database, pending, state="pending", first_rating_id=10**8)

    async def run() -> float:
        store = create_store(f"sqlite:///{database}", timeout_s=30, pool_size=1)
        await store.open()
        try:
            now = datetime.now(UTC) + timedelta(seconds=1)
            began, claims = time.perf_counter(), 0
            while await store.claim_due(now=now, lease_until=now + timedelta(minutes=5), limit=64):
                claims += 1
            return claims / (time.perf_counter() - began)
        finally:
            await store.close()

    return asyncio.run(run())


def machine() -> str:
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("aiohttp", "aiosqlite", "pydantic", "structlog", "prometheus-client")
    )
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" [")[0]
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {versions}, {wrk_version}"
    )


def write_results(bench: Bench, path: Path, *, quick: bool, took_s: float, commit: str) -> None:
    """The table of this run alone, with the commit and machine it ran on and every missed target."""
    misses = missed(bench.rows)
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench{'-quick` (small sizes)' if quick else '`'} from its own run alone: run"
        f" {format_instant(datetime.now(UTC))[:19]}Z in {took_s:.0f} s on commit {commit},"
        f" on: {machine()}.",
        "",
        "A target is either *relative* (to a reference measured in this same run: the bare app, the empty",
        "store, the same drain's early memory) or *fixed* (a limit, whatever else the run measured). Timings",
        "on shared machines vary from run to run. Earlier runs and comparisons: bench/HISTORY.md.",
        "",
        f"Missed targets: {len(misses) or 'none'}.",
        *(f"- {miss}" for miss in misses),
        "",
        "| measure | value | target | met |",
        "| --- | ---: | --- | --- |",
    ]
    for row in bench.rows:
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append(f"| {row.measure.strip()} | {row.value} | {row.target or ''} | {met} |")
    path.write_text("\n".join(lines) + "\n")


def exit_status(rows: Sequence[Row], *, quick: bool) -> int:
    """1 when a target was missed; a quick run checks the harness, not the relay, so it passes regardless."""
    return 1 if missed(rows) and not quick else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: check the harness, not the relay")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    bench = Bench(QUICK if args.quick else FULL, workdir)
    commit = revision()  # once, as the run starts: what it measures
    print(f"Benchmarking commit {commit} in {workdir} on {machine()}")
    began = time.perf_counter()
    phases: list[Callable[[], None]] = [
        bench.ingest,
        bench.drain,
        bench.scale,
        bench.end_to_end,
        bench.memory,
    ]
    for phase in phases:
        phase()
    took = time.perf_counter() - began
    write_results(bench, args.out, quick=args.quick, took_s=took, commit=commit)
    print(f"\nWrote {args.out} ({took:.0f} s). Logs in {workdir}.")
    for miss in missed(bench.rows):
        print(miss, file=sys.stderr)
    status = exit_status(bench.rows, quick=args.quick)
    if missed(bench.rows) and not status:
        print("(a --quick run: missed targets do not fail it)", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
