"""The SQLite WAL is checkpointed beside the commits, never inside one; it stays bounded; nothing is lost."""

import asyncio
import io
import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from relay.store.sqlite import checkpoints
from relay.store.sqlite.writer import Database
from tests.chaos.harness import relay_env
from tests.conftest import AUTH
from tests.forwarding import rating_webhook
from tests.processes import free_port, relay_process, wait_for, wait_until_ready

PAGE = 4096


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def wal(database: Path) -> Path:
    return database.with_name(database.name + "-wal")


def note(key: str, bytes_: int = 8000) -> Callable[[sqlite3.Connection], None]:
    """A write of about two pages, under its own key."""

    def job(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, "x" * bytes_))

    return job


def keys(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM meta WHERE key LIKE 'note-%'")}


async def test_commits_leave_the_file_alone_however_long_the_wal_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "INTERVAL_S", 3600)  # the checkpointer waits out the test
    database = Database(tmp_path / "relay.db", timeout_s=5)
    await database.open()
    try:
        before = size(database.path)
        for n in range(800):  # one by one: 800 commits, each three WAL frames or more
            await database.write(note(f"note-{n}"))

        # Past the 1,000 frames at which SQLite's own checkpoint, inside a commit, copies them in.
        assert size(wal(database.path)) > 2000 * PAGE
        assert size(database.path) == before
    finally:
        await database.close()
    assert len(keys(database.path)) == 800


async def test_the_checkpointer_copies_commits_into_the_file_while_no_one_writes(tmp_path: Path) -> None:
    database = Database(tmp_path / "relay.db", timeout_s=5)
    await database.open()
    try:
        before = size(database.path)
        await asyncio.gather(*(database.write(note(f"note-{n}")) for n in range(50)))

        # Far fewer frames than SQLite's own checkpoint waits for: only the checkpointer copies them now.
        await asyncio.to_thread(wait_for, lambda: size(database.path) > before, "the file grown")
    finally:
        await database.close()


async def test_the_wal_stays_bounded_under_writes_that_never_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "INTERVAL_S", 0.01)
    monkeypatch.setattr(checkpoints, "BOUND_FRAMES", 200)
    database = Database(tmp_path / "relay.db", timeout_s=5)
    await database.open()
    written = 0
    try:

        async def writer(lane: int) -> None:
            nonlocal written
            for n in range(400):
                await database.write(note(f"note-{lane}-{n}"))
                written += 1

        # 16 writers at once: a batch is always waiting, so the writer commits during every checkpoint.
        await asyncio.gather(*(writer(lane) for lane in range(16)))
        high_water = size(wal(database.path))
    finally:
        await database.close()

    # 6,400 notes wrote over 12,800 frames; the WAL started over each time it passed 200 or so.
    assert written == 6400
    assert high_water < 2000 * PAGE
    assert len(keys(database.path)) == 6400


def starts(path: Path) -> int:
    """How often the WAL has started over: the checkpoint sequence number in its header (SQLite's format)."""
    with wal(path).open("rb") as file:
        return int.from_bytes(file.read(16)[12:16], "big")


async def test_a_read_held_open_lets_the_wal_grow_and_once_it_ends_the_wal_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "INTERVAL_S", 0.01)
    monkeypatch.setattr(checkpoints, "BOUND_FRAMES", 200)
    database = Database(tmp_path / "relay.db", timeout_s=5)
    await database.open()
    reader = sqlite3.connect(database.path, isolation_level=None)
    try:
        await database.write(note("note-first"))
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM meta").fetchone()  # its snapshot holds until it ends
        before = starts(database.path)
        await asyncio.gather(*(database.write(note(f"note-{n}")) for n in range(300)))

        # No checkpoint may copy past the reader's snapshot, so none lets the WAL start over.
        assert starts(database.path) == before
        assert size(wal(database.path)) > 600 * PAGE

        reader.execute("COMMIT")
        more = iter(range(300, 3000))
        while starts(database.path) == before:
            await database.write(note(f"note-{next(more)}"))
    finally:
        reader.close()
        await database.close()


