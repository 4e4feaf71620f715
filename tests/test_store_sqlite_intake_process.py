"""SQLite intake's writer process: it stores new webhooks as the writer thread would, it ends with its store
or its web process, and one that ends mid-run loses nothing acknowledged."""

import asyncio
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from relay.bringg.payload import judge
from relay.store.api import StoreUnavailable
from relay.store.records import InboundWebhook, StoredWebhook
from relay.store.sqlite.intake_channel import IntakeProcess
from relay.store.sqlite.store import SqliteStore
from tests.test_webhook import rating_body
from tests.test_worker import until

RECHECK_BEFORE = datetime(2026, 11, 1, tzinfo=UTC)
QUARANTINED = b'{"webhook_type": "rating_submitted", "merchant_id": 9, "rating": {"id": "x"}}'
IGNORED = b'{"webhook_type": "task_done", "merchant_id": 9}'


def arrival(n: int, body: bytes) -> InboundWebhook:
    received_at = datetime(2026, 12, 1, 18, tzinfo=UTC) + timedelta(microseconds=n)
    return InboundWebhook(f"req-{n}", received_at, body, "application/json", judge(body))


def three_rounds() -> list[list[InboundWebhook]]:
    """New ratings, a quarantined and an ignored webhook; then resends, a newer and an older version, a rating
    twice in one round, and new ratings beside them."""
    newer, older = "2026-12-01T10:00:00.000Z", "2026-12-01T09:00:00.000Z"
    first = [rating_body(rating_id=n) for n in range(1, 31)] + [QUARANTINED, IGNORED]
    second = [first[2], rating_body(rating_id=4, updated_at=newer)]
    second += [rating_body(rating_id=n) for n in range(31, 41)] + [rating_body(rating_id=41)] * 2
    third = [rating_body(rating_id=4, updated_at=older), rating_body(rating_id=42)]
    bodies = [first, second, third]
    numbers = iter(range(1000))
    return [[arrival(next(numbers), body) for body in round_] for round_ in bodies]


async def stored_in_rounds(store: SqliteStore, rounds: list[list[InboundWebhook]]) -> list[StoredWebhook]:
    """Each round's webhooks recorded at once, one round after the other."""
    stored: list[StoredWebhook] = []
    for round_ in rounds:
        stored += await asyncio.gather(
            *(store.record_webhook(inbound, recheck_before=RECHECK_BEFORE) for inbound in round_)
        )
    return stored


async def record(store: SqliteStore, n: int, *, rating_id: int) -> StoredWebhook:
    """The nth webhook, carrying a rating, recorded."""
    return await store.record_webhook(
        arrival(n, rating_body(rating_id=rating_id)), recheck_before=RECHECK_BEFORE
    )


def table(path: Path, name: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(f"SELECT * FROM {name} ORDER BY id"))
    finally:
        conn.close()


OpenStore = Callable[..., Awaitable[SqliteStore]]


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens SQLite stores in tmp_path; each is closed after the test."""
    opened: list[SqliteStore] = []

    async def open_one(name: str = "relay.db", *, timeout_s: float = 5, intake_process: bool) -> SqliteStore:
        store = SqliteStore(tmp_path / name, timeout_s=timeout_s, intake_process=intake_process)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        await store.close()


def intake_of(store: SqliteStore) -> IntakeProcess:
    assert store.intake_process is not None
    return store.intake_process


def intake_pid(store: SqliteStore) -> int:
    process = intake_of(store)._process
    assert process is not None
    return process.pid


async def test_the_intake_process_stores_webhooks_as_the_writer_thread_does(open_store: OpenStore):
    rounds = three_rounds()
    by_thread = await open_store("thread.db", intake_process=False)
    by_process = await open_store("process.db", intake_process=True)

    expected = await stored_in_rounds(by_thread, rounds)
    stored = await stored_in_rounds(by_process, rounds)

    assert stored == expected
    assert [one.status for one in stored].count("duplicate") == 2
    assert "superseded" in [one.status for one in stored]
    for name in ("webhooks", "deliveries"):
        assert table(by_process.path, name) == table(by_thread.path, name)
    # The first round's 32 webhooks and the third's new rating went through the process, in a few runs; the
    # runs holding a known rating or one rating twice through the writer thread.
    assert 1 <= intake_of(by_process).commits < 32
    assert by_process.database.commits >= 1


async def test_the_intake_process_ends_with_its_store(open_store: OpenStore):
    store = await open_store(intake_process=True)
    await record(store, 1, rating_id=1)
    process = intake_of(store)._process
    assert process is not None

    await store.close()

    assert process.returncode == 0


def _ended(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


_WEB_PROCESS = """
import asyncio, sys
from pathlib import Path
from relay.store.sqlite.store import SqliteStore
from tests.test_store_sqlite_intake_process import record

