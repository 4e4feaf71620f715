"""The lock every relay writer of one SQLite file holds around its transaction (stdlib only)."""

import contextlib
import fcntl
from collections.abc import Iterator


@contextlib.contextmanager
def turn_taken(turn: int | None) -> Iterator[None]:
    """The turn file's lock, held around one transaction.

    Writers of several processes wanting SQLite's write lock at once would meet its busy handler, which
    sleeps 1, 2, 5 ... 100 ms between tries: a lock held for 3 ms costs a waiter tens of ms. Waiting in
    flock instead, the kernel wakes the next writer the moment the last lets go, in turn. The lock is the
    kernel's: it goes with its process however that process ends.
    """
    if turn is None:
        yield
        return
    fcntl.flock(turn, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(turn, fcntl.LOCK_UN)
