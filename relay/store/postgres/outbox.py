"""Deliveries as workers see them: claims under a lease, one hold per inquiry, outcomes, sweeps, pruning."""

from collections.abc import Mapping
from datetime import datetime
from typing import cast

from relay.store.postgres.connection import Conn
from relay.store.postgres.instants import micros
from relay.store.records import ClaimedDelivery, ExpiredDelivery, Outcome, PruneResult, Turn

# Due rows under a lease, planned once per session: see migration 0016.
_CLAIM = "SELECT * FROM relay_claim_due($1, $2, $3, $4)"


async def claim_due(
    conn: Conn, tenant: str, *, now: datetime, lease_until: datetime, limit: int
) -> list[ClaimedDelivery]:
    """Lease up to `limit` of the tenant's due deliveries, oldest due first; the inquiry from the links."""
    rows = await conn.fetch(_CLAIM, tenant, now, lease_until, limit)
    return [
        ClaimedDelivery(
            id=row["id"],
            tenant=row["tenant"],
            merchant_id=row["merchant_id"],
            rating_id=row["rating_id"],
            rating_json=row["rating"],
            inquiry_id=row["inquiry_id"],
            attempts=row["attempts"],
            unconfirmed=row["unconfirmed"],
            age_from=row["age_from"],
        )
        for row in sorted(rows, key=lambda row: (row["due_at"], row["id"]))
    ]


# Right before a call: the lease is renewed only if it is still the one this worker was given (a claim of
# the run-out lease wrote another), and only then is the inquiry taken. The primary key admits one holder
# per inquiry; a hold run out, or this delivery's own, is taken. One row whatever happens, so a batch's
# answers line up with its turns. Instants come as microseconds (see migration 0013).
# `leased` is the delivery still under its lease ($1, $3): _TURN renews it until $5, _TURN_KEPT reads it.
_TAKE_AND_ANSWER = """
taken AS (
    INSERT INTO inquiry_holds (tenant, inquiry_id, delivery_id, held_until)
    SELECT tenant, $2, id, relay_instant($5) FROM leased
    ON CONFLICT (tenant, inquiry_id) DO UPDATE
    SET delivery_id = excluded.delivery_id, held_until = excluded.held_until
    WHERE inquiry_holds.held_until <= relay_instant($4) OR inquiry_holds.delivery_id = excluded.delivery_id
    RETURNING 1)
SELECT CASE WHEN NOT EXISTS (SELECT FROM leased) THEN 'lost'
    WHEN EXISTS (SELECT FROM taken) THEN 'go' ELSE 'busy' END
"""
_TURN = (
    """
WITH leased AS (
    UPDATE deliveries SET next_attempt_at = relay_instant($5)
    WHERE id = $1 AND state = 'sending' AND next_attempt_at = relay_instant($3)
    RETURNING id, tenant),"""
    + _TAKE_AND_ANSWER
)

# For turns whose lease stays as it is ($5 = $3: a claim's, taken moments ago): the lease is only read, the
# row not written again (an update writes a new version of the row and of its index entries, the same
# values or not: 40 us of the server's time a turn, a quarter of its work in a drain).
_TURN_KEPT = (
    """
WITH leased AS (
    SELECT id, tenant FROM deliveries
    WHERE id = $1 AND state = 'sending' AND next_attempt_at = relay_instant($3)),"""
    + _TAKE_AND_ANSWER
)

# A delivery, its inquiry, the lease it holds, now, and the lease's new end.
TurnRequest = tuple[int, int, datetime, datetime, datetime]


async def take_turns(conn: Conn, requests: list[TurnRequest]) -> list[Turn]:
    """Renew each lease and take its inquiry, in order, in one pipelined round trip."""
    arguments = [
        (delivery_id, inquiry_id, micros(leased_until), micros(now), micros(until))
        for delivery_id, inquiry_id, leased_until, now, until in requests
    ]
    kept = all(leased_until == until for _, _, leased_until, _, until in arguments)
    return [cast(Turn, row[0]) for row in await conn.fetchmany(_TURN_KEPT if kept else _TURN, arguments)]


# Where each delivery went, its calls and the release of its inquiry: see migrations 0002 and 0013.
_RECORD_OUTCOMES = "SELECT * FROM relay_record_outcomes($1::relay_outcome[], $2::relay_call[])"

# An outcome, the lease its worker holds the delivery under, and now.
Recording = tuple[Outcome, datetime, datetime]


def _outcome_row(outcome: Outcome, leased_until: datetime, now: datetime) -> tuple[object, ...]:
    next_attempt_at = outcome.next_attempt_at
    return (
        outcome.delivery_id,
        micros(leased_until),
        outcome.state,
        outcome.attempts,
        outcome.unconfirmed,
        None if next_attempt_at is None else micros(next_attempt_at),
        outcome.inquiry_id,
        outcome.last_status,
        outcome.last_error,
        outcome.current_rating,
        micros(now),
    )


async def record_outcomes(conn: Conn, recordings: list[Recording]) -> list[str]:
    """Store each outcome in order, by one call in one round trip; each delivery's state now."""
    outcomes = [_outcome_row(*recording) for recording in recordings]
    calls = [
        (
            place,
            call.action,
            micros(call.started_at),
            call.duration_ms,
            call.status_code,
            call.outcome,
            call.error,
        )
        for place, (outcome, _, _) in enumerate(recordings, start=1)
        for call in outcome.calls
    ]
    rows = await conn.fetch(_RECORD_OUTCOMES, outcomes, calls)
    return [str(row[0]) for row in rows]


