"""Deliveries as the worker sees them: claiming due ones under a lease, and recording what became of each."""

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime

from relay.domain.rating import format_instant
from relay.store.db import Database, WriteJob


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery leased to this worker; `unconfirmed` means an earlier send may have reached Quivo."""

    id: int
    merchant_id: int
    rating_id: int
    rating_json: str
    inquiry_id: int | None
    attempts: int
    unconfirmed: bool
    created_at: str  # or when an operator last replayed it: age limits count from here


@dataclass(frozen=True)
class AttemptRecord:
    """One call made to Quivo for a delivery."""

    action: str  # 'send' or 'reconcile'
    started_at: datetime
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """Where a claimed delivery goes next, and what to remember of how it got there."""

    delivery_id: int
    state: str
    attempts: int
    unconfirmed: bool
    next_attempt_at: datetime | None = None
    inquiry_id: int | None = None
    last_status: int | None = None
    last_error: str | None = None
    current_rating: float | None = None
    calls: list[AttemptRecord] = field(default_factory=list)


async def commits_seen(database: Database) -> int:
    """SQLite's data_version on the reader: it changes whenever another connection commits (a cheap read)."""
    async with database.reader.execute("PRAGMA data_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def claim_due(*, now: datetime, lease_until: datetime, limit: int) -> WriteJob[list[ClaimedDelivery]]:
    """Lease up to `limit` due deliveries, oldest due first; fill in the inquiry from the links table."""

    def job(conn: sqlite3.Connection) -> list[ClaimedDelivery]:
        # A row still 'sending' here had its lease expire (a relay died mid-send): its send is unconfirmed.
        # A newer version waits while an older one of the same rating is in flight, so order is kept.
        # INDEXED BY: without ANALYZE statistics SQLite would walk deliveries_state and sort the backlog.
        rows = conn.execute(
            """
            UPDATE deliveries SET
                unconfirmed = CASE WHEN state = 'sending' THEN 1 ELSE unconfirmed END,
                state = 'sending',
                next_attempt_at = :lease_until,
                updated_at = :now,
                inquiry_id = COALESCE(inquiry_id, (
                    SELECT l.inquiry_id FROM links l
                    WHERE l.merchant_id = deliveries.merchant_id AND l.external_id = deliveries.external_id))
            WHERE id IN (
                SELECT d.id FROM deliveries d INDEXED BY deliveries_due
                WHERE d.state IN ('pending', 'retrying', 'sending') AND d.next_attempt_at <= :now
                  AND NOT EXISTS (
                      SELECT 1 FROM deliveries o
                      WHERE o.merchant_id = d.merchant_id AND o.rating_id = d.rating_id
                        AND o.version < d.version AND o.state = 'sending')
                ORDER BY d.next_attempt_at
                LIMIT :limit)
            RETURNING id, merchant_id, rating_id, rating, inquiry_id, attempts, unconfirmed,
                COALESCE(replayed_at, created_at) AS created_at
            """,
            {"now": format_instant(now), "lease_until": format_instant(lease_until), "limit": limit},
        ).fetchall()
        return [
            ClaimedDelivery(
                id=row["id"],
                merchant_id=row["merchant_id"],
                rating_id=row["rating_id"],
                rating_json=row["rating"],
                inquiry_id=row["inquiry_id"],
                attempts=row["attempts"],
                unconfirmed=bool(row["unconfirmed"]),
                created_at=row["created_at"],
            )
            for row in rows
        ]

    return job


def record_outcome(outcome: Outcome, *, now: datetime) -> WriteJob[str]:
    """Store where the delivery went return its state (a waiting one may be superseded)."""

    def job(conn: sqlite3.Connection) -> str:
        stamp = format_instant(now)
        conn.execute(
            """
            UPDATE deliveries SET state = ?, attempts = ?, unconfirmed = ?, next_attempt_at = ?,
                inquiry_id = COALESCE(?, inquiry_id), last_status = COALESCE(?, last_status),
                last_error = ?, current_rating = COALESCE(?, current_rating), updated_at = ?,
                delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END
            WHERE id = ?
            """,
            (
                outcome.state,
                outcome.attempts,
                int(outcome.unconfirmed),
                format_instant(outcome.next_attempt_at) if outcome.next_attempt_at else None,
                outcome.inquiry_id,
                outcome.last_status,
                outcome.last_error,
                outcome.current_rating,
                stamp,
                outcome.state,
                stamp,
                outcome.delivery_id,
            ),
        )
        if outcome.calls:
            conn.executemany(
                "INSERT INTO attempts (delivery_id, number, action, started_at, duration_ms, status_code, "
                "outcome, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        outcome.delivery_id,
                        outcome.attempts,
                        call.action,
                        format_instant(call.started_at),
                        call.duration_ms,
                        call.status_code,
                        call.outcome,
                        call.error,
                    )
                    for call in outcome.calls
                ],
            )
        if outcome.state == "unmatched":
            # A link may have been saved while this delivery was in flight: then it is not unmatched.
            linked = conn.execute(
                """
                UPDATE deliveries SET state = 'pending', next_attempt_at = ?
                WHERE id = ? AND EXISTS (
                    SELECT 1 FROM links l
                    WHERE l.merchant_id = deliveries.merchant_id AND l.external_id = deliveries.external_id)
                """,
                (stamp, outcome.delivery_id),
            )
            if linked.rowcount:
                return "pending"
        if outcome.state in ("pending", "retrying", "unmatched"):
            # A newer version arrived while this one was in flight: it takes over, this one stops here.
            superseded = conn.execute(
                """
                UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL
                WHERE id = ? AND EXISTS (
                    SELECT 1 FROM deliveries n
                    WHERE n.merchant_id = deliveries.merchant_id AND n.rating_id = deliveries.rating_id
                      AND n.version > deliveries.version)
                RETURNING id
                """,
                (outcome.delivery_id,),
            ).fetchall()
            if superseded:
                return "superseded"
        return outcome.state

    return job


