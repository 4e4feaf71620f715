"""SQLite intake's writer process: it stores each run of new webhooks the web process sends, and answers ids.

Stdlib only, started with `python -I -S`: it needs none of the relay's dependencies, and starts in
milliseconds. A frame each way is a 4-byte big-endian length and a `marshal`led value: a list of arrivals
in, and back their ids, or why not (see Answer).
"""

import io
import marshal
import os
import signal
import socket
import sqlite3
import struct
import sys

from relay.store.sqlite.arrivals import Arrival, ArrivalIds, store_arrivals
from relay.store.sqlite.turns import turn_taken

HEADER = struct.Struct(">I")
UNAVAILABLE, REFUSED = "unavailable", "refused"
# The answer to a run: its ids; None when a rating is known or an id was taken (the web process's writer
# thread decides the run in a transaction); or (UNAVAILABLE or REFUSED, the error), nothing written.
Answer = ArrivalIds | tuple[str, str] | None


def main() -> None:
    """`python -I -S -c ... ROOT FD PATH TIMEOUT_S`: serve the socket FD until the web process closes it."""
    fd, path, timeout_s = int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    # The web process decides when this one ends (by closing the socket, or by ending itself): a signal to
    # the whole process group must not end it before the web process has heard the answers it awaits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = socket.socket(fileno=fd)
    conn = sqlite3.connect(path, isolation_level=None, timeout=timeout_s)
    # As the writer thread's connection: a commit is on disk before it is answered; the web process's
    # checkpointer copies the WAL into the file.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    turn = os.open(f"{path}-turn", os.O_RDWR | os.O_CLOEXEC)
    frames = channel.makefile("rb")
    try:
        while (run := next_run(frames)) is not None:
            channel.sendall(frame(stored(conn, turn, run)))
    except OSError:
        pass  # the web process ended while its answer was being sent: nobody is left to hear it
    conn.close()


def next_run(frames: io.BufferedIOBase) -> list[Arrival] | None:
    """The next run the web process sent; None once it closed the socket, or ended."""
    header = frames.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    size = HEADER.unpack(header)[0]
    payload = frames.read(size)
    if len(payload) < size:
        return None
    run: list[Arrival] = marshal.loads(payload)
    return run


def stored(conn: sqlite3.Connection, turn: int, run: list[Arrival]) -> Answer:
    """The run's ids once committed, or (see Answer) why not, with nothing written."""
    with turn_taken(turn):
        try:
            return store_arrivals(conn, run)
        except sqlite3.IntegrityError:
            # A writer that does not wait for the turn took one of the ids: the writer thread decides again.
            return None
        except sqlite3.OperationalError as error:
            # The file's own fault (locked, full, read-only, I/O): the writer thread would meet it too.
            return (UNAVAILABLE, f"{type(error).__name__}: {error}")
        except Exception as error:
            # A value SQLite refused: the writer thread stores the run webhook by webhook, to find it.
            return (REFUSED, f"{type(error).__name__}: {error}")


def frame(value: list[Arrival] | Answer) -> bytes:
    """`value` as one frame: its length, then its bytes."""
    payload = marshal.dumps(value)
    return HEADER.pack(len(payload)) + payload
