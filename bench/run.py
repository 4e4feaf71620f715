"""`make bench`: the relay's speed on SQLite and on PostgreSQL against targets, relative or fixed.

A relative target is set by a reference measured in the same run (the bare app, the naive receiver, the
bare client, the empty store, one worker, the other backend); a fixed one is a limit. Prints the rows as
they come and writes a table per backend, and one across them, with the commit and machine, to
bench/RESULTS.md; exits 1, naming each one, when a target is missed. PostgreSQL runs on a throwaway server
of the run's own. `--quick` runs every phase on small sizes (a smoke test of the harness: its figures are
not the ones to report, and a missed target is named but does not fail it).
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.backends import Backend, SqliteFiles, postgres_server
from bench.bare_client import post_ratings
from bench.loadgen import LoadResult, run_at_rate
from bench.paced import run_paced
from bench.procs import cpu_s, family_cpu_s, free_port, memory_mb, relay, started
from bench.results import Row, Target, exit_status, fixed, machine, missed, relative, write_results
from bench.seed import opened, seed
from bench.steal import stolen
from bench.wrk import WrkResult, wrk
from relay.store.api import Store
from relay.store.records import Outcome
from relay.store.records import Row as StoredRow
from scripts.revision import revision
from tests.pg_server import PostgresServer

HERE = Path(__file__).resolve().parent
TOKEN = "bench-webhook-token-0123456789"
SIM_LOGIN = {"QUIVO_API_KEY": "sim-key", "QUIVO_USERNAME": "sim-user", "QUIVO_PASSWORD": "sim-pass"}
CONCURRENCY = 64  # QUIVO_MAX_CONCURRENCY of each draining worker, and the bare client's
RATE_RUNS = 3  # runs at 1,000 req/s: the p99 target holds in each, so one lucky run does not pass it
REFERENCE = (
    "References: the bare app (the ceiling), the naive receiver and probe, a FastAPI receiver, "
    "the bare client (drain)"
)
ACROSS = "PostgreSQL against SQLite, in this run"


@dataclass(frozen=True)
class Sizes:
    saturate_s: int
    fixed_rate_s: int
    drain: int
    drain_latency: int  # per worker: n workers drain n times as many
    scale_rows: int
    e2e_s: int


FULL = Sizes(
    saturate_s=10, fixed_rate_s=10, drain=10_000, drain_latency=4_000, scale_rows=1_000_000, e2e_s=10
)
QUICK = Sizes(saturate_s=3, fixed_rate_s=3, drain=3_000, drain_latency=1_500, scale_rows=50_000, e2e_s=3)
# Web processes for ingest and workers for the 50 ms drain: SQLite admits one worker per database.
WEB_PROCESSES = {"SQLite": (1, 2), "PostgreSQL": (1, 2)}
WORKERS = {"SQLite": (1,), "PostgreSQL": (1, 2, 3)}


@dataclass(frozen=True)
class RateRun:
    """One run at 1,000 req/s: the relay's load, the bare app's just before, the host's steal during it."""

    relay: LoadResult
    bare: LoadResult
    steal: float


