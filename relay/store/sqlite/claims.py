"""Deliveries as a worker sees them: claiming due ones under a lease, and recording what became of each."""

import functools
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from relay.store.records import LEASE_LOST, ClaimedDelivery, Finish, Outcome
from relay.store.sqlite.holds import release_holds
from relay.store.sqlite.instants import from_text, to_text
from relay.store.sqlite.many import Insert, insert_many
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
        # Each row's columns by position, in RETURNING's order: a lookup by name compares it with every
        # column's name in turn, nine times a row.
        return [
            ClaimedDelivery(
                id_,
                tenant,
                merchant_id,
                rating_id,
                rating,
                inquiry_id,
                attempts,
                bool(unconfirmed),
                from_text(age),
            )
            for id_, tenant, merchant_id, rating_id, rating, inquiry_id, attempts, unconfirmed, age in rows
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
        ids = [finish.outcome.delivery_id for finish in finishes]
        if len(set(ids)) == len(ids):
            kept = _store(conn, finishes, leases, stamp)
            held = [delivery_id in kept for delivery_id in ids]
        else:
            # One delivery twice: the first finish to store it ends its lease for the next, so one by one.
            held = [bool(_store(conn, [finish], leases, stamp)) for finish in finishes]
        answers = [
            _follow_up(conn, finish.outcome, stamp) if leased else LEASE_LOST
            for finish, leased in zip(finishes, held, strict=True)
        ]
        stored = [
            finish.outcome for finish, answer in zip(finishes, answers, strict=True) if answer != LEASE_LOST
        ]
        # The calls of every outcome stored (a statement per power of two in their count), and the release of
        # their inquiries. In the same transaction: an inquiry is free exactly when its delivery's outcome is.
        calls: list[object] = []
        for outcome in stored:
            for call in outcome.calls:
                calls += (
                    outcome.delivery_id,
                    outcome.attempts,
                    call.action,
                    to_text(call.started_at),
                    call.duration_ms,
                    call.status_code,
                    call.outcome,
                    call.error,
                )
        insert_many(conn, _NEW_ATTEMPT, calls)
        release_holds(conn, [outcome.delivery_id for outcome in stored])
        return answers

    return job


def _store(
    conn: sqlite3.Connection, finishes: Sequence[Finish], leases: dict[datetime, str], stamp: str
) -> set[int]:
    """The finishes' delivery rows, each still leased as its finish says, in one statement per power of two
    in their count; the ids stored. Their calls and their inquiries' release are the caller's (a hold lost
    with its lease is the new lessee's: left alone). Each finish's delivery appears once."""
    values: list[object] = [stamp]
    for finish in finishes:
        outcome = finish.outcome
        values += (
            outcome.delivery_id,
            outcome.state,
            outcome.attempts,
            int(outcome.unconfirmed),
            to_text(outcome.next_attempt_at) if outcome.next_attempt_at else None,
            outcome.inquiry_id,
            outcome.last_status,
            outcome.last_error,
            outcome.current_rating,
            leases[finish.leased_until],
        )
    stored: set[int] = set()
    start = 0
    while start < len(finishes):
        size = 1 << ((len(finishes) - start).bit_length() - 1)
        rows = values[1 + start * _WIDTH : 1 + (start + size) * _WIDTH]
        stored.update(row[0] for row in conn.execute(_update_statement(size), [stamp, *rows]))
        start += size
    return stored


_NEW_ATTEMPT = Insert(
    "attempts",
    "delivery_id, number, action, started_at, duration_ms, status_code, outcome, error",
    tuple(range(1, 9)),
)
_WIDTH = 10  # the values of each finish's row in _update_statement


@functools.cache
def _update_statement(count: int) -> str:
    """The UPDATE storing `count` finishes' rows, its values numbered: ?1 the instant, then each row's."""
    rows = ", ".join(
        "(" + ", ".join(f"?{2 + n * _WIDTH + column}" for column in range(_WIDTH)) + ")" for n in range(count)
    )
    # Each row's outcome joins its delivery by id (a seek on the primary key), while still leased as it was.
    return f"""
        WITH o (id, state, attempts, unconfirmed, next_attempt_at, inquiry_id, last_status, last_error,
            current_rating, leased_until) AS (VALUES {rows})
        UPDATE deliveries SET state = o.state, attempts = o.attempts, unconfirmed = o.unconfirmed,
            next_attempt_at = o.next_attempt_at, inquiry_id = COALESCE(o.inquiry_id, deliveries.inquiry_id),
            last_status = COALESCE(o.last_status, deliveries.last_status), last_error = o.last_error,
            current_rating = COALESCE(o.current_rating, deliveries.current_rating), updated_at = ?1,
            delivered_at = CASE WHEN o.state = 'delivered' THEN ?1 ELSE deliveries.delivered_at END
        FROM o WHERE deliveries.id = o.id
            AND deliveries.state = 'sending' AND deliveries.next_attempt_at = o.leased_until
        RETURNING deliveries.id
        """


def _follow_up(conn: sqlite3.Connection, outcome: Outcome, stamp: str) -> str:
    """What a stored outcome's delivery became: its state, unless a link or a newer version changed it."""
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
