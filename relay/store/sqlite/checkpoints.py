"""The SQLite file's WAL checkpoints, on a connection and thread of their own, so no commit carries one."""

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# How often the checkpointer copies what was committed since into the file: at 1,000 webhooks a second,
# some 300 WAL frames a pass. Measured at 0.05, 0.2 and 1 s, commit times did not tell them apart.
INTERVAL_S = 0.2
# A WAL this many frames long (16 MB of 4 KB pages) has not started over for seconds: the writers (of
# every process on the file) committed during each checkpoint, so none copied the last frame, and SQLite
# starts a WAL over only once all of it is in the file. Then the checkpoint's last pass holds the writers'
# turn: it copies the few frames committed meanwhile (about 1 ms; every 2-3 s at 1,000 webhooks a
# second), and the next commit starts the WAL over.
BOUND_FRAMES = 4000

TakeTurn = Callable[[], contextlib.AbstractContextManager[None]]


class Checkpointer:
    """Checkpoints the WAL every INTERVAL_S, PASSIVE, beside the writers: they wait for none of it, but
    for the last pass over a WAL past BOUND_FRAMES.

    Every process on the file runs one: SQLite lets one checkpoint run at a time (another returns at
    once), and any one copies every process's commits. None runs at close: the WAL is durable as it is,
    and SQLite's close of the file's last connection checkpoints it and removes it.
    """

    def __init__(self, path: Path, *, timeout_s: float, take_turn: TakeTurn) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._take_turn = take_turn
        self._conn: sqlite3.Connection | None = None
        self._file: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Connect (blocking: from a thread of the caller's choosing) and start the checkpoint thread."""
        self._file = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.timeout_s
        )
        # FULL: the checkpoint fsyncs the WAL before copying it and the file before the WAL may start over.
        self._conn.execute("PRAGMA synchronous = FULL")
        self._thread = threading.Thread(target=self._serve, name="relay-db-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (after the checkpoint under way, if any) and close its connection; blocking."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
        if self._file is not None:
            file, self._file = self._file, None
            os.close(file)

    def _serve(self) -> None:
        failing: str | None = None
        while not self._stopping.wait(INTERVAL_S):
            try:
                self._checkpoint()
            except (sqlite3.Error, OSError) as error:
                # Commits go on into a longer WAL and the next interval tries again: said once, not each time.
                said, failing = failing, f"{type(error).__name__}: {error}"
                if failing != said:
                    log.error("store.checkpoint_failed", error=failing)
            else:
                failing = None

    def _checkpoint(self) -> None:
        """Copy the committed WAL into the file; if the WAL is long, the last frames with the writers held."""
        conn, file = self._conn, self._file
        if conn is None or file is None:
            return
        busy, frames = _passive(conn)
        # Busy: another process's checkpoint is under way, and it copies these frames too.
        if busy or frames < BOUND_FRAMES:
            return
        # The pages copied so far on disk now, beside the writes, so the last pass has few to fsync.
        os.fdatasync(file)
        with self._take_turn():
            _passive(conn)


def _passive(conn: sqlite3.Connection) -> tuple[bool, int]:
    """A PASSIVE checkpoint, which never waits for a lock: whether another was under way, the WAL's frames."""
    busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return bool(busy), int(frames)
