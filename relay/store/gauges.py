"""Store reads behind the operator gauges, and the worker heartbeat they report."""

import sqlite3
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from relay.domain.delivery import DELIVERY_STATES
from relay.domain.rating import format_instant
from relay.store.db import WriteJob

HEARTBEAT_KEY = "worker_heartbeat"
PAUSED_KEY = "worker_paused"


async def deliveries_by_state(conn: aiosqlite.Connection) -> dict[str, int]:
    """How many deliveries are in each state, every state present (0 when none)."""
    counts: dict[str, int] = dict.fromkeys(DELIVERY_STATES, 0)
    rows = await conn.execute_fetchall("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
    counts.update({row[0]: row[1] for row in rows})
    return counts


@dataclass(frozen=True)
class Backlog:
    """How long undelivered ratings have waited; None where no delivery is waiting or due."""

    # The oldest rating not yet delivered (pending, sending, retrying), since it was accepted or replayed.
    # Unmatched ones are left out: they wait for a link, not for Quivo, and die at RELAY_UNMATCHED_TTL.
    age_s: float | None
    # The earliest due delivery, since it fell due: how far the worker is behind its own schedule.
    worker_lag_s: float | None


async def read_backlog(conn: aiosqlite.Connection, now: datetime) -> Backlog:
    """The backlog's age and the worker's lag at `now`: the one definition every report uses."""
    # INDEXED BY: without ANALYZE statistics the planner would walk deliveries_state for either.
    # The age counts from when the worker's age limits do (a replay starts the clock again).
    async with conn.execute(
        """
        SELECT MIN(COALESCE(replayed_at, created_at)) FROM deliveries INDEXED BY deliveries_waiting
        WHERE state IN ('pending', 'retrying', 'sending')
        """
    ) as cursor:
        waiting = await cursor.fetchone()
    # The state list matches deliveries_due's own WHERE, so this reads one entry of that partial index.
    # A 'sending' row is due once its lease ran out (a relay died mid-send), just as claim_due sees it.
    async with conn.execute(
        """
        SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_due
        WHERE state IN ('pending', 'retrying', 'sending') AND next_attempt_at <= ?
        ORDER BY next_attempt_at LIMIT 1
        """,
        (format_instant(now),),
    ) as cursor:
        due = await cursor.fetchone()
    return Backlog(
        age_s=_seconds_since(waiting[0] if waiting else None, now),
        worker_lag_s=_seconds_since(due[0] if due else None, now),
    )


def _seconds_since(stamp: str | None, now: datetime) -> float | None:
    return None if stamp is None else (now - datetime.fromisoformat(stamp)).total_seconds()


async def worker_heartbeat(conn: aiosqlite.Connection) -> datetime | None:
    """When a worker last went round its loop, as it recorded with `beat`; None if none ever did."""
    async with conn.execute("SELECT value FROM meta WHERE key = ?", (HEARTBEAT_KEY,)) as cursor:
        row = await cursor.fetchone()
    return None if row is None else datetime.fromisoformat(row[0])


def beat(now: datetime, paused_reason: str | None = None) -> WriteJob[None]:
    """A write job recording that the worker's loop is alive at `now`, and why it is paused if it is."""

    def job(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (HEARTBEAT_KEY, format_instant(now)),
        )
        if paused_reason is None:
            conn.execute("DELETE FROM meta WHERE key = ?", (PAUSED_KEY,))
        else:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (PAUSED_KEY, paused_reason),
            )

    return job


async def worker_paused(conn: aiosqlite.Connection) -> str | None:
    """Why the worker has paused all deliveries (Quivo refuses its credentials), or None."""
    async with conn.execute("SELECT value FROM meta WHERE key = ?", (PAUSED_KEY,)) as cursor:
        row = await cursor.fetchone()
    return None if row is None else str(row[0])