class Bench:
    def __init__(self, sizes: Sizes, workdir: Path) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.rows: list[Row] = []
        self.peak_rss_mb: dict[str, dict[str, float]] = {}
        self.figures: dict[str, float] = {}
        # Called before each timed measure (see settled): main adds the run's PostgreSQL server's checkpoint.
        self.settle: Callable[[], None] = os.sync

    def add(
        self, table: str, measure: str, value: str, target: Target | None = None, met: bool | None = None
    ) -> None:
        self.rows.append(Row(table, measure, value, target, met))
        mark = {True: "ok", False: "MISSED", None: ""}[met]
        print(f"  {table[:10]:<10} {measure:<58} {value:>16}  {target or ''!s:<38} {mark}", flush=True)

    def add_steal(self, table: str, during: str, share: float, *, indent: str = "") -> None:
        """The host's steal over a phase or a run (a share of the cores' time), as a row of its own."""
        self.add(table, f"{indent}CPU taken by the host during {during} (steal, %)", f"{100 * share:.1f}")

    def relay_env(self, url: str, port: int, **extra: str) -> dict[str, str]:
        return {
            "DATABASE_URL": url,
            "PORT": str(port),
            "RELAY_HOST": "127.0.0.1",
            # A `relay worker` listens too: not on its default port, which another run may hold.
            "RELAY_WORKER_HOST": "127.0.0.1",
            "RELAY_WORKER_PORT": str(free_port()),
            "BRINGG_WEBHOOK_TOKEN": TOKEN,
            "RELAY_INQUIRY_ID_PATTERN": r"^INQ-(\d+)$",
            **extra,
        }

    @contextmanager
    def web(self, url: str, processes: int, *, table: str, phase: str) -> Iterator[int]:
        """`relay serve --no-worker --processes N` on one database, once every process serves; its port."""
        port = free_port()
        log = self.workdir / f"{table}-{phase}-web.log".replace(" ", "-")
        with started(
            relay("serve", "--no-worker", "--processes", str(processes)),
            env=self.relay_env(url, port),
            log=log,
            ready_url=f"http://127.0.0.1:{port}/readyz?scope=intake",
        ) as process:
            if processes > 1:
                wait_serving(log, processes)
            yield port
            for pid in web_processes(process.pid):
                self.note_memory(table, phase, pid)

    # 0. The references --------------------------------------------------------------------------

    def reference(self) -> None:
        print("\n0. The references: the bare app, the naive receiver and probe, FastAPI, the bare client")
        self.receivers(REFERENCE)
        rate = self.bare_client()
        self.add(REFERENCE, f"bare client: ratings posted at {CONCURRENCY} at a time (/s)", f"{rate:,.0f}")
        self.figures["bare_client"] = rate

    def receivers(self, table: str) -> None:
        """The naive receiver, the probe (after a FastAPI receiver in the references), then the bare app, each
        saturated; their figures under `table`.

        A backend's ingest measures them again right before its relay, which is judged against those: the
        machine's speed drifts within a run (the probe read 0.33 x the bare app in one, 0.46-0.50 in three).
        """
        # The same receiver committing each webhook, then each batch: the second is what group commit allows.
        receivers = [
            ("naive", "naive receiver", ["naive_app.py", "--commit", "each"]),
            ("probe", "group-commit probe", ["naive_app.py", "--commit", "batch"]),
        ]
        if table == REFERENCE:
            # Only at the run's start: nothing is judged against it, and it is far below the others.
            receivers.insert(0, ("fastapi", "FastAPI + aiosqlite receiver", ["fastapi_app.py"]))
        results, phase = {}, "reference" if table == REFERENCE else table.lower()
        for name, _, (script, *options) in receivers:
            database = str(self.workdir / f"{phase}-{name}.db")
            args = [str(HERE / script), "--database", database, "--token", TOKEN, *options]
            results[name] = self.receiver(name, args)
        # Last, so the relay's run follows the ceiling it is judged against.
        bare = self.receiver("bare", [str(HERE / "bare_app.py")])
        self.add(table, "bare app throughput (req/s)", f"{bare.rps:,.0f}")
        self.add(table, "bare p99 at saturation (ms)", f"{bare.p99_ms:.2f}")
        self.figures[f"{table} bare_rps"], self.figures[f"{table} bare_p99_ms"] = bare.rps, bare.p99_ms
        for name, label, _ in receivers:
            result = results[name]
            self.add(table, f"{label} throughput (req/s)", f"{result.rps:,.0f}")
            self.add(table, f"  ratio {name} / bare", f"{result.rps / bare.rps:.2f}")
            self.add(table, f"{name} p99 at saturation (ms)", f"{result.p99_ms:.2f}")
            self.add(table, f"{name} non-2xx at saturation", str(result.non_2xx))
            self.figures[f"{table} {name}_rps"] = result.rps

    def receiver(self, name: str, args: list[str]) -> WrkResult:
        """Saturation of a reference receiver: a script of bench/ and its arguments but --port."""
        with self.serving(name, args) as port:
            wrk(port, 2, run_base=0, token=TOKEN)
            self.settle()
            return wrk(port, self.sizes.saturate_s, run_base=10**9, token=TOKEN)

    @contextmanager
    def serving(self, name: str, args: list[str]) -> Iterator[int]:
        """A reference receiver (a script of bench/ and its arguments but --port) until the block ends; its
        port."""
        port = free_port()
        cmd = [sys.executable, *args, "--port", str(port)]
        ready = f"http://127.0.0.1:{port}/healthz"
        with started(cmd, env={}, log=self.workdir / f"{name}.log", ready_url=ready):
            yield port

    def bare_client(self) -> float:
        """Ratings per second the bare client posts to a stand-in with no added latency."""
        sim_port = free_port()
        sim_cmd = relay("sim-quivo", "--port", str(sim_port))
        ready = f"http://127.0.0.1:{sim_port}/_sim/stats"
        with started(sim_cmd, env={}, log=self.workdir / "sim-bare-client.log", ready_url=ready):
            base = f"http://127.0.0.1:{sim_port}"
            count = self.sizes.drain
            return asyncio.run(post_ratings(base, count, concurrency=CONCURRENCY, login=SIM_LOGIN))

    # 1. Ingest ----------------------------------------------------------------------------------

    def saturate(self, backend: Backend) -> None:
        print(f"\n1. Ingest on {backend.name}: relay serve --no-worker (authenticated, distinct ratings)")
        table = backend.name
        for processes in WEB_PROCESSES[backend.name]:
            if processes == 1:
                self.receivers(table)
            result = self.relay_ingest(backend.fresh("ingest"), processes, table=table)
            self.figures[f"{table} ingest rps x{processes}"] = result.rps
            if processes > 1:
                one = self.figures[f"{table} ingest rps x1"]
                self.add(
                    table,
                    f"relay throughput, `relay serve --processes {processes}` on one port (req/s)",
                    f"{result.rps:,.0f}",
                )
                self.add(table, f"  ratio {processes} web processes / 1", f"{result.rps / one:.2f}")
                self.add(
                    table, f"relay p99 at saturation, {processes} web processes (ms)", f"{result.p99_ms:.2f}"
                )
                self.add(
                    table,
                    f"relay non-2xx at saturation, {processes} web processes",
                    str(result.non_2xx),
                    fixed("0"),
                    result.non_2xx == 0,
                )
                continue
            self.judge_ingest(table, result)

    def judge_ingest(self, table: str, result: WrkResult) -> None:
        """One web process at saturation against the references measured right before it (issue 11's
        targets)."""
        bare_rps, bare_p99 = self.figures[f"{table} bare_rps"], self.figures[f"{table} bare_p99_ms"]
        naive_rps = self.figures[f"{table} naive_rps"]
        self.add(
            table,
            "relay throughput (req/s)",
            f"{result.rps:,.0f}",
            relative(">= 0.5 x the bare app's"),
            result.rps >= 0.5 * bare_rps,
        )
        self.add(table, "  ratio relay / bare", f"{result.rps / bare_rps:.2f}")
        self.add(
            table,
            "  ratio relay / naive",
            f"{result.rps / naive_rps:.2f}",
            relative(">= 1.5 (the naive receiver's)"),
            result.rps >= 1.5 * naive_rps,
        )
        probe_rps = self.figures[f"{table} probe_rps"]
        self.add(table, "  ratio relay / group-commit probe", f"{result.rps / probe_rps:.2f}")
        self.add(
            table,
            "relay p99 at saturation (ms)",
            f"{result.p99_ms:.2f}",
            relative("<= 3 x the bare app's p99"),
            result.p99_ms <= 3 * bare_p99,
        )
        self.add(table, "relay non-2xx at saturation", str(result.non_2xx), fixed("0"), result.non_2xx == 0)

    def relay_ingest(self, url: str, processes: int, *, table: str) -> WrkResult:
        """Saturation throughput of `processes` web processes on one port and one database."""
        phase = "ingest" if processes == 1 else f"ingest, {processes} web processes"
        with self.web(url, processes, table=table, phase=phase) as port:
            wrk(port, 2, run_base=3 * 10**9, token=TOKEN)
            self.settle()
            return wrk(port, self.sizes.saturate_s, run_base=4 * 10**9, token=TOKEN)

    def at_rate(self, backend: Backend) -> None:
        print(f"\n1b. Ingest on {backend.name} at 1,000 req/s (open loop, wrk paced), {RATE_RUNS} runs")
        table = backend.name
        runs: list[RateRun] = []
        with (
            self.web(backend.fresh("fixed"), 1, table=table, phase="ingest") as port,
            self.serving("bare-at-rate", [str(HERE / "bare_app.py")]) as bare,
        ):
            run_paced(port, rate=1000, seconds=1, token=TOKEN, first_rating_id=10**9)
            run_paced(bare, rate=1000, seconds=1, token=TOKEN, first_rating_id=10**9)
            seconds = self.sizes.fixed_rate_s
            for n in range(RATE_RUNS):
                # The bare app at the same rate right before: what the machine allowed any server then.
                beside = run_paced(bare, rate=1000, seconds=seconds, token=TOKEN, first_rating_id=10**9)
                self.settle()
                with stolen() as steal:
                    load = run_paced(
                        port, rate=1000, seconds=seconds, token=TOKEN, first_rating_id=(2 + n) * 10**9
                    )
                runs.append(RateRun(load, beside, steal.share))
        self.judge_at_rate(table, runs)

    def judge_at_rate(self, table: str, runs: list[RateRun]) -> None:
        """Each run at 1,000 req/s on its own rows: the p99 and non-2xx targets hold in every one. Beside
        each, the bare app's p99 just before and the host's steal during it: a run on a machine that was
        not all its own shows it."""
        for n, run in enumerate(runs, 1):
            load = run.relay
            self.add(table, f"relay p50 at 1,000 req/s, run {n} (ms)", f"{load.percentile(0.50):.2f}")
            self.add(
                table,
                f"relay p99 at 1,000 req/s, run {n} (ms)",
                f"{load.percentile(0.99):.2f}",
                fixed("<= 10 ms"),
                load.percentile(0.99) <= 10,
            )
            self.add(
                table,
                f"relay non-2xx at 1,000 req/s, run {n}",
                str(load.non_2xx),
                fixed("0"),
                load.non_2xx == 0,
            )
            self.add(
                table,
                f"  bare app p99 at 1,000 req/s, just before run {n} (ms)",
                f"{run.bare.percentile(0.99):.2f}",
            )
            self.add_steal(table, f"run {n}", run.steal, indent="  ")

    # 2. Drain -----------------------------------------------------------------------------------

    def drain(self, backend: Backend) -> None:
        print(f"\n2. Drain on {backend.name}: relay worker against relay sim-quivo")
        table = backend.name
        rate = self.drain_rate(backend, self.sizes.drain, workers=1, latency_ms=0)
        self.add(table, f"drain, no added latency ({self.sizes.drain:,} deliveries/s)", f"{rate:,.0f}")
        client = self.figures[f"{table} bare client"]
        self.add(table, "bare client against the same stand-in, just before (/s)", f"{client:,.0f}")
        self.add(
            table,
            "  ratio drain, no added latency / bare client",
            f"{rate / client:.2f}",
            relative(">= 0.5 (the bare client's)"),
            rate >= 0.5 * client,
        )
        self.figures[f"{table} drain"] = rate
        for workers in WORKERS[backend.name]:
            count = self.sizes.drain_latency * workers
            rate = self.drain_rate(backend, count, workers=workers, latency_ms=50)
            ceiling = workers * CONCURRENCY / 0.05
            self.figures[f"{table} drain 50ms x{workers}"] = rate
            self.add(
                table,
                f"drain, 50 ms latency, {workers} worker(s) x {CONCURRENCY} ({count:,} deliveries/s)",
                f"{rate:,.0f}",
                fixed(f">= 0.8 x {ceiling:,.0f}/s ({CONCURRENCY} sends / 50 ms)") if workers == 1 else None,
                rate >= 0.8 * ceiling if workers == 1 else None,
            )
            self.add(
                table,
                f"  ratio to {workers} x {CONCURRENCY} / 50 ms = {ceiling:,.0f}/s",
                f"{rate / ceiling:.2f}",
            )
        one = self.figures[f"{table} drain 50ms x1"]
        for workers in WORKERS[backend.name][1:]:
            ratio = self.figures[f"{table} drain 50ms x{workers}"] / one
            self.add(
                table,
                f"drain, 50 ms latency, {workers} workers / 1",
                f"{ratio:.2f}",
                relative(">= 1.70 x one worker's") if workers == 2 else None,
                ratio >= 1.7 if workers == 2 else None,
            )

    def drain_rate(self, backend: Backend, count: int, *, workers: int, latency_ms: int) -> float:
        """Deliveries per second of `workers` workers draining a backlog of `count`, once all are up."""
        label = f"{backend.name}-drain-{latency_ms}ms-{workers}"
        phase = (
            f"drain, {f'{latency_ms} ms latency' if latency_ms else 'no added latency'}, {workers} worker(s)"
        )
        url = backend.fresh(label)
        seed(url, count, state="pending")
        self.settle()
        sim_port = free_port()
        sim_cmd = relay("sim-quivo", "--port", str(sim_port), "--latency-ms", str(latency_ms))
        with ExitStack() as stack:
            sim = stack.enter_context(
                started(
                    sim_cmd,
                    env={},
                    log=self.workdir / f"sim-{label}.log",
                    ready_url=f"http://127.0.0.1:{sim_port}/_sim/stats",
                )
            )
            if latency_ms == 0:
                # The reference, against this very stand-in moments before the worker: a machine whose speed
                # drifts over the run moves both alike. Its inquiries are none of the backlog's.
                base = f"http://127.0.0.1:{sim_port}"
                client_before, sim_before = time.process_time(), cpu_s(sim.pid)
                self.figures[f"{backend.name} bare client"] = asyncio.run(
                    post_ratings(base, count, concurrency=CONCURRENCY, login=SIM_LOGIN, first_inquiry=10**8)
                )
                client_us = 1e6 * (time.process_time() - client_before) / count
                sim_us = 1e6 * (cpu_s(sim.pid) - sim_before) / count
                self.add(
                    backend.name,
                    "  CPU per post of the bare client: client / stand-in (us)",
                    f"{client_us:.0f} / {sim_us:.0f}",
                )
            processes = []
            for n in range(workers):
                env = {
                    **self.relay_env(url, free_port()),
                    **SIM_LOGIN,
                    "QUIVO_BASE_URL": f"http://127.0.0.1:{sim_port}",
                    "QUIVO_MAX_CONCURRENCY": str(CONCURRENCY),
                    "QUIVO_MAX_RPS": "100000",
                }
                processes.append(
                    stack.enter_context(
                        started(
                            relay("worker"),
                            env=env,
                            log=self.workdir / f"worker-{label}-{n + 1}.log",
                            ready_url=f"http://127.0.0.1:{env['RELAY_WORKER_PORT']}/healthz",
                        )
                    )
                )
            # Where the CPU of the machine goes, per delivery: the workers, the stand-in, the server if any.
            meters = [lambda: sum(cpu_s(process.pid) for process in processes), lambda: cpu_s(sim.pid)]
            server = backend.server_pid()
            if server is not None:
                meters.append(lambda: family_cpu_s(server))
            drained = asyncio.run(watch_drain(url, count, processes, meters))
            rate, samples = drained.rate, drained.samples
            for process in processes:
                self.note_memory(backend.name, phase, process.pid)
        if latency_ms == 0:
            names = f"worker{'s' if workers > 1 else ''} / stand-in" + (
                f" / {backend.name}" if server is not None else ""
            )
            self.add(
                backend.name,
                f"  CPU per delivery, no added latency: {names} (us)",
                " / ".join(f"{us:.0f}" for us in drained.cpu_us),
            )
        rss = [mb for done, mb in samples if done > 0]
        if len(rss) >= 3:
            third = len(rss) // 3
            early, late = max(rss[:third]), max(rss[-third:])
            self.add(
                backend.name,
                f"  worker RSS early / late in {phase} (MB)",
                f"{early:.0f} / {late:.0f}",
                relative("flat: late <= early + 20"),
                late <= early + 20,
            )
        return rate

    # 3. Memory ----------------------------------------------------------------------------------

    def note_memory(self, table: str, phase: str, pid: int) -> None:
        peaks = self.peak_rss_mb.setdefault(table, {})
        peaks[phase] = max(peaks.get(phase, 0.0), memory_mb(pid)[1])

    def memory(self, backend: Backend) -> None:
        print(f"\n3. Memory on {backend.name}: peak RSS of the relay processes")
        for phase, peak in self.peak_rss_mb.get(backend.name, {}).items():
            self.add(backend.name, f"peak RSS, {phase} (MB)", f"{peak:.0f}", fixed("<= 150 MB"), peak <= 150)

    # 4. Scale of the store ----------------------------------------------------------------------

    def scale(self, backend: Backend) -> None:
        rows, table = self.sizes.scale_rows, backend.name
        print(f"\n4. Scale on {backend.name}: the same with {rows:,} delivered rows already stored")
        big = backend.fresh("scale")
        began = time.perf_counter()
        seed(big, rows, state="delivered", first_rating_id=1, merchant_id=99)
        self.add(table, f"seeding {rows:,} delivered rows (s)", f"{time.perf_counter() - began:.0f}")
        claim_loaded = backend.copy(big, "claim-loaded")
        loaded = self.relay_ingest(big, 1, table=table)
        empty_rps = self.figures[f"{table} ingest rps x1"]
        self.add(
            table,
            "ingest throughput, loaded / empty",
            f"{loaded.rps / empty_rps:.2f}",
            relative(">= 0.80"),
            loaded.rps >= 0.8 * empty_rps,
        )
        empty_claims = claims_per_second(backend.fresh("claim-empty"))
        loaded_claims = claims_per_second(claim_loaded)
        self.figures[f"{table} claims"] = empty_claims
        self.add(table, "claims of 64 per second, empty", f"{empty_claims:,.0f}")
        self.add(table, f"claims of 64 per second, {rows:,} delivered rows", f"{loaded_claims:,.0f}")
        self.add(
            table,
            "claims of 64 per second, loaded / empty",
            f"{loaded_claims / empty_claims:.2f}",
            relative(">= 0.80"),
            loaded_claims >= 0.8 * empty_claims,
        )

    # 5. End to end ------------------------------------------------------------------------------

    def end_to_end(self, backend: Backend) -> None:
        print(f"\n5. End to end on {backend.name}: relay serve (with worker) + sim-quivo, 200 ratings/s")
        table = backend.name
        url = backend.fresh("e2e")
        sim_port, port = free_port(), free_port()
        sim = relay("sim-quivo", "--port", str(sim_port))
        with started(
            sim,
            env={},
            log=self.workdir / f"sim-{table}-e2e.log",
            ready_url=f"http://127.0.0.1:{sim_port}/_sim/stats",
        ):
            env = {
                **self.relay_env(url, port),
                **SIM_LOGIN,
                "QUIVO_BASE_URL": f"http://127.0.0.1:{sim_port}",
                "QUIVO_MAX_RPS": "1000",
            }
            with started(
                relay("serve"),
                env=env,
                log=self.workdir / f"{table}-e2e.log",
                ready_url=f"http://127.0.0.1:{port}/readyz",
            ) as process:
                load = asyncio.run(
                    run_at_rate(
                        f"http://127.0.0.1:{port}/webhooks/bringg",
                        rate=200,
                        seconds=self.sizes.e2e_s,
                        token=TOKEN,
                        first_rating_id=5 * 10**9,
                    )
                )
                asyncio.run(wait_delivered(url, load.sent, deadline_s=60))
                self.note_memory(table, "end to end", process.pid)
        latencies = asyncio.run(accepted_to_delivered_ms(url))
        self.add(
            table, f"accepted -> delivered p50 (ms, {len(latencies):,} ratings)", f"{pct(latencies, 0.5):.1f}"
        )
        self.add(table, "accepted -> delivered p99 (ms)", f"{pct(latencies, 0.99):.1f}")
        self.add(
            table,
            "ratings delivered / sent",
            f"{len(latencies)} / {load.sent}",
            fixed("all"),
            len(latencies) == load.sent,
        )

    # 6. Across backends -------------------------------------------------------------------------

    def across(self) -> None:
        print("\n6. PostgreSQL against SQLite")
        sqlite, postgres = self.figures["SQLite ingest rps x1"], self.figures["PostgreSQL ingest rps x1"]
        self.add(
            ACROSS,
            "ingest, one web process: PostgreSQL / SQLite",
            f"{postgres / sqlite:.2f}",
            relative(">= 1.00 (SQLite's, this run)"),
            postgres >= sqlite,
        )
        two = self.figures["PostgreSQL ingest rps x2"]
        self.add(ACROSS, "ingest, two web processes on PostgreSQL / one on SQLite", f"{two / sqlite:.2f}")
        for measure, key in (
            ("drain, no added latency", "drain"),
            ("drain, 50 ms latency, one worker", "drain 50ms x1"),
            ("claims of 64 per second, empty", "claims"),
        ):
            ratio = self.figures[f"PostgreSQL {key}"] / self.figures[f"SQLite {key}"]
            self.add(ACROSS, f"{measure}: PostgreSQL / SQLite", f"{ratio:.2f}")


