"""Workers' heartbeats as the tests record them: on a relay's open store, or on a database file."""

import asyncio
from datetime import datetime
from pathlib import Path

from relay.store import create_store
from relay.store.records import WorkerBeat


def worker_beat(at: datetime, paused_reason: str | None = None) -> WorkerBeat:
    """One worker's beat at `at`, paused for `paused_reason` if given."""
    return WorkerBeat("test-worker", "test-host", 4242, at, at, paused_reason)


def beat_on_file(path: Path, at: datetime, paused_reason: str | None = None) -> None:
    """A worker's beat on the SQLite file at `path`, as another process beside the relay would record it."""

    async def record() -> None:
        store = create_store(f"sqlite:///{path}", timeout_s=5, pool_size=1)
        await store.open()
        try:
            await store.beat(worker_beat(at, paused_reason))
        finally:
            await store.close()

    asyncio.run(record())