async def sweep_unmatched(
    conn: Conn, *, now: datetime, expire_before: Mapping[str, datetime]
) -> tuple[list[int], list[ExpiredDelivery]]:
    """Unmatched ones whose link now exists go back to pending (their ids); those of the tenants named
    in `expire_before` waiting since before the tenant's instant die."""
    woken = await conn.fetch(
        """
        UPDATE deliveries SET state = 'pending', next_attempt_at = $1, updated_at = $1
        WHERE state = 'unmatched' AND EXISTS (
            SELECT 1 FROM links l
            WHERE l.merchant_id = deliveries.merchant_id AND l.external_id = deliveries.external_id)
        RETURNING id
        """,
        now,
    )
    expired = await conn.fetch(
        """
        UPDATE deliveries SET state = 'dead', next_attempt_at = NULL, updated_at = $1,
            last_error = 'no Quivo inquiry found for this order within RELAY_UNMATCHED_TTL'
        FROM unnest($2::text[], $3::timestamptz[]) AS ttl (tenant, expire_before)
        WHERE state = 'unmatched' AND deliveries.tenant = ttl.tenant
          AND COALESCE(replayed_at, created_at) < ttl.expire_before
        RETURNING id, deliveries.tenant, merchant_id, rating_id, attempts
        """,
        now,
        list(expire_before),
        list(expire_before.values()),
    )
    return sorted(int(row["id"]) for row in woken), [
        ExpiredDelivery(row["id"], row["tenant"], row["merchant_id"], row["rating_id"], row["attempts"])
        for row in sorted(expired, key=lambda row: int(row["id"]))
    ]


# Waiting out a Quivo outage: retrying, not unsure, and its last call found Quivo unreachable (no answer to a
# send that certainly did not go out) or failing (5xx).
_HELD_BY_OUTAGE = """
    tenant = $2 AND state = 'retrying' AND NOT unconfirmed AND next_attempt_at > $1 AND (
        SELECT a.status_code IS NULL OR a.status_code >= 500 FROM attempts a
        WHERE a.delivery_id = deliveries.id ORDER BY a.id DESC LIMIT 1)
"""


async def inquiry_held_by_outage(conn: Conn, tenant: str, *, now: datetime) -> int | None:
    """The inquiry of the tenant's delivery waiting out an outage that is due soonest: what a probe reads."""
    inquiry = await conn.fetchval(
        f"SELECT inquiry_id FROM deliveries WHERE {_HELD_BY_OUTAGE} AND inquiry_id IS NOT NULL "
        "ORDER BY next_attempt_at LIMIT 1",
        now,
        tenant,
    )
    return None if inquiry is None else int(inquiry)


async def due_after_outage(conn: Conn, tenant: str, *, now: datetime) -> int:
    """The tenant's Quivo is back: each of its deliveries held only by the outage is due now (how many)."""
    status = await conn.execute(
        f"UPDATE deliveries SET next_attempt_at = $1, updated_at = $1 WHERE {_HELD_BY_OUTAGE}", now, tenant
    )
    return affected(status)


async def retry_unmatched(conn: Conn, *, now: datetime) -> int:
    """Every unmatched delivery is tried again (at start: the inquiry id pattern may have changed)."""
    status = await conn.execute(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = $1, updated_at = $1 "
        "WHERE state = 'unmatched'",
        now,
    )
    return affected(status)


# Oldest finished first, along the partial index on updated_at; other pruners' rows are skipped.
_FINISHED_DELIVERIES = """
WITH finished AS (
    DELETE FROM deliveries WHERE id IN (
        SELECT id FROM deliveries
        WHERE state IN ('delivered', 'superseded') AND updated_at < $1
        ORDER BY updated_at LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING id),
calls AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM finished) RETURNING 1)
SELECT (SELECT count(*) FROM finished), (SELECT count(*) FROM calls)
"""

# A delivery carries its webhook's merchant and rating ids, so the unique (merchant_id, rating_id, version)
# index finds any delivery still pointing at the webhook. Quarantined webhooks wait for an operator: one
# goes only once dismissed before the cutoff.
_SPENT_WEBHOOKS = """
DELETE FROM webhooks WHERE id IN (
    SELECT w.id FROM webhooks w
    WHERE w.received_at < $1
      AND (w.status IN ('accepted', 'duplicate', 'ignored')
           OR (w.status = 'quarantined' AND w.dismissed_at < $1))
      AND NOT EXISTS (
          SELECT 1 FROM deliveries d
          WHERE d.merchant_id = w.merchant_id AND d.rating_id = w.rating_id AND d.webhook_id = w.id)
    ORDER BY w.received_at LIMIT $2
    FOR UPDATE SKIP LOCKED)
"""


async def prune_batch(conn: Conn, *, older_than: datetime, batch_size: int) -> PruneResult:
    """Delete up to `batch_size` finished deliveries (with their attempts) and spent webhooks."""
    row = await conn.fetchrow(_FINISHED_DELIVERIES, older_than, batch_size)
    assert row is not None
    # After the deliveries, so a webhook whose last delivery went in this batch goes in it too.
    webhooks = await conn.execute(_SPENT_WEBHOOKS, older_than, batch_size)
    # Workers killed long ago never beat again, nor leave by themselves.
    await conn.execute("DELETE FROM workers WHERE beat_at < $1", older_than)
    return PruneResult(int(row[0]), int(row[1]), affected(webhooks))


def affected(status: str) -> int:
    """The row count of a command status such as 'UPDATE 3' or 'DELETE 0'."""
    return int(status.rsplit(" ", 1)[-1])
