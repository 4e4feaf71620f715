"""Deliveries as a worker sees them: claiming due ones under a lease, and recording what became of each."""

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from relay.store.records import LEASE_LOST, ClaimedDelivery, Finish, Outcome
from relay.store.sqlite.holds import release_holds
from relay.store.sqlite.instants import from_text, to_text
from relay.store.sqlite.writer import WriteJob


def claim_due(
    tenant: str, *, now: datetime, lease_until: datetime, limit: int
) -> WriteJob[list[ClaimedDelivery]]:
    """Lease up to `limit` of the tenant's due deliveries, oldest due first; the inquiry from the links."""

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
                SELECT d.id FROM deliveries d INDEXED BY deliveries_due_tenant
                WHERE d.tenant = :tenant
                  AND (d.state = 'pending' OR d.state = 'retrying' OR d.state = 'sending')
                  AND d.next_attempt_at <= :now
                  AND NOT EXISTS (
                      SELECT 1 FROM deliveries o
                      WHERE o.merchant_id = d.merchant_id AND o.rating_id = d.rating_id
                        AND o.version < d.version AND o.state = 'sending')
                ORDER BY d.next_attempt_at
                LIMIT :limit)
            RETURNING id, tenant, merchant_id, rating_id, rating, inquiry_id, attempts, unconfirmed,
                COALESCE(replayed_at, created_at) AS age_from
            """,
            {"tenant": tenant, "now": to_text(now), "lease_until": to_text(lease_until), "limit": limit},
        ).fetchall()
        return [
            ClaimedDelivery(
                id=row["id"],
                tenant=row["tenant"],
                merchant_id=row["merchant_id"],
                rating_id=row["rating_id"],
                rating_json=row["rating"],
                inquiry_id=row["inquiry_id"],
                attempts=row["attempts"],
                unconfirmed=bool(row["unconfirmed"]),
                age_from=from_text(row["age_from"]),
            )
            for row in rows
        ]

    return job


def record_outcome(outcome: Outcome, *, leased_until: datetime, now: datetime) -> WriteJob[str]:
    """Store where the delivery went and release its inquiry; its state (a waiting one may be superseded),
    or LEASE_LOST with nothing written when the delivery is no longer leased until `leased_until`."""
    job = record_outcomes([Finish(outcome, leased_until)], now=now)
    return lambda conn: job(conn)[0]


def record_outcomes(finishes: Sequence[Finish], *, now: datetime) -> WriteJob[list[str]]:
    """A write job recording each finish in order, as record_outcome does: each one's answer."""

    def job(conn: sqlite3.Connection) -> list[str]:
        stamp = to_text(now)
        # Each lease spelled once: the deliveries of one claim finish under the same one.
        leases = {lease: to_text(lease) for lease in {finish.leased_until for finish in finishes}}
        answers = [_record(conn, finish.outcome, leases[finish.leased_until], stamp) for finish in finishes]
        stored = [
            finish.outcome for finish, answer in zip(finishes, answers, strict=True) if answer != LEASE_LOST
        ]
        # The calls of every outcome stored, and the release of their inquiries, a statement each for the
        # batch. In the same transaction: an inquiry is free exactly when its delivery's outcome is stored.
        calls = [
            (
                outcome.delivery_id,
                outcome.attempts,
                call.action,
                to_text(call.started_at),
                call.duration_ms,
                call.status_code,
                call.outcome,
                call.error,
            )
            for outcome in stored
            for call in outcome.calls
        ]
        if calls:
            conn.executemany(
                "INSERT INTO attempts (delivery_id, number, action, started_at, duration_ms, status_code, "
                "outcome, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                calls,
            )
        release_holds(conn, [outcome.delivery_id for outcome in stored])
        return answers

    return job


def _record(conn: sqlite3.Connection, outcome: Outcome, leased_until: str, stamp: str) -> str:
    """One outcome's delivery row, inside a write job; `leased_until` and `stamp` as stored. Its calls
    and its inquiry's release are the caller's (its hold, if lost, is the new lessee's: left alone)."""
    stored = conn.execute(
        """
        UPDATE deliveries SET state = ?, attempts = ?, unconfirmed = ?, next_attempt_at = ?,
            inquiry_id = COALESCE(?, inquiry_id), last_status = COALESCE(?, last_status),
            last_error = ?, current_rating = COALESCE(?, current_rating), updated_at = ?,
            delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END
        WHERE id = ? AND state = 'sending' AND next_attempt_at = ?
        """,
        (
            outcome.state,
            outcome.attempts,
            int(outcome.unconfirmed),
            to_text(outcome.next_attempt_at) if outcome.next_attempt_at else None,
            outcome.inquiry_id,
            outcome.last_status,
            outcome.last_error,
            outcome.current_rating,
            stamp,
            outcome.state,
            stamp,
            outcome.delivery_id,
            leased_until,
        ),
    )
    if not stored.rowcount:
        return LEASE_LOST
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
