"""Writers of several processes on one SQLite file take turns through a lock file beside it."""

import asyncio
import fcntl
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from relay.store.api import DatabaseUnusable
from relay.store.sqlite.writer import Database


def note(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO meta (key, value) VALUES ('turn-test', 'written')")


def written(path: Path) -> bool:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT 1 FROM meta WHERE key = 'turn-test'").fetchone() is not None


async def test_a_write_waits_while_another_process_has_the_turn_and_commits_once_it_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = threading.Event()
    real_flock = fcntl.flock

    def flock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX:
            asked.set()
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    database = Database(tmp_path / "relay.db", timeout_s=5)
    await database.open()
    other = os.open(tmp_path / "relay.db-turn", os.O_RDWR)  # as another process would: its own open file
    try:
        real_flock(other, fcntl.LOCK_EX)
        write = asyncio.ensure_future(database.write(note))
        assert await asyncio.to_thread(asked.wait, 10)
        assert not write.done() and not written(database.path)

        real_flock(other, fcntl.LOCK_UN)
        await asyncio.wait_for(write, 10)
        assert written(database.path)
    finally:
        os.close(other)
        await database.close()


async def test_a_turn_file_that_cannot_be_opened_refuses_the_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / "relay.db-turn").mkdir()
    database = Database(tmp_path / "relay.db", timeout_s=5)

    try:
        with pytest.raises(DatabaseUnusable, match=r"relay\.db-turn: cannot open: Is a directory"):
            await database.open()
    finally:
        await database.close()  # had it opened, its reader's thread would keep the test run alive