def settled(server: PostgresServer) -> None:
    """Before a timed measure, what earlier phases wrote reaches the disk now, not inside this one's commits:
    the server's dirty buffers (a checkpoint) and every file's dirty pages (sync). Without it, a run at
    1,000 req/s on SQLite right after PostgreSQL's ingest read a p99 of 27.9 ms, the next two 4.0 and 2.8."""
    server.sql("CHECKPOINT")
    os.sync()


def wait_serving(log: Path, processes: int, deadline_s: float = 30) -> None:
    """Until `processes` serving processes have each said so in the log."""
    deadline = time.monotonic() + deadline_s
    while log.read_text().count('"event": "relay.process_serving"') < processes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{processes} processes not serving within {deadline_s}s: see {log}")
        time.sleep(0.05)


def web_processes(pid: int) -> set[int]:
    """The processes serving webhooks: `pid`'s forked children, else itself (not SQLite's intake helper)."""
    forked = {
        int(child)
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if b"intake_process" not in Path(f"/proc/{child}/cmdline").read_bytes()
    }
    return forked or {pid}


async def delivered(store: Store) -> int:
    return (await store.deliveries_by_state())["delivered"]


@dataclass(frozen=True)
class Drained:
    """A drain watched: deliveries per second, the workers' largest RSS on the way (delivered so far, MB),
    and the CPU each meter counted per delivery (us), in the meters' order."""

    rate: float
    samples: list[tuple[int, float]]
    cpu_us: list[float]


