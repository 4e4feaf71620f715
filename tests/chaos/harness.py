"""Shared chaos harness: profiles, the relay and stand-in processes, a Bringg-like sender and the ledger."""

import json
import os
import platform
import queue
import random
import re
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from relay.domain.rating import format_instant
from tests.conftest import AUTH
from tests.forwarding import rating_webhook
from tests.pg_server import PG_BIN, SYSTEM_USER, PostgresServer
from tests.processes import free_port, http_json, relay_process, sim_quivo_process, wait_until_ready

RESULTS_ENV = "RELAY_CHAOS_RESULTS"
PROFILE_ENV = "RELAY_CHAOS"
SEED_ENV = "RELAY_CHAOS_SEED"
# The tag ends every rating message: [bringg:<merchant>:<rating id>] or, for a later version, with :<stamp>.
TAG = re.compile(r"\[bringg:(\d+):(\d+)(?::[^\]]*)?\]\s*$")
UNSETTLED = ("pending", "sending", "retrying")
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class ChaosProfile:
    """How big and long a run is: `fast` for `make test`, `full` (RELAY_CHAOS=full) for `make chaos`."""

    name: Literal["fast", "full"]
    ratings: int  # webhooks per scenario, unless a scenario picks its own
    rate_per_s: float  # how fast the sender posts new ratings
    kill_cycles: int  # kills (or stops) per scenario that kills
    outage_s: float  # how long Quivo is down in an outage scenario
    drain_s: float  # how long deliveries may take to settle after the load
    hostile_examples: int  # hypothesis examples per hostile-input property

    @property
    def full(self) -> bool:
        return self.name == "full"

    def pick(self, fast: T, full: T) -> T:
        """A scenario's own size: `fast` in the fast profile, `full` in the full one."""
        return full if self.full else fast

    @classmethod
    def from_env(cls) -> "ChaosProfile":
        if os.environ.get(PROFILE_ENV, "fast").strip().lower() == "full":
            return cls(
                "full",
                ratings=600,
                rate_per_s=40,
                kill_cycles=10,
                outage_s=30,
                drain_s=120,
                hostile_examples=2000,
            )
        return cls(
            "fast", ratings=60, rate_per_s=30, kill_cycles=2, outage_s=3, drain_s=30, hostile_examples=60
        )


PROFILE = ChaosProfile.from_env()


def seeded_rng(scenario: str) -> tuple[int, random.Random]:
    """A seed (RELAY_CHAOS_SEED, else fresh) and its RNG; the seed is printed so a failure can be replayed."""
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))
    print(f"chaos scenario {scenario}: seed {seed} (replay with {SEED_ENV}={seed})", flush=True)
    return seed, random.Random(seed)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------- processes


class Sim:
    """A `relay sim-quivo` process on a free port, with its control API under `/_sim/`."""

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    @contextmanager
    def running(cls, cwd: Path, *args: str) -> Iterator["Sim"]:
        """The stand-in for the `with` block; stopped (SIGTERM) at its end, whatever happened."""
        with sim_quivo_process(*args, cwd=cwd) as url:
            yield cls(url)

    def faults(self, **knobs: Any) -> dict[str, Any]:
        """Set fault knobs (latency_ms, error_rate, rate_limit_rate, retry_after_s, outage, ...)."""
        return http_json("PUT", f"{self.url}/_sim/faults", json.dumps(knobs).encode(), _JSON)

    def healthy(self) -> dict[str, Any]:
        """Every fault knob back to its healthy value."""
        return self.faults(
            latency_ms=0,
            error_rate=0,
            rate_limit_rate=0,
            outage=False,
            drop_after_commit_rate=0,
            late_commit_s=0,
            reject_credentials=False,
        )

    def ratings(self) -> list[dict[str, Any]]:
        return http_json("GET", f"{self.url}/_sim/ratings")["ratings"]

    def stats(self) -> dict[str, Any]:
        return http_json("GET", f"{self.url}/_sim/stats")

    def rating_posts(self) -> int:
        """Rating POSTs Quivo has seen so far, whatever their answer."""
        return sum(self.stats()["requests"].get("post_rating", {}).values())

    def expire_tokens(self) -> int:
        return int(http_json("POST", f"{self.url}/_sim/tokens/expire")["expired"])


_JSON = {"Content-Type": "application/json"}


