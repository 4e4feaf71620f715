"""The web process's side of SQLite intake's writer process: it starts it, and sends it runs of webhooks."""

import asyncio
import contextlib
import marshal
import socket
import subprocess
import sys
from pathlib import Path

import structlog

from relay.store.api import StoreUnavailable
from relay.store.batching import MAX_BATCH, Deadlines, Waiting, fail, settle, waiting
from relay.store.records import StoredWebhook
from relay.store.sqlite.intake import RecordWebhook, stored_arrivals
from relay.store.sqlite.intake_process import HEADER, UNAVAILABLE, Answer, frame
from relay.store.sqlite.writer import Database

# The writer thread's logger: operators find every commit of the file under one name.
log = structlog.get_logger("relay.store.sqlite.writer")

# The folder that holds the relay package, for the process's module path (`python -I -S` sets none).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])
_START = (
    "import sys; sys.path.insert(0, sys.argv[1]); from relay.store.sqlite.intake_process import main; main()"
)

# A webhook waiting for its run's answer: the StoredWebhook, or None for the writer thread to decide it.
_Entry = Waiting[RecordWebhook, StoredWebhook | None]


class IntakeProcess(asyncio.Protocol):
    """New webhooks stored by a process of their own, which leaves the GIL to the event loop.

    Under load the event loop is the web process's bottleneck, and a writer thread beside it takes the GIL
    from it at every statement. A run of webhooks is sent while none is in flight, as the writer thread
    batches its own. A webhook whose rating is known, or that SQLite refused, comes back None: the writer
    thread decides it in a transaction. Once the process has ended, the writer thread takes every webhook.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._deadlines = Deadlines(database.timeout_s)
        self._process: asyncio.subprocess.Process | None = None
        self._transport: asyncio.Transport | None = None
        self._waiting: list[_Entry] = []
        self._in_flight: list[_Entry] | None = None
        self._sending = False
        self._answers = bytearray()
        self._idle = asyncio.Event()
        self._ended: asyncio.Task[None] | None = None
        self.running = False
        # Runs the process committed: its group commit's measure, as Database.commits is the writer thread's.
        self.commits = 0

    async def start(self) -> None:
        """Start the process on a socket pair, of which it holds one end."""
        ours, theirs = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-I", "-S", "-c", _START, _PACKAGE_ROOT, str(theirs.fileno())),
                *(str(self.database.path), str(self.database.timeout_s)),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        await asyncio.get_running_loop().create_unix_connection(lambda: self, sock=ours)
        self.running = True
        self._idle.set()

    def record(self, job: RecordWebhook) -> asyncio.Future[StoredWebhook | None]:
        """What the process stored for `job` once committed, or None for the writer thread to store it."""
        entry: _Entry = waiting(job)
        self._waiting.append(entry)
        self._idle.clear()
        if self._in_flight is None and not self._sending:
            # Sent once the loop has run what is ready now: webhooks read meanwhile join the run.
            self._sending = True
            asyncio.get_running_loop().call_soon(self._send)
        return self._deadlines.committed(entry)

    def _send(self) -> None:
        self._sending = False
        if self._transport is None or not self._waiting:
            return
        run, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
        self._in_flight = run
        self._transport.write(frame([entry.item.arrival() for entry in run]))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        answers = self._answers
        answers += data
        while len(answers) >= HEADER.size:
            end = HEADER.size + HEADER.unpack_from(answers)[0]
            if len(answers) < end:
                break
            answer: Answer = marshal.loads(answers[HEADER.size : end])
            del answers[:end]
            self._answered(answer)

    def _answered(self, answer: Answer) -> None:
        run, self._in_flight = self._in_flight or [], None
        if isinstance(answer, list):
            self.commits += 1
            self.database.commit_succeeded()
            stored: list[StoredWebhook | None] = []
            stored += stored_arrivals([entry.item for entry in run], answer)
            settle(run, stored)
        elif answer is not None and answer[0] == UNAVAILABLE:
            fail(run, self.database.commit_failed(answer[1]))
        else:
            if answer is not None:
                log.warning("store.intake_refused", error=answer[1], webhooks=len(run))
            settle(run, _writer_thread(run))
        if self._waiting:
            self._send()
        else:
            self._idle.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.running:
            return
        self.running = False
        # The run in flight may have been committed: its callers answer 503; a resend reads as a duplicate.
        run, self._in_flight = self._in_flight or [], None
        fail(run, StoreUnavailable("the intake process ended before answering"))
        settle(self._waiting, _writer_thread(self._waiting))
        self._waiting = []
        self._idle.set()
        self._ended = asyncio.ensure_future(self._report_end())

    async def _report_end(self) -> None:
        """Say, with its exit status once known, that the process ended before its store closed."""
        returncode = None
        if self._process is not None:
            with contextlib.suppress(TimeoutError):
                returncode = await asyncio.wait_for(self._process.wait(), self.database.timeout_s)
        log.error(
            "store.intake_process_ended",
            returncode=returncode,
            note="new webhooks go through the writer thread until the relay restarts",
        )

    async def close(self) -> None:
        """Wait for the runs sent or waiting (up to the timeout), close the socket, and reap the process."""
        if self.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.database.timeout_s)
        self.running = False
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._ended is not None:
            await self._ended
        if self._process is not None:
            process, self._process = self._process, None
            # It ends once it reads the end of the socket; one stuck in a write is ended.
            try:
                await asyncio.wait_for(process.wait(), self.database.timeout_s)
            except TimeoutError:
                process.kill()
                await process.wait()


def _writer_thread(run: list[_Entry]) -> list[StoredWebhook | None]:
    """The answer that sends each webhook of `run` to the writer thread."""
    return [None] * len(run)