async def test_nothing_committed_is_lost_across_close_and_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "INTERVAL_S", 0.01)
    path = tmp_path / "relay.db"
    database = Database(path, timeout_s=5)
    await database.open()
    try:
        await asyncio.gather(*(database.write(note(f"note-{n}")) for n in range(1000)))
    finally:
        await database.close()
    # SQLite's close of the file's last connection copied the rest in and removed the WAL.
    assert not wal(path).exists()

    again = Database(path, timeout_s=5)
    await again.open()
    try:
        rows = await again.reader.execute_fetchall("SELECT key FROM meta WHERE key LIKE 'note-%'")
    finally:
        await again.close()
    assert len(list(rows)) == 1000


async def test_a_checkpoint_that_keeps_failing_is_logged_once_and_commits_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: io.StringIO
) -> None:
    monkeypatch.setattr(checkpoints, "INTERVAL_S", 0.01)
    tries = 0

    def failing(conn: sqlite3.Connection) -> tuple[bool, int]:
        nonlocal tries
        tries += 1
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(checkpoints, "_passive", failing)
    database = Database(tmp_path / "relay.db", timeout_s=5)
    await database.open()
    try:
        await asyncio.to_thread(wait_for, lambda: tries >= 5, "five failed checkpoints")
        await database.write(note("note-after"))
    finally:
        await database.close()

    failed = [
        line for line in map(json.loads, lines.getvalue().splitlines()) if "checkpoint" in line["event"]
    ]
    assert [(line["event"], line["level"], line["error"]) for line in failed] == [
        ("store.checkpoint_failed", "error", "OperationalError: disk I/O error")
    ]
    assert keys(database.path) == {"note-after"}


async def post(port: int, rating_ids: range) -> list[int]:
    """POST each rating over 16 connections; the ids the relay acknowledged (2xx)."""
    url = f"http://127.0.0.1:{port}/webhooks/bringg"
    acknowledged = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16), headers=AUTH) as session:
        ids = iter(rating_ids)

        async def connection() -> None:
            for rating_id in ids:
                async with session.post(url, data=rating_webhook(rating_id, f"INQ-{rating_id}")) as answer:
                    await answer.read()
                    if 200 <= answer.status < 300:
                        acknowledged.append(rating_id)

        await asyncio.gather(*(connection() for _ in range(16)))
    return acknowledged


async def test_two_processes_on_one_file_killed_after_their_answers_keep_every_acknowledged_webhook(
    tmp_path: Path,
) -> None:
    ports = [free_port(), free_port()]
    envs = [relay_env(tmp_path, "http://127.0.0.1:9", port) for port in ports]
    with (
        relay_process("serve", "--no-worker", env=envs[0], cwd=tmp_path, log_path=tmp_path / "a.log") as a,
        relay_process("serve", "--no-worker", env=envs[1], cwd=tmp_path, log_path=tmp_path / "b.log") as b,
    ):
        for port, process in zip(ports, (a, b), strict=True):
            await asyncio.to_thread(wait_until_ready, f"http://127.0.0.1:{port}/readyz?scope=intake", process)
        # Both write at once, each with its checkpointer: one checkpoint at a time copies both's commits.
        first, second = await asyncio.gather(
            post(ports[0], range(1, 1501)), post(ports[1], range(1501, 3001))
        )
        for process in (a, b):
            process.send_signal(signal.SIGKILL)
        for process in (a, b):
            await asyncio.to_thread(process.wait, 10)
        high_water = size(wal(tmp_path / "relay.db"))

    assert (len(first), len(second)) == (1500, 1500)
    with sqlite3.connect(tmp_path / "relay.db") as conn:
        stored = {row[0] for row in conn.execute("SELECT rating_id FROM deliveries")}
    assert stored == set(first) | set(second)
    assert high_water < 2 * checkpoints.BOUND_FRAMES * PAGE
