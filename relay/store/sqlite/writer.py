"""The SQLite file: one writer thread that groups concurrent writes into one commit, and one reader."""

import asyncio
import contextlib
import itertools
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from relay.store.api import DatabaseUnusable, StoreUnavailable
from relay.store.batching import MAX_BATCH, Deadlines, Waiting, fail, settle, waiting
from relay.store.sqlite.checkpoints import Checkpointer
from relay.store.sqlite.instants import instant_plus
from relay.store.sqlite.migrations import LATEST_VERSION, migrate
from relay.store.sqlite.reading import one
from relay.store.sqlite.turns import turn_taken

T = TypeVar("T")
# A write job runs inside the writer's transaction, on the writer thread: plain sqlite3, no awaiting.
WriteJob = Callable[[sqlite3.Connection], T]
# A job may also say how neighbours of its kind run as one, in fewer statements: its `together` attribute
# takes the connection and a run of such jobs, and returns their results in order. Each statement the
# writer runs hands the GIL to the event loop and waits to get it back, so fewer statements are faster.
# And how a batch of its kind alone commits in one statement outside BEGIN ... COMMIT (SQLite commits such a
# statement by itself): its `in_one_statement` attribute takes the connection and the batch's jobs, and
# returns their results, or None with nothing written when it cannot (then the batch runs as any other).

# The name docs/operations.md gives operators for this logger since before the package moved.
log = structlog.get_logger(__name__)


# Not frozen: one is made for every write, and a frozen dataclass costs several times as much to make.
@dataclass(slots=True)
class _Order:
    job: WriteJob[Any]
    # Outside the batches' transactions (a migration begins its own), after every write queued before it.
    alone: bool = False


_Entry = Waiting[_Order, Any]
# Tells the writer thread to close its connection and end, once every order queued before it is done.
_STOP = None