def http_call(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body (raw bytes when not JSON) of one call, whatever the status."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, answer_headers, raw = answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:  # 4xx and 5xx carry a body worth reading too
        status, answer_headers, raw = error.code, dict(error.headers), error.read()
    try:
        return status, answer_headers, json.loads(raw or b"null")
    except ValueError:
        return status, answer_headers, raw


def relay_env(workdir: Path, sim_url: str, port: int, **extra: str) -> dict[str, str]:
    """Settings of a relay on `workdir/relay.db` delivering to the stand-in, with short test timings."""
    return {
        "PORT": str(port),
        "RELAY_HOST": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{workdir / 'relay.db'}",
        "BRINGG_WEBHOOK_TOKEN": AUTH["Authorization"].removeprefix("Bearer "),
        "QUIVO_BASE_URL": sim_url,
        "QUIVO_API_KEY": "sim-key",
        "QUIVO_USERNAME": "sim-user",
        "QUIVO_PASSWORD": "sim-pass",
        "RELAY_INQUIRY_ID_PATTERN": r"^INQ-(\d+)$",
        "RELAY_RETRY_BASE_S": "0.1",
        "RELAY_RETRY_MAX_S": "1",
        "RELAY_SWEEP_INTERVAL_S": "0.2",
        # A short timeout keeps the lease of a killed worker (3 x timeout + 5 s) short enough for a test.
        "QUIVO_TIMEOUT_S": "1",
        # Unsure sends are read back this long after (at least QUIVO_TIMEOUT_S): short, for a test.
        "RELAY_UNSURE_SETTLE_S": "2",
        "QUIVO_MAX_RPS": "200",
        "RELAY_SHUTDOWN_GRACE_S": "3",
        **extra,
    }


class RelayProcess:
    """One relay role (`serve`, `serve --no-worker` or `worker`) that can be killed, stopped and restarted."""

    def __init__(self, *args: str, env: Mapping[str, str], cwd: Path, log_path: Path) -> None:
        self.args = args
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.port = int(self.env["PORT"]) if "PORT" in self.env else None
        self.starts = 0
        self._stack: ExitStack | None = None
        self._process: subprocess.Popen[str] | None = None

    @property
    def serves_http(self) -> bool:
        return self.args[:1] == ("serve",)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running process's id; None when not started (or killed, or stopped)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, wait: bool = True, timeout: float = 20) -> "RelayProcess":
        """Start the process (output appended to log_path); with `wait`, until it takes webhooks or works."""
        if self.running:
            raise RuntimeError(f"relay {' '.join(self.args)} is already running")
        self._close()
        stack = ExitStack()
        self._process = stack.enter_context(
            relay_process(*self.args, env=self.env, cwd=self.cwd, log_path=self.log_path)
        )
        self._stack = stack
        self.starts += 1
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        """Until the process takes webhooks (`serve`) or has started its delivery loop (`worker`)."""
        assert self._process is not None, "not started"
        if self.serves_http:
            wait_until_ready(f"{self.url}/readyz?scope=intake", self._process, timeout=timeout)
        else:
            self._wait_for_log_event("worker.started", timeout)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no release of leases."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._close()

    def stop(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the process took to exit."""
        assert self._process is not None, "not started"
        began = time.monotonic()
        self._process.send_signal(signal.SIGTERM)
        code = self._process.wait(timeout=timeout)
        took = time.monotonic() - began
        self._close()
        return code, took

    def restart(self, wait: bool = True) -> "RelayProcess":
        """Kill (if still running) and start again on the same port and database."""
        self.kill()
        return self.start(wait=wait)

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON log line so far, across all starts."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def _wait_for_log_event(self, event: str, timeout: float) -> None:
        assert self._process is not None
        wanted = self.starts  # this start's event, not an earlier one's
        marker = f'"event": "{event}"'

        def seen() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"relay {' '.join(self.args)} exited with {self._process.returncode}")
            return (
                self.log_path.exists() and self.log_path.read_text(errors="replace").count(marker) >= wanted
            )

        wait_for(seen, timeout, f"{event} of relay {' '.join(self.args)}")

    def _close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = None
        self._process = None

    def __enter__(self) -> "RelayProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# ---------------------------------------------------------------------------------------------- sender


@dataclass
class SentRating:
    """What the sender knows of one rating: how often it was posted and whether the relay acknowledged it."""

    merchant_id: int
    rating_id: int
    inquiry_id: int
    attempts: int = 0
    acknowledged: bool = False
    answers: Counter[str] = field(default_factory=Counter)

    @property
    def key(self) -> tuple[int, int]:
        return self.merchant_id, self.rating_id


class Sender:
    """Posts distinct ratings like Bringg at a steady rate; what got no 2xx is sent again after a pause."""

    def __init__(
        self,
        url: str,
        count: int,
        *,
        merchant_id: int = 1,
        first_rating_id: int = 1,
        rate_per_s: float = PROFILE.rate_per_s,
        retry_pause_s: float = 0.3,
        timeout_s: float = 5.0,
        threads: int = 4,
        deadline_s: float = 600.0,
    ) -> None:
        self.url = f"{url.rstrip('/')}/webhooks/bringg"
        self.rate_per_s = rate_per_s
        self.retry_pause_s = retry_pause_s
        self.timeout_s = timeout_s
        self.threads = threads
        self.deadline_s = deadline_s
        # The inquiry is the rating id: one inquiry per rating, so the relay may send them all at once.
        self.ratings = [
            SentRating(merchant_id, rating_id, inquiry_id=rating_id)
            for rating_id in range(first_rating_id, first_rating_id + count)
        ]
        self._queue: queue.PriorityQueue[tuple[float, int]] = queue.PriorityQueue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._posts_begun = 0
        self._in_flight: set[int] = set()
        self._workers: list[threading.Thread] = []
        self.started_at = 0.0
        self.finished_at: float | None = None

    def start(self) -> "Sender":
        self.started_at = time.monotonic()
        for index in range(len(self.ratings)):
            self._queue.put((self.started_at + index / self.rate_per_s, index))
        self._workers = [
            threading.Thread(target=self._work, name=f"sender-{n}", daemon=True) for n in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    @property
    def all_acknowledged(self) -> bool:
        with self._lock:
            return all(rating.acknowledged for rating in self.ratings)

    @property
    def acknowledged_count(self) -> int:
        with self._lock:
            return sum(rating.acknowledged for rating in self.ratings)

    @property
    def attempts(self) -> int:
        with self._lock:
            return sum(rating.attempts for rating in self.ratings)

    def wait(self, timeout: float) -> bool:
        """Whether every rating was acknowledged within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.all_acknowledged and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.all_acknowledged

    def stop(self) -> None:
        """Stop sending (ratings not yet acknowledged stay so) and wait for the threads."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout_s + 5)
        if self.finished_at is None:
            self.finished_at = time.monotonic()

    def __enter__(self) -> "Sender":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _work(self) -> None:
        deadline = self.started_at + self.deadline_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                due, index = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self.all_acknowledged:
                    self.finished_at = self.finished_at or time.monotonic()
                    return
                continue
            wait = due - time.monotonic()
            if wait > 0:
                # Not yet due: back in line, so a resend due earlier is not held up behind it.
                self._queue.put((due, index))
                self._stop.wait(min(wait, 0.02))
                continue
            if not self._post(self.ratings[index]):
                self._queue.put((time.monotonic() + self.retry_pause_s, index))

    def posts_in_flight(self) -> set[int]:
        """The posts sent and not yet answered (by number): wait on them to let answers under way land."""
        with self._lock:
            return set(self._in_flight)

    def _post(self, rating: SentRating) -> bool:
        body = rating_webhook(rating.rating_id, f"INQ-{rating.inquiry_id}", merchant_id=rating.merchant_id)
        request = urllib.request.Request(self.url, data=body, method="POST", headers={**AUTH, **_JSON})
        with self._lock:
            self._posts_begun += 1
            number = self._posts_begun
            self._in_flight.add(number)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read()
                outcome = str(answer.status)
        except urllib.error.HTTPError as error:
            outcome = str(error.code)
        except (OSError, ValueError) as error:  # refused, reset, timed out, cut-off answer
            outcome = type(error).__name__
        ok = outcome.isdigit() and 200 <= int(outcome) < 300
        with self._lock:
            rating.attempts += 1
            rating.answers[outcome] += 1
            rating.acknowledged = rating.acknowledged or ok
            self._in_flight.discard(number)
        return ok


# ---------------------------------------------------------------------------------------------- ledger


@dataclass
class Figures:
    """One scenario's outcome, as docs/reliability.md reports it."""

    scenario: str
    profile: str
    seed: int | None
    sent: int  # distinct ratings the sender posted at least once
    posts: int  # webhook POSTs in all, resends included
    acknowledged: int
    stored_webhooks: int
    stored_deliveries: int
    delivered: int  # distinct tags at Quivo
    delivered_twice: int
    lost: int  # acknowledged, never delivered by the drain deadline
    unacknowledged_delivered: int
    unknown_delivered: int  # tags at Quivo the sender never sent
    dead: int
    run_time_s: float
    date: str = ""
    cores: int = 0
    python: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def read_db(db_path: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    """A read-only query on the relay's database, beside the running relay."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def delivered_tags(sim: Sim) -> Counter[tuple[int, int]]:
    """How often each (merchant, rating id) appears at Quivo, from the last line of each rating message."""
    seen: Counter[tuple[int, int]] = Counter()
    for record in sim.ratings():
        last_line = (record.get("message") or "").rstrip().splitlines()[-1:] or [""]
        match = TAG.search(last_line[0])
        if match:
            seen[int(match[1]), int(match[2])] += 1
    return seen


def unsettled(db_path: Path) -> int:
    marks = ", ".join("?" * len(UNSETTLED))
    return int(
        read_db(db_path, f"SELECT count(*) FROM deliveries WHERE state IN ({marks})", *UNSETTLED)[0][0]
    )


def drain(ratings: Sequence[SentRating], sim: Sim, db_path: Path, timeout: float) -> bool:
    """Wait until every acknowledged rating is at Quivo and no delivery is still on its way."""

    def done() -> bool:
        acked = {rating.key for rating in ratings if rating.acknowledged}
        return acked <= set(delivered_tags(sim)) and unsettled(db_path) == 0

    try:
        wait_for(done, timeout, "drain", interval=0.25)
    except TimeoutError:
        return False
    return True


def verify(
    scenario: str,
    sender: Sender | Sequence[Sender],
    sim: Sim,
    db_path: Path,
    *,
    started_at: float,
    seed: int | None = None,
    drain_s: float = PROFILE.drain_s,
    extra: Mapping[str, Any] | None = None,
) -> Figures:
    """Drain, count, record the figures (RELAY_CHAOS_RESULTS), then assert: nothing lost, nothing twice.

    Several senders (batches of one scenario) make one ledger; their rating ids must not overlap.
    """
    ratings = [r for one in ([sender] if isinstance(sender, Sender) else sender) for r in one.ratings]
    drain(ratings, sim, db_path, drain_s)
    seen = delivered_tags(sim)
    sent = {rating.key: rating for rating in ratings if rating.attempts}
    merchants = sorted({rating.merchant_id for rating in ratings})
    marks = ", ".join("?" * len(merchants))
    figures = Figures(
        scenario=scenario,
        profile=PROFILE.name,
        seed=seed,
        sent=len(sent),
        posts=sum(rating.attempts for rating in ratings),
        acknowledged=sum(rating.acknowledged for rating in ratings),
        stored_webhooks=_count(
            db_path, f"SELECT count(*) FROM webhooks WHERE merchant_id IN ({marks})", merchants
        ),
        stored_deliveries=_count(
            db_path, f"SELECT count(*) FROM deliveries WHERE merchant_id IN ({marks})", merchants
        ),
        delivered=len(seen),
        delivered_twice=sum(1 for n in seen.values() if n > 1),
        lost=sum(1 for key, rating in sent.items() if rating.acknowledged and key not in seen),
        unacknowledged_delivered=sum(
            1 for key, rating in sent.items() if not rating.acknowledged and key in seen
        ),
        unknown_delivered=sum(1 for key in seen if key not in sent),
        dead=_count(db_path, "SELECT count(*) FROM deliveries WHERE state = 'dead'", []),
        run_time_s=round(time.monotonic() - started_at, 1),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cores=os.cpu_count() or 0,
        python=platform.python_version(),
        extra=dict(extra or {}),
    )
    record_result(figures)
    print(f"chaos figures: {json.dumps(asdict(figures))}", flush=True)
    assert figures.delivered_twice == 0, f"{figures.delivered_twice} ratings delivered twice: {figures}"
    assert figures.lost == 0, f"{figures.lost} acknowledged ratings never delivered: {figures}"
    assert figures.unknown_delivered == 0, f"ratings at Quivo nobody sent: {figures}"
    return figures


def _count(db_path: Path, sql: str, args: list[Any]) -> int:
    return int(read_db(db_path, sql, *args)[0][0])


# Tells one pytest run's lines from another's, so a report keeps only each test's latest run.
_RUN_ID = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"


def record_result(figures: Figures | Mapping[str, Any]) -> None:
    """Append one JSON line to the file named by RELAY_CHAOS_RESULTS, when set (several suites append).

    The line also names the run and the test (from PYTEST_CURRENT_TEST): the report keeps, per test, the
    lines of its latest run, however many scenarios a test records and whatever they are called.
    """
    target = os.environ.get(RESULTS_ENV)
    if not target:
        return
    row = asdict(figures) if isinstance(figures, Figures) else dict(figures)
    row.setdefault("run", _RUN_ID)
    current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    if current:
        row.setdefault("test", current)
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    # One O_APPEND write per line: lines from concurrent writers never interleave.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- stage


@dataclass
class Stage:
    """A scenario's stand-in and relay process(es), on one database in `workdir`."""

    workdir: Path
    sim: Sim
    relay: RelayProcess  # the process that takes webhooks (`serve`, with or without its worker)
    worker: RelayProcess | None = None  # the separate `relay worker` of a split deployment

    @property
    def db_path(self) -> Path:
        return self.workdir / "relay.db"


@contextmanager
def stage(
    workdir: Path, *sim_args: str, split: bool = False, start: bool = True, **env: str
) -> Iterator[Stage]:
    """The stand-in plus `relay serve` (or, with `split`, `serve --no-worker` and `relay worker`); all stopped
    at the end, whatever happened. `env` adds or overrides relay settings (names as in the environment)."""
    with ExitStack() as stack:
        sim = stack.enter_context(Sim.running(workdir, *sim_args))
        settings = relay_env(workdir, sim.url, free_port(), **env)
        serve_args = ("serve", "--no-worker") if split else ("serve",)
        relay = stack.enter_context(
            RelayProcess(*serve_args, env=settings, cwd=workdir, log_path=workdir / "relay.log")
        )
        worker = None
        if split:
            worker = stack.enter_context(
                RelayProcess("worker", env=settings, cwd=workdir, log_path=workdir / "worker.log")
            )
        if start:
            # Both roles at once, as a Procfile starts them: they may race to migrate the fresh database.
            processes = [relay] if worker is None else [relay, worker]
            for process in processes:
                process.start(wait=False)
            for process in processes:
                process.wait_ready()
        yield Stage(workdir, sim, relay, worker)


# ---------------------------------------------------------------------------------- PostgreSQL profile
# What tests/chaos/test_postgres.py adds: many relay processes on one PostgreSQL database, a sender that
# posts to all the web processes, and a ledger that counts each version of a rating on its own.

# The tag's optional third part names the version: `updated_at` in UTC as %Y%m%dT%H%M%S.%fZ.
VERSION_TAG = re.compile(r"\[bringg:(\d+):(\d+)(?::([^\]]*))?\]\s*$")
# Version n of a rating is `updated_at` n seconds after this instant: in the past, never too far ahead.
FIRST_UPDATE = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WEB_ANSWERS = {"200", "202", "503"}
PG_STOP_MODES = ("fast", "immediate")
Tag = tuple[int, int, str]  # (merchant, rating id, version stamp or "" for the original)


@dataclass
class SentVersion(SentRating):
    """One version of a rating (0: the original, n: the n-th update), posted as a webhook of its own."""

    version: int = 0

    @property
    def updated_at(self) -> datetime | None:
        return FIRST_UPDATE + timedelta(seconds=self.version) if self.version else None

    @property
    def tag(self) -> Tag:
        """How the rating message at Quivo names this version."""
        stamp = self.updated_at.strftime("%Y%m%dT%H%M%S.%fZ") if self.updated_at else ""
        return self.merchant_id, self.rating_id, stamp

    @property
    def stored_version(self) -> str:
        """How the relay's `deliveries.version` names this version."""
        return format_instant(self.updated_at) if self.updated_at else ""


@dataclass(frozen=True)
class Post:
    """One webhook POST: where, when it began and ended (monotonic), and its status or error."""

    url: str
    began: float
    ended: float
    outcome: str

    @property
    def acknowledged(self) -> bool:
        return self.outcome.isdigit() and 200 <= int(self.outcome) < 300


def plan_versions(
    rng: random.Random, count: int, *, merchant_id: int, inquiries: int, updated_share: float
) -> list[SentVersion]:
    """`count` ratings spread over `inquiries` inquiries, and later versions of about `updated_share` of
    them (a second update for a third of those), in the order they are to be posted: a version 1 to 40
    posts after the one it updates, so some arrive before it is delivered and some after."""
    slots: list[tuple[float, SentVersion]] = []
    for rating_id in range(1, count + 1):
        inquiry_id = 1 + rating_id % inquiries
        slot = float(rating_id)
        slots.append((slot, SentVersion(merchant_id, rating_id, inquiry_id)))
        updates = 0 if rng.random() >= updated_share else 1 + (rng.random() < 1 / 3)
        for version in range(1, updates + 1):
            slot += rng.uniform(1, 40)
            slots.append((slot, SentVersion(merchant_id, rating_id, inquiry_id, version=version)))
    return [version for _, version in sorted(slots, key=lambda pair: pair[0])]


class FleetSender(Sender):
    """Posts a plan of rating versions to several web processes in turn, like Bringg behind a balancer;
    what got no 2xx is sent again (to the next one) after a pause. Every post is kept with its moments."""

    def __init__(
        self, urls: Sequence[str], plan: Sequence[SentVersion], *, rate_per_s: float, threads: int = 6
    ) -> None:
        super().__init__(urls[0], 0, rate_per_s=rate_per_s, timeout_s=10.0, threads=threads)
        self.urls = [f"{url.rstrip('/')}/webhooks/bringg" for url in urls]
        self.versions = list(plan)
        self.ratings = list[SentRating](self.versions)
        self.posts: list[Post] = []

    def __enter__(self) -> "FleetSender":
        self.start()
        return self

    def acknowledged_tags(self) -> set[Tag]:
        with self._lock:
            return {version.tag for version in self.versions if version.acknowledged}

    def _post(self, rating: SentRating) -> bool:
        assert isinstance(rating, SentVersion)
        updated_at = rating.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ") if rating.updated_at else None
        body = rating_webhook(
            rating.rating_id,
            f"INQ-{rating.inquiry_id}",
            stars=1 + rating.version % 5,
            updated_at=updated_at,
            merchant_id=rating.merchant_id,
        )
        with self._lock:
            self._posts_begun += 1
            number = self._posts_begun
            self._in_flight.add(number)
        url = self.urls[number % len(self.urls)]
        request = urllib.request.Request(url, data=body, method="POST", headers={**AUTH, **_JSON})
        began = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read()
                outcome = str(answer.status)
        except urllib.error.HTTPError as error:
            outcome = str(error.code)
        except (OSError, ValueError) as error:  # refused, reset, timed out, cut-off answer
            outcome = type(error).__name__
        post = Post(url, began, time.monotonic(), outcome)
        with self._lock:
            self.posts.append(post)
            rating.attempts += 1
            rating.answers[outcome] += 1
            rating.acknowledged = rating.acknowledged or post.acknowledged
            self._in_flight.discard(number)
        return post.acknowledged


def stop_postgres(server: PostgresServer, mode: str) -> None:
    """Stop the tests' server the way an operator or a crash would: `fast` cuts sessions off and
    checkpoints, `immediate` quits at once (the next start recovers from the WAL)."""
    as_user = ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []
    command = [*as_user, str(PG_BIN / "pg_ctl"), "stop", "--pgdata", str(server.data), f"--mode={mode}"]
    done = subprocess.run(
        [*command, "--wait"], cwd=server.root, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl stop --mode={mode} failed: {done.stderr.strip() or done.stdout.strip()}")


@dataclass
class Fleet:
    """The stand-in, web processes and workers of a scenario, all on one database of the tests' server."""

    workdir: Path
    sim: Sim
    server: PostgresServer
    dbname: str
    webs: list[RelayProcess]
    workers: list[RelayProcess]

    @property
    def processes(self) -> list[RelayProcess]:
        return [*self.webs, *self.workers]

    def rows(self, statement: str) -> list[list[str]]:
        """One read on the relay's database, through psql as the server's superuser; fields as text."""
        return [line.split("|") for line in self.server.sql(statement, self.dbname).splitlines() if line]

    def count(self, statement: str) -> int:
        return int(self.rows(statement)[0][0])

    def ready(self, process: RelayProcess) -> bool:
        """Whether the process's /readyz says it can work now: take webhooks (web) or deliver (worker)."""
        path = "/readyz?scope=intake" if process.serves_http else "/readyz"
        try:
            return http_call("GET", f"{process.url}{path}", timeout=2)[0] == 200
        except OSError:
            return False


@contextmanager
def fleet(
    workdir: Path,
    server: PostgresServer,
    dbname: str,
    *sim_args: str,
    webs: int = 2,
    workers: int = 3,
    **env: str,
) -> Iterator[Fleet]:
    """The stand-in, `webs` x `relay serve --no-worker` and `workers` x `relay worker` on the database
    `dbname`, all started at once (they race to migrate it) and killed at the end whatever happened."""
    with ExitStack() as stack:
        sim = stack.enter_context(Sim.running(workdir, *sim_args))
        settings = relay_env(workdir, sim.url, 0, DATABASE_URL=server.url(dbname), **env)

        def process(name: str, *args: str) -> RelayProcess:
            # A worker's PORT is its probe port too, so `url` reaches its /healthz, /readyz and /metrics.
            port = str(free_port())
            own = {**settings, "PORT": port, **({"RELAY_WORKER_PORT": port} if args == ("worker",) else {})}
            return stack.enter_context(
                RelayProcess(*args, env=own, cwd=workdir, log_path=workdir / f"{name}.log")
            )

        the_webs = [process(f"web-{n}", "serve", "--no-worker") for n in range(1, webs + 1)]
        the_workers = [process(f"worker-{n}", "worker") for n in range(1, workers + 1)]
        everyone = [*the_webs, *the_workers]
        for one in everyone:
            one.start(wait=False)
        for one in everyone:
            one.wait_ready(timeout=60)
        yield Fleet(workdir, sim, server, dbname, the_webs, the_workers)


def fleet_ledger(
    scenario: str,
    sender: FleetSender,
    fleet: Fleet,
    *,
    started_at: float,
    seed: int | None,
    drain_s: float = PROFILE.drain_s,
    extra: Mapping[str, Any] | None = None,
) -> tuple[Figures, list[str]]:
    """Drain, count each version on its own; the figures and the promises broken, if any: the latest
    acknowledged version of every rating at Quivo once, no version twice, every 2xx committed, an older
    version left out only when the relay superseded it, never two sends at once per inquiry at Quivo.
    """
    merchant = sender.versions[0].merchant_id
    waiting = "', '".join(UNSETTLED)
    unsettled_sql = (
        f"SELECT count(*) FROM deliveries WHERE merchant_id = {merchant} AND state IN ('{waiting}')"
    )

    def latest_acknowledged() -> set[Tag]:
        newest: dict[int, SentVersion] = {}
        for version in sender.versions:
            if version.acknowledged and version.version >= newest.get(version.rating_id, version).version:
                newest[version.rating_id] = version
        return {version.tag for version in newest.values()}

    def drained() -> bool:
        return latest_acknowledged() <= set(version_tags(fleet.sim)) and fleet.count(unsettled_sql) == 0

    with suppress(TimeoutError):  # the figures say what is missing
        wait_for(drained, drain_s, "drain", interval=0.25)
    seen = version_tags(fleet.sim)
    posted = {version.tag: version for version in sender.versions if version.attempts}
    acknowledged = sender.acknowledged_tags()
    stored = {
        (merchant, int(rating_id), version): state
        for rating_id, version, state in fleet.rows(
            f"SELECT rating_id, version, state FROM deliveries WHERE merchant_id = {merchant}"
        )
    }
    states_of = {
        version.tag: stored.get((merchant, version.rating_id, version.stored_version))
        for version in sender.versions
    }
    stats = fleet.sim.stats()
    # Pairs of sends to one inquiry whose calls overlap by the relay's own records (a killed worker's call
    # is not recorded): tells the relay sending two at once from Quivo still busy with one it gave up on.
    overlapping = fleet.rows(
        "SELECT a.delivery_id, a.started_at, a.duration_ms, a.outcome, b.delivery_id, b.started_at,"
        " b.duration_ms, b.outcome FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
        " JOIN deliveries e ON e.external_id = d.external_id AND e.merchant_id = d.merchant_id"
        " JOIN attempts b ON b.delivery_id = e.id AND b.id > a.id"
        f" WHERE d.merchant_id = {merchant} AND a.action = 'send' AND b.action = 'send'"
        " AND a.started_at < b.started_at + b.duration_ms * interval '1 millisecond'"
        " AND b.started_at < a.started_at + a.duration_ms * interval '1 millisecond'"
    )
    figures = Figures(
        scenario=scenario,
        profile=PROFILE.name,
        seed=seed,
        sent=len(posted),
        posts=len(sender.posts),
        acknowledged=len(acknowledged),
        stored_webhooks=fleet.count(f"SELECT count(*) FROM webhooks WHERE merchant_id = {merchant}"),
        stored_deliveries=len(stored),
        delivered=len(seen),
        delivered_twice=sum(1 for n in seen.values() if n > 1),
        lost=len(latest_acknowledged() - set(seen)),
        unacknowledged_delivered=sum(1 for tag in seen if tag in posted and tag not in acknowledged),
        unknown_delivered=sum(1 for tag in seen if tag not in posted),
        dead=fleet.count(
            f"SELECT count(*) FROM deliveries WHERE merchant_id = {merchant} AND state = 'dead'"
        ),
        run_time_s=round(time.monotonic() - started_at, 1),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cores=os.cpu_count() or 0,
        python=platform.python_version(),
        extra={
            "versions_posted": sum(1 for version in posted.values() if version.version),
            "ratings": len({version.rating_id for version in sender.versions}),
            "inquiries": len({version.inquiry_id for version in sender.versions}),
            "most_sends_at_once_per_inquiry": stats["most_rating_posts_at_once_per_inquiry"],
            "overlapping_sends_recorded": len(overlapping),
            # (delivery, started, ms, outcome) of each send of the first pairs, for whoever looks into it.
            **({"overlapping_sends_sample": overlapping[:3]} if overlapping else {}),
            **(extra or {}),
        },
    )
    acknowledged_not_stored = sorted(tag for tag in acknowledged if states_of[tag] is None)
    # An acknowledged older version may be left out only because a newer one replaced it.
    left_out = sorted(
        tag for tag in acknowledged - set(seen) - latest_acknowledged() if states_of[tag] != "superseded"
    )
    figures.extra |= {"acknowledged_not_stored": len(acknowledged_not_stored), "left_out": len(left_out)}
    broken = [
        *([f"{figures.delivered_twice} versions delivered twice"] if figures.delivered_twice else []),
        *([f"{figures.lost} ratings' latest acknowledged versions never delivered"] if figures.lost else []),
        *(
            [f"{figures.unknown_delivered} versions at Quivo nobody sent"]
            if figures.unknown_delivered
            else []
        ),
        *([f"2xx without a commit: {acknowledged_not_stored[:10]}"] if acknowledged_not_stored else []),
        *([f"acknowledged, neither delivered nor superseded: {left_out[:10]}"] if left_out else []),
        *(
            [f"{stats['most_rating_posts_at_once_per_inquiry']} sends at once for one inquiry at Quivo"]
            if stats["most_rating_posts_at_once_per_inquiry"] > 1
            else []
        ),
    ]
    return figures, broken


def record_fleet(figures: Figures) -> None:
    """Record a PostgreSQL scenario's figures (RELAY_CHAOS_RESULTS), marked with its backend."""
    record_result({**asdict(figures), "backend": "postgresql"})
    print(f"chaos figures: {json.dumps(asdict(figures))}", flush=True)


def version_tags(sim: Sim) -> Counter[Tag]:
    """How often each version of a rating is at Quivo, from the last line of each rating message."""
    seen: Counter[Tag] = Counter()
    for record in sim.ratings():
        last_line = (record.get("message") or "").rstrip().splitlines()[-1:] or [""]
        match = VERSION_TAG.search(last_line[0])
        if match:
            seen[int(match[1]), int(match[2]), match[3] or ""] += 1
    return seen
