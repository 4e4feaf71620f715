"""One delivery worker per SQLite file: a lock beside the database, held for the worker's whole life."""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from relay.store.api import DatabaseUnusable


class WorkerAlreadyRunning(DatabaseUnusable):
    """Another relay worker delivers from this database: two would break "one send per inquiry"."""


@contextmanager
def sole_worker(database_path: Path) -> Iterator[None]:
    """Hold the database's worker lock, or raise WorkerAlreadyRunning naming the process that holds it."""
    lock_path = database_path.with_name(database_path.name + ".worker-lock")
    try:
        database_path.parent.mkdir(parents=True, exist_ok=True)
        # The kernel drops a flock when its holder exits, however it dies: no stale lock after a SIGKILL.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise DatabaseUnusable(
            f"{database_path}: cannot keep a worker lock beside it: {error.strerror}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise WorkerAlreadyRunning(
                f"{database_path}: another relay worker (pid {holder}) delivers from it; on SQLite only one "
                "may (start this one as `relay serve --no-worker`, or stop the other)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
