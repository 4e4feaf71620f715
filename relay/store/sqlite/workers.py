"""The registry of live workers: each beats while it runs and leaves when it stops cleanly."""

import sqlite3
from datetime import datetime

import aiosqlite

from relay.store.records import WorkerBeat
from relay.store.sqlite.instants import from_text, to_text
from relay.store.sqlite.writer import WriteJob


def beat(worker: WorkerBeat) -> WriteJob[None]:
    """A write job recording that the worker is alive, and why it holds deliveries if it does."""

    def job(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO workers (worker_id, host, pid, started_at, beat_at, paused_reason) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET host = excluded.host, "
            "pid = excluded.pid, started_at = excluded.started_at, beat_at = excluded.beat_at, "
            "paused_reason = excluded.paused_reason",
            (
                worker.worker_id,
                worker.host,
                worker.pid,
                to_text(worker.started_at),
                to_text(worker.beat_at),
                worker.paused_reason,
            ),
        )

    return job


def forget_worker(worker_id: str) -> WriteJob[None]:
    """A write job removing a worker that stopped cleanly from the registry."""

    def job(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    return job


async def live_workers(conn: aiosqlite.Connection, *, since: datetime) -> list[WorkerBeat]:
    """Workers that beat at or after `since`, oldest started first."""
    rows = await conn.execute_fetchall(
        "SELECT worker_id, host, pid, started_at, beat_at, paused_reason FROM workers "
        "WHERE beat_at >= ? ORDER BY started_at, worker_id",
        (to_text(since),),
    )
    return [
        WorkerBeat(
            worker_id=row["worker_id"],
            host=row["host"],
            pid=row["pid"],
            started_at=from_text(row["started_at"]),
            beat_at=from_text(row["beat_at"]),
            paused_reason=row["paused_reason"],
        )
        for row in rows
    ]