class Database:
    """Opens the file, migrates it, and serializes every write through a group-commit thread.

    The writer thread takes every write job waiting the moment it is free and runs them as one batch:
    BEGIN, the jobs, COMMIT. It never waits for the event loop between batches, and the loop hears each
    batch's outcome in one wake-up; SQLite's work, fsync included, happens off the loop.
    """

    def __init__(self, path: Path, *, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._deadlines = Deadlines(timeout_s)
        self._writer: sqlite3.Connection | None = None
        self._turn: int | None = None
        self._checkpoints: Checkpointer | None = None
        self._checkpoints_turn: int | None = None
        self._reader: aiosqlite.Connection | None = None
        self._orders: queue.SimpleQueue[_Entry | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.last_commit_error: str | None = None
        # Failed commits so far, and how many of them readiness has reported (see readiness_problems).
        self.commit_failures = 0
        self._failures_reported = 0
        self.failed_commit_error = ""
        self.commits = 0

    async def open(self) -> None:
        """Connect, set durability pragmas, apply migrations, start the writer loop.

        Raises DatabaseUnusable when the file cannot be a database for the relay (unwritable, not a
        database, in a folder that cannot be made), StoreUnavailable when it stays locked past the timeout.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatabaseUnusable(f"{self.path}: cannot make its folder: {error.strerror}") from None
        try:
            # Nothing else uses the connection before the writer thread starts.
            self._writer = writer = await asyncio.to_thread(self._connect_writer)
            await asyncio.to_thread(migrate, writer)
            await asyncio.to_thread(_check_writable, writer)
            self._turn = _open_turn(self.path)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.timeout_s)
            self._reader.row_factory = sqlite3.Row
            await self._reader.create_function("instant_plus", 2, instant_plus, deterministic=True)
            await asyncio.to_thread(self._start_checkpoints)
        except (sqlite3.Error, DatabaseUnusable) as error:
            await self.close()
            if isinstance(error, DatabaseUnusable):
                raise
            raise self._refusal(error) from None
        self._thread = threading.Thread(target=self._serve, name="relay-db-writer", daemon=True)
        self._thread.start()

    def _start_checkpoints(self) -> None:
        # A turn file open of its own: flock excludes only other open files, this writer's among them.
        self._checkpoints_turn = turn = _open_turn(self.path)
        self._checkpoints = Checkpointer(
            self.path, timeout_s=self.timeout_s, take_turn=lambda: turn_taken(turn)
        )
        self._checkpoints.start()

    def _connect_writer(self, _: object = None) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and ended here, explicitly. timeout: SQLite's busy
        # timeout, in force from the first statement on, so processes starting together wait for each other.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.timeout_s
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.create_function("instant_plus", 2, instant_plus, deterministic=True)
            self._switch_to_wal(conn)
            # FULL: a commit is on disk (WAL fsynced) before any caller hears it succeeded.
            conn.execute("PRAGMA synchronous = FULL")
            # None inside a commit: the checkpointer's thread copies the WAL into the file beside the writes.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    def _switch_to_wal(self, conn: sqlite3.Connection) -> None:
        # SQLite does not call the busy handler for a change of journal mode: while another process starting
        # beside this one holds the file, the switch fails at once with "database is locked". Wait here.
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        if str(row[0]).lower() != "wal":
            # A read-only file keeps its old journal mode without an error; say why it cannot be used.
            raise DatabaseUnusable(f"{self.path}: cannot switch to WAL (journal mode stays {row[0]})")

    async def migrate(self) -> list[str]:
        """Apply missing migrations (names of those applied now); opened or not, as `relay migrate` needs."""
        if self._thread is not None:
            return await self._on_writer(migrate)

        def once(_: object) -> list[str]:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect_writer()
            try:
                return migrate(conn)
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(once, None)
        except OSError as error:
            raise DatabaseUnusable(f"{self.path}: cannot make its folder: {error.strerror}") from None
        except sqlite3.Error as error:
            raise self._refusal(error) from None

    def _refusal(self, error: sqlite3.Error) -> Exception:
        """Why the file cannot be opened or migrated: locked for now, or unusable for the relay."""
        if _is_busy(error):
            return StoreUnavailable(f"{self.path}: locked for more than {self.timeout_s:g}s")
        return DatabaseUnusable(f"{self.path}: {error}")

    async def _on_writer(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` with the writer connection on the writer thread, alone, after the writes queued now."""
        if self._thread is None:
            raise StoreUnavailable("database is closed")
        entry: _Entry = waiting(_Order(work, alone=True))
        self._orders.put(entry)
        result: T = await entry.done
        return result

    async def close(self) -> None:
        """Stop checkpointing, finish queued writes, then close both connections."""
        if self._checkpoints is not None:
            checkpoints, self._checkpoints = self._checkpoints, None
            await asyncio.to_thread(checkpoints.stop)
        if self._checkpoints_turn is not None:
            turn, self._checkpoints_turn = self._checkpoints_turn, None
            os.close(turn)
        if self._thread is not None:
            thread, self._thread = self._thread, None
            self._orders.put(_STOP)
            # The thread finishes what was queued, closes the writer connection and ends.
            await asyncio.to_thread(thread.join)
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._writer is not None:
            # Opened no further than its writer connection: no thread to close it.
            writer, self._writer = self._writer, None
            writer.close()
        if self._turn is not None:
            turn, self._turn = self._turn, None
            os.close(turn)

    @property
    def reader(self) -> aiosqlite.Connection:
        """The connection for reads; WAL lets it read while the writer commits."""
        if self._reader is None:
            raise StoreUnavailable("database is closed")
        return self._reader

    async def write(self, job: WriteJob[T]) -> T:
        """Run `job` inside a transaction shared with other concurrent writes; return once committed."""
        if self._thread is None:
            raise StoreUnavailable("database is closed")
        entry: _Entry = waiting(_Order(job))
        self._orders.put(entry)
        return await self._deadlines.committed(entry)

    def _serve(self) -> None:
        """The writer thread: each turn takes every order waiting, up to MAX_BATCH, and commits it."""
        held: _Entry | None = None
        while True:
            entry = held if held is not None else self._orders.get()
            held = None
            if entry is _STOP:
                break
            if entry.item.alone:
                self._run_alone(entry)
                continue
            batch = [entry]
            while len(batch) < MAX_BATCH:
                try:
                    following = self._orders.get_nowait()
                except queue.Empty:
                    break
                if following is _STOP or following.item.alone:
                    held = following
                    break
                batch.append(following)
            self._commit(batch)
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def _writer_connection(self) -> sqlite3.Connection:
        """On the writer thread: its connection, while the database is open."""
        if self._writer is None:
            raise StoreUnavailable("database is closed")
        return self._writer

    def _run_alone(self, entry: _Entry) -> None:
        try:
            result = entry.item.job(self._writer_connection())
        except Exception as error:
            _hand_back([entry], error)
            return
        _hand_back([entry], [result])

    def _commit(self, batch: list[_Entry]) -> None:
        """On the writer thread: the batch in one transaction, each caller told its outcome."""
        jobs = [entry.item.job for entry in batch]
        try:
            results = self._in_one_statement(jobs)
            if results is None:
                results = self._transaction(jobs)
        except Exception as error:
            # Storage failures (locked, full, read-only, I/O) fail every job alike; fail the batch at once.
            if len(batch) == 1 or isinstance(error, sqlite3.OperationalError):
                _hand_back(batch, self._as_store_error(error))
                return
            # One bad job must not fail its neighbours: run each alone to find it.
            for entry in batch:
                self._commit([entry])
            return
        self.commit_succeeded()
        self.commits += 1
        _hand_back(batch, results)

    def _in_one_statement(self, jobs: list[WriteJob[Any]]) -> list[Any] | None:
        """On the writer thread: the batch committed by one statement of its jobs' kind, if it has one and
        it can; else None, nothing written. One hand-off of the GIL a batch instead of one a statement: under
        wrk at 64 connections, 8-16% more webhooks a second (three alternating pairs)."""
        in_one_statement = getattr(jobs[0], "in_one_statement", None)
        if in_one_statement is None or any(
            getattr(job, "in_one_statement", None) is not in_one_statement for job in jobs
        ):
            return None
        conn = self._writer_connection()
        with turn_taken(self._turn):
            try:
                results: list[Any] | None = in_one_statement(conn, jobs)
            except sqlite3.IntegrityError:
                # Another writer (not one of the relay's, which wait for the turn) wrote first: its row took
                # an id this statement chose. The statement wrote nothing; the transaction decides again.
                return None
        return results

    def _transaction(self, jobs: list[WriteJob[Any]]) -> list[Any]:
        """On the writer thread: one transaction around every job of the batch."""
        conn = self._writer_connection()
        with turn_taken(self._turn):
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = _run(conn, jobs)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        return results

    def _as_store_error(self, error: Exception) -> Exception:
        if not isinstance(error, sqlite3.Error):
            return error
        return self.commit_failed(f"{type(error).__name__}: {error}")

    def commit_succeeded(self) -> None:
        """A commit of this file went through (here or in intake's process): the last failure is behind it."""
        self.last_commit_error = None

    def commit_failed(self, error: str) -> StoreUnavailable:
        """A commit of this file failed with `error` (here or in intake's process): said where operators look
        (the log, readiness), and the failure its callers hear."""
        self.last_commit_error = error
        self.failed_commit_error = error
        self.commit_failures += 1
        log.error("store.commit_failed", error=error)
        return StoreUnavailable(error)

    async def schema_version(self) -> int:
        """The newest migration applied to the file."""
        row = await one(self.reader, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", ())
        return int(row[0]) if row else 0

    async def readiness_problems(self) -> list[str]:
        """Why the database cannot take webhooks now; empty when it can."""
        problems = []
        reported = self._failures_reported
        try:
            version = await self.schema_version()
            if version < LATEST_VERSION:
                problems.append(f"database schema at version {version}, expected {LATEST_VERSION}")
            await self.write(_touch_probe)
        except (StoreUnavailable, sqlite3.Error) as error:
            problems.append(f"database not writable: {error}")
        # The probe's one page can fit where a batch of webhooks does not (a full disk still takes a commit
        # into WAL space the file already holds): a commit failed since the last reading fails this one too.
        failures, self._failures_reported = self.commit_failures, self.commit_failures
        if not problems and failures > reported:
            problems.append(f"database not writable: {self.failed_commit_error}")
        return problems


def _run(conn: sqlite3.Connection, jobs: list[WriteJob[Any]]) -> list[Any]:
    """Each job's result in order: a run of neighbours with the same `together` runs as one."""
    results: list[Any] = []
    for together, group in itertools.groupby(jobs, key=lambda job: getattr(job, "together", None)):
        run = list(group)
        if together is None or len(run) == 1:
            results.extend(job(conn) for job in run)
        else:
            results.extend(together(conn, run))
    return results


def _open_turn(path: Path) -> int:
    """The turn file beside the database, which every relay process's writer locks around its transaction."""
    try:
        return os.open(f"{path}-turn", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise DatabaseUnusable(f"{path}-turn: cannot open: {error.strerror}") from None


def _hand_back(batch: list[_Entry], outcome: list[Any] | Exception) -> None:
    """From the writer thread: the batch's callers hear its outcome on their loop, in one wake-up."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to hear it
        batch[0].done.get_loop().call_soon_threadsafe(_settle, batch, outcome)


def _settle(batch: list[_Entry], outcome: list[Any] | Exception) -> None:
    if isinstance(outcome, Exception):
        fail(batch, outcome)
    else:
        settle(batch, outcome)


def _check_writable(conn: sqlite3.Connection) -> None:
    """Fail now if the file cannot be written: a read-only one, already migrated, opens and reads fine."""
    (timeout_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
    # Without waiting: a lock held by another writer proves the file writable, and must not delay a start.
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE relay_write_probe (x)")
    except sqlite3.OperationalError as error:
        if not _is_busy(error):
            raise
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")


def _is_busy(error: BaseException) -> bool:
    """SQLite's "database is locked" (another connection holds the lock), as opposed to a lasting fault."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _touch_probe(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('ready_probe', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