async def watch_drain(
    url: str, count: int, workers: list[subprocess.Popen[bytes]], meters: Sequence[Callable[[], float]] = ()
) -> Drained:
    """The drain from now (every worker up) until the last of `count` is delivered; each of `meters` (CPU
    seconds used so far by some processes) is read as it begins and once all are delivered.

    The drain ends at the last delivery's own instant, not at the poll that saw it: a poll every 0.25 s
    would add up to 0.25 s to a drain of two or three seconds.
    """
    async with opened(url) as store:
        began, first = datetime.now(UTC), await delivered(store)
        cpu_before = [meter() for meter in meters]
        samples = []
        while (done := await delivered(store)) < count:
            for worker in workers:
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited with {worker.returncode}")
            samples.append((done, max(memory_mb(worker.pid)[0] for worker in workers)))
            await asyncio.sleep(0.25)
        drained = max(count - first, 1)  # none at all only if every one was delivered before the watch
        cpu_us = [
            1e6 * (meter() - before) / drained for meter, before in zip(meters, cpu_before, strict=True)
        ]
        finished = await last_delivered_at(store)
        return Drained((count - first) / (finished - began).total_seconds(), samples, cpu_us)


async def last_delivered_at(store: Store) -> datetime:
    """The instant the latest delivery was delivered (each worker stamps it as it stores the outcome)."""
    stamps: list[datetime] = [row["delivered_at"] for row in await delivered_rows(store)]
    return max(stamps)