@dataclass(frozen=True)
class ExpiredDelivery:
    """An unmatched delivery that died of waiting for its inquiry, as its `delivery.dead` line names it."""

    id: int
    merchant_id: int
    rating_id: int
    attempts: int


def wake_linked_and_expire_unmatched(
    *, now: datetime, expire_before: datetime
) -> WriteJob[tuple[list[int], list[ExpiredDelivery]]]:
    """Unmatched ones whose link now exists go back to pending (their ids); those waiting too long die."""

    def job(conn: sqlite3.Connection) -> tuple[list[int], list[ExpiredDelivery]]:
        stamp = format_instant(now)
        woken = conn.execute(
            """
            UPDATE deliveries SET state = 'pending', next_attempt_at = :now, updated_at = :now
            WHERE state = 'unmatched' AND EXISTS (
                SELECT 1 FROM links l
                WHERE l.merchant_id = deliveries.merchant_id AND l.external_id = deliveries.external_id)
            RETURNING id
            """,
            {"now": stamp},
        ).fetchall()
        expired = conn.execute(
            """
            UPDATE deliveries SET state = 'dead', next_attempt_at = NULL, updated_at = :now,
                last_error = 'no Quivo inquiry found for this order within RELAY_UNMATCHED_TTL'
            WHERE state = 'unmatched' AND COALESCE(replayed_at, created_at) < :expire_before
            RETURNING id, merchant_id, rating_id, attempts
            """,
            {"now": stamp, "expire_before": format_instant(expire_before)},
        ).fetchall()
        return [int(row["id"]) for row in woken], [
            ExpiredDelivery(row["id"], row["merchant_id"], row["rating_id"], row["attempts"])
            for row in expired
        ]

    return job


# Waiting out a Quivo outage: retrying, not unsure, and its last call found Quivo unreachable (no answer to a
# send that certainly did not go out) or failing (5xx).
_HELD_BY_OUTAGE = """
    state = 'retrying' AND unconfirmed = 0 AND next_attempt_at > :now AND (
        SELECT a.status_code IS NULL OR a.status_code >= 500 FROM attempts a
        WHERE a.delivery_id = deliveries.id ORDER BY a.id DESC LIMIT 1)
"""


def inquiry_held_by_outage(*, now: datetime) -> WriteJob[int | None]:
    """The inquiry of the delivery waiting out an outage that is due soonest: what a probe reads."""

    def job(conn: sqlite3.Connection) -> int | None:
        row = conn.execute(
            f"SELECT inquiry_id FROM deliveries WHERE {_HELD_BY_OUTAGE} AND inquiry_id IS NOT NULL "
            "ORDER BY next_attempt_at LIMIT 1",
            {"now": format_instant(now)},
        ).fetchone()
        return None if row is None else int(row["inquiry_id"])

    return job


def due_after_outage(*, now: datetime) -> WriteJob[int]:
    """Quivo is back: every delivery held only by the outage is due now (how many)."""

    def job(conn: sqlite3.Connection) -> int:
        cursor = conn.execute(
            f"UPDATE deliveries SET next_attempt_at = :now, updated_at = :now WHERE {_HELD_BY_OUTAGE}",
            {"now": format_instant(now)},
        )
        return cursor.rowcount

    return job


def retry_unmatched(*, now: datetime) -> WriteJob[int]:
    """Every unmatched delivery is tried again (at start: the inquiry id pattern may have changed)."""

    def job(conn: sqlite3.Connection) -> int:
        cursor = conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, updated_at = ? "
            "WHERE state = 'unmatched'",
            (format_instant(now), format_instant(now)),
        )
        return cursor.rowcount

    return job
