"""Storage failures (scenario 6) and a lost SQLite intake process (11): 503s, healing, never a lost 2xx."""

import errno
import fcntl
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import (
    PROFILE,
    RelayProcess,
    Sender,
    Sim,
    read_db,
    relay_env,
    stage,
    verify,
    wait_for,
)
from tests.conftest import AUTH
from tests.forwarding import rating_webhook
from tests.processes import free_port
from tests.test_serve_processes import children

# Short, so a locked database answers 503 within half a second instead of the default five.
STORE_TIMEOUT_S = "0.5"
# Probes post as another merchant, with an order no inquiry pattern matches: never delivered, never counted.
SENDER_MERCHANT, PROBE_MERCHANT = 1, 2
OK_ANSWERS = {"200", "202", "503"}

# Another process takes SQLite's write lock and keeps it until its stdin closes.
LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""

Breaker = Callable[[Path], AbstractContextManager[Any]]


def call(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of one call, whatever the status."""
    headers = {**AUTH, "Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


@contextmanager
def locked_by_another_process(db: Path) -> Iterator[None]:
    """Another process holds the database's write lock (BEGIN EXCLUSIVE) for the block."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.strip() == "locked", f"the lock holder did not take the lock: {line!r}"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # its readline returns: ROLLBACK and exit
        try:
            holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` for the block; unmounted whatever happens."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            # Something still holds a file there: detach now, the kernel frees it when released.
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def truncate_wal(db: Path) -> None:
    """Checkpoint and empty the WAL, so every later commit must grow it (no old frames to overwrite)."""
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        for _ in range(100):
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"could not truncate the WAL of {db}")
    finally:
        conn.close()


@contextmanager
def writers_held(db: Path) -> Iterator[None]:
    """The relay's writers kept waiting for the block: it holds the turn file they lock around each commit."""
    turn = os.open(f"{db}-turn", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(turn, fcntl.LOCK_EX)
        yield
    finally:
        os.close(turn)


@contextmanager
def filesystem_full(db: Path) -> Iterator[None]:
    """Fill the filesystem holding `db` to its last byte for the block, then free the space."""
    filler = db.parent / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # No commit between the WAL's truncation and the last byte taken: none leaves WAL space of its own
        # that later commits could write into (a checkpoint lets the WAL start over) while the disk is full.
        with writers_held(db):
            truncate_wal(db)
            chunk = 1 << 20
            while chunk:
                try:
                    os.write(fd, bytes(chunk))
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    chunk //= 2  # down to single bytes: not one free block may remain
        yield
    finally:
        os.close(fd)
        filler.unlink()


def storage_failure(
    tmp_path: Path, db_dir: Path, scenario: str, variant: str, breaker: Breaker, error_hints: tuple[str, ...]
) -> None:
    """Webhooks under way, storage broken for a while, then restored: the whole check and its figures."""
    started = time.monotonic()
    db = db_dir / "relay.db"
    broken_s = PROFILE.pick(2.5, 15.0)
    count = PROFILE.pick(60, 400)
    with Sim.running(tmp_path) as sim:
        env = relay_env(db_dir, sim.url, free_port(), RELAY_STORE_TIMEOUT_S=STORE_TIMEOUT_S)
        with RelayProcess("serve", env=env, cwd=tmp_path, log_path=tmp_path / "relay.log") as relay:
            relay.start()
            with Sender(relay.url, count, merchant_id=SENDER_MERCHANT) as sender:
                wait_for(
                    lambda: sender.acknowledged_count >= count // 4, 30, "the first webhooks acknowledged"
                )
                with breaker(db):
                    broke_at = time.monotonic()
                    # Commits made just before the break may still be on their way to the sender as 2xx.
                    under_way = sender.posts_in_flight()
                    wait_for(lambda: not under_way & sender.posts_in_flight(), 30, "answers under way")
                    acknowledged_before = sender.acknowledged_count
                    posts_before = sender.attempts
                    probes = [
                        call(
                            "POST",
                            f"{relay.url}/webhooks/bringg",
                            rating_webhook(n, f"PROBE-{n}", merchant_id=PROBE_MERCHANT),
                        )
                        for n in range(1, 4)
                    ]
                    # Readiness is read at most once a second: wait for a reading taken since the break.
                    wait_for(
                        lambda: call("GET", f"{relay.url}/readyz?scope=intake")[0] == 503,
                        10,
                        "intake not ready while broken",
                    )
                    intake_broken = call("GET", f"{relay.url}/readyz?scope=intake")
                    time.sleep(max(0.0, broken_s - (time.monotonic() - broke_at)))
                    acknowledged_while_broken = sender.acknowledged_count - acknowledged_before
                    posts_while_broken = sender.attempts - posts_before
                assert sender.wait(PROFILE.drain_s), "not every webhook was acknowledged after the repair"
                wait_for(
                    lambda: call("GET", f"{relay.url}/readyz?scope=intake")[0] == 200,
                    10,
                    "intake ready again",
                )
            answers = [outcome for rating in sender.ratings for outcome in rating.answers.elements()]
            rows = read_db(db, "SELECT count(*) FROM webhooks WHERE merchant_id = ?", SENDER_MERCHANT)[0][0]
            # A 503 can still commit later (its caller gave up waiting, its job did not): resent, a duplicate.
            stored_after_503 = rows - answers.count("200") - answers.count("202")
            figures = verify(
                scenario,
                sender,
                sim,
                db,
                started_at=started,
                extra={
                    "variant": variant,
                    "broken_s": broken_s,
                    "answered_503": answers.count("503"),
                    "posts_while_broken": posts_while_broken,
                    "stored_after_a_503": stored_after_503,
                },
            )
            assert relay.running, "the relay died while its storage was broken"
            events = relay.log_events()

    for status, headers, problem in probes:
        assert status == 503, (status, problem)
        assert headers["Retry-After"] == "30"
        assert headers["Content-Type"].startswith("application/problem+json")
    assert intake_broken[0] == 503
    assert any("database not writable" in problem for problem in intake_broken[2]["problems"]), intake_broken
    assert posts_while_broken > 0, "the sender posted nothing while storage was broken"
    assert acknowledged_while_broken == 0, f"{acknowledged_while_broken} webhooks got a 2xx while broken"
    assert set(answers) <= OK_ANSWERS, f"answers other than 2xx and 503: {set(answers) - OK_ANSWERS}"
    assert answers.count("503") > 0
    assert stored_after_503 >= 0, "fewer webhook rows than 2xx answers"
    refused = [event for event in events if event.get("event") == "webhook.store_failed"]
    assert len(refused) >= len(probes)
    # The writer logs the cause; a webhook itself may only have waited past RELAY_STORE_TIMEOUT_S for it.
    causes = {event["error"] for event in events if event.get("event") == "store.commit_failed"}
    assert any(hint in cause for cause in causes for hint in error_hints), causes
    assert figures.acknowledged == figures.sent == count


def test_a_database_locked_by_another_process_answers_503_then_recovers(tmp_path: Path):
    storage_failure(
        tmp_path,
        tmp_path,
        "6. Storage failure: database locked",
        "another process holds BEGIN EXCLUSIVE past RELAY_STORE_TIMEOUT_S=0.5",
        locked_by_another_process,
        ("database is locked",),
    )


def test_a_full_filesystem_answers_503_then_recovers_when_space_is_freed(tmp_path: Path):
    with tmpfs(tmp_path / "small-disk", "16m") as disk:
        storage_failure(
            tmp_path,
            disk,
            "6. Storage failure: filesystem full",
            "the database's 16 MiB tmpfs filled to its last byte, then freed",
            filesystem_full,
            ("database or disk is full",),
        )


def intake_process_of(relay: RelayProcess) -> int:
    """The pid of the SQLite intake process the relay started (a child of its own)."""
    assert relay.pid is not None, "not running"
    [pid] = [
        child
        for child in children(relay.pid)
        if b"intake_process" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]
    return pid


def acknowledged(sender: Sender, count: int) -> None:
    """Wait until the sender has had `count` webhooks acknowledged."""
    wait_for(lambda: sender.acknowledged_count >= count, 60, f"{count} webhooks acknowledged")


def test_killing_the_sqlite_intake_process_under_load_loses_nothing(tmp_path: Path):
    """Scenario 11: the web process's helper that writes new webhooks is SIGKILLed while webhooks arrive;
    the relay goes on through its writer thread, and after a graceful restart with a new helper, again."""
    started = time.monotonic()
    count, rate, kills = PROFILE.pick(60, 1500), PROFILE.pick(30.0, 50.0), PROFILE.pick(2, 5)
    killed: list[int] = []
    with stage(tmp_path, "--latency-ms", "20") as s:
        with Sender(s.relay.url, count, merchant_id=111, rate_per_s=rate) as sender:
            for n in range(1, kills + 1):
                if n > 1:
                    assert s.relay.stop()[0] == 0
                    s.relay.start()
                acknowledged(sender, count * n // (kills + 1))
                victim = intake_process_of(s.relay)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
                # Then webhooks stored by the writer thread of the process that lost its helper.
                acknowledged(sender, sender.acknowledged_count + max(1, count // (4 * (kills + 1))))
            assert sender.wait(timeout=PROFILE.drain_s), "the relay acknowledged every rating"
        answers = [outcome for rating in sender.ratings for outcome in rating.answers.elements()]
        figures = verify(
            "11. SQLite intake process killed under load",
            sender,
            s.sim,
            s.db_path,
            started_at=started,
            extra={"kills": kills, "answered_503": answers.count("503")},
        )
        events = s.relay.log_events()
    ended = [event for event in events if event["event"] == "store.intake_process_ended"]
    assert [event["returncode"] for event in ended] == [-signal.SIGKILL] * kills
    # Refused connections (URLError) while the relay restarted between kills, resent by the sender.
    assert set(answers) <= OK_ANSWERS | {"URLError"}, set(answers)
    assert s.relay.starts == kills
    assert figures.dead == 0