async def delivered_rows(store: Store) -> list[StoredRow]:
    """Every delivered delivery's row, in id order."""
    return [
        row
        async for batch in store.export_rows("deliveries", batch_size=10_000)
        for row in batch
        if row["state"] == "delivered"
    ]


async def wait_delivered(url: str, count: int, *, deadline_s: float) -> None:
    """Until `count` deliveries are delivered or the deadline passes (the caller counts what was)."""
    deadline = time.monotonic() + deadline_s
    async with opened(url) as store:
        # Another process delivers: nothing here to wait on but the database itself.
        while await delivered(store) < count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)


async def accepted_to_delivered_ms(url: str) -> list[float]:
    """From acceptance to delivery, each delivered rating, in order."""
    async with opened(url) as store:
        latencies = [
            (row["delivered_at"] - row["created_at"]).total_seconds() * 1000
            for row in await delivered_rows(store)
        ]
    return sorted(latencies)


def pct(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def claims_per_second(url: str, pending: int = 10_000) -> float:
    """Claim a backlog in batches of 64, in-process: the worker's store round trip alone, timed.

    As on a worker, a batch is done with (its outcomes recorded, untimed) before the next is claimed, so
    only a batch at a time is in flight, not the whole backlog.
    """
    seed(url, pending, state="pending", first_rating_id=10**8)

    async def run() -> float:
        async with opened(url) as store:
            now = datetime.now(UTC) + timedelta(seconds=1)
            claiming, claims = 0.0, 0
            while True:
                began = time.perf_counter()
                leased = now + timedelta(minutes=5)
                batch = await store.claim_due("default", now=now, lease_until=leased, limit=64)
                claiming += time.perf_counter() - began
                if not batch:
                    return claims / claiming
                claims += 1
                done = [Outcome(claimed.id, "delivered", attempts=1, unconfirmed=False) for claimed in batch]
                await asyncio.gather(
                    *(store.record_outcome(outcome, leased_until=leased, now=now) for outcome in done)
                )

    return asyncio.run(run())


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
    with postgres_server() as postgres:
        backends: list[Backend] = [SqliteFiles(workdir), postgres]
        bench.settle = lambda: settled(postgres.server)
        with stolen() as steal:
            bench.reference()
        bench.add_steal(REFERENCE, "the references", steal.share)
        # Phase by phase, each backend in turn: the figures compared across them are measured minutes apart.
        # Each with the name its steal row gives it.
        phases: list[tuple[str, Callable[[Backend], None]]] = [
            ("ingest at saturation", bench.saturate),
            ("ingest at 1,000 req/s", bench.at_rate),
            ("the drains", bench.drain),
            ("the runs at scale", bench.scale),
            ("end to end", bench.end_to_end),
            ("memory", bench.memory),
        ]
        for name, phase in phases:
            for backend in backends:
                with stolen() as steal:
                    phase(backend)
                bench.add_steal(backend.name, name, steal.share)
        bench.across()
    took = time.perf_counter() - began
    write_results(bench.rows, args.out, quick=args.quick, took_s=took, commit=commit, machine=machine())
    print(f"\nWrote {args.out} ({took:.0f} s). Logs in {workdir}.")
    for miss in missed(bench.rows):
        print(miss, file=sys.stderr)
    status = exit_status(bench.rows, quick=args.quick)
    if missed(bench.rows) and not status:
        print("(a --quick run: missed targets do not fail it)", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