async def main():
    store = SqliteStore(Path(sys.argv[1]), timeout_s=5, intake_process=True)
    await store.open()
    await record(store, 1, rating_id=1)
    print(store.intake_process._process.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_the_intake_process_ends_when_its_web_process_is_killed(tmp_path: Path):
    web = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", _WEB_PROCESS, str(tmp_path / "relay.db")),
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[1],
    )
    try:
        assert web.stdout is not None
        intake_pid = int(await web.stdout.readline())
        assert not _ended(intake_pid)
    finally:
        web.kill()
        await web.wait()

    await until(lambda: _ended(intake_pid), "the intake process ended", within_s=30)
    assert [row[1] for row in table(tmp_path / "relay.db", "webhooks")] == ["2026-12-01T18:00:00.000001Z"]


async def test_a_run_in_flight_when_the_process_dies_answers_unavailable_and_the_writer_thread_goes_on(
    open_store: OpenStore,
):
    store = await open_store(intake_process=True)
    # Holding the writers' turn keeps the process waiting before it writes the run it was sent.
    turn = os.open(f"{store.path}-turn", os.O_RDWR)
    fcntl.flock(turn, fcntl.LOCK_EX)
    in_flight = asyncio.ensure_future(record(store, 1, rating_id=1))
    await until(lambda: intake_of(store)._in_flight is not None, "the run sent", within_s=30)

    with capture_logs() as logs:
        os.kill(intake_pid(store), signal.SIGKILL)
        with pytest.raises(StoreUnavailable, match="intake process ended"):
            await in_flight
        fcntl.flock(turn, fcntl.LOCK_UN)
        os.close(turn)
        resent = await record(store, 2, rating_id=1)
        later = await record(store, 3, rating_id=2)
        await until(
            lambda: any(line["event"] == "store.intake_process_ended" for line in logs),
            "its line",
            within_s=30,
        )

    assert not intake_of(store).running
    assert (resent.status, later.status) == ("accepted", "accepted")
    assert [row[2] for row in table(store.path, "webhooks")] == ["req-2", "req-3"]
    [ended] = [line for line in logs if line["event"] == "store.intake_process_ended"]
    assert ended["log_level"] == "error" and ended["returncode"] == -signal.SIGKILL


async def test_a_run_the_file_cannot_take_fails_as_a_commit_of_the_writer_thread_would(open_store: OpenStore):
    store = await open_store(timeout_s=0.2, intake_process=True)
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another program holding SQLite's write lock past the timeout

    with capture_logs() as logs:
        with pytest.raises(StoreUnavailable):
            await record(store, 1, rating_id=1)
        await until(lambda: store.database.commit_failures == 1, "the failure reported", within_s=30)
    blocker.execute("ROLLBACK")
    blocker.close()
    stored = await record(store, 2, rating_id=1)

    # Said where operators look, as the writer thread says its own: the log, and readiness.
    assert [(line["event"], line["error"]) for line in logs] == [
        ("store.commit_failed", "OperationalError: database is locked")
    ]
    assert store.database.last_commit_error is None and store.database.failed_commit_error.endswith("locked")
    # The process went on: the next run was its own, and the writer thread wrote nothing.
    assert (stored.status, intake_of(store).commits, store.database.commits) == ("accepted", 1, 0)
    assert [row[2] for row in table(store.path, "webhooks")] == ["req-2"]
