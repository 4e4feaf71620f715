"""Inbound webhooks: the raw bytes of each, and for a usable rating its delivery row, in one transaction."""

import json
from dataclasses import replace
from datetime import datetime

import asyncpg

from relay.domain.judgement import Judgement
from relay.domain.rating_json import rating_json
from relay.store.postgres.connection import Conn
from relay.store.postgres.instants import micros
from relay.store.records import InboundWebhook, StoredWebhook

# The decision (duplicate, superseded, accepted) is the database function's: see migrations 0001 and 0008.
# Its argument is the batch as an array of rows (migration 0011): the driver encodes a row's fields without
# the per-element checks it makes on arrays of columns; each arrival's instant as microseconds (0014).
_RECORD = "SELECT * FROM relay_record_arrivals($1::relay_arrival[])"

Arrival = tuple[InboundWebhook, datetime]

# A second batch goes while one is in flight only once this many webhooks wait (see GroupCommit): at 1,000
# webhooks a second, batches of 2-3 sent at once waited for the other connection's flush and then their own
# (p50 of a batch's round trip 2.1-3.6 ms against 1.4-1.9 waiting); at saturation, batches of 20-30 keep
# overlapping, their 0.6-0.9 ms of the server's work hidden behind the other's flush.
OVERLAP_AT = 16


def _arguments(inbound: InboundWebhook, recheck_before: datetime) -> tuple[object, ...]:
    judgement = inbound.judgement
    rating = judgement.rating if judgement.status == "accepted" else None
    webhook = (
        micros(inbound.received_at),
        inbound.request_id,
        judgement.status,
        judgement.webhook_type,
        judgement.merchant_id,
        judgement.rating_id,
        json.dumps(list(judgement.errors)) if judgement.errors else None,
        inbound.content_type,
        inbound.body,
    )
    if rating is None:
        return (*webhook, None, None, None, None, None, None, None, inbound.tenant)
    # A rating created before `recheck_before` may have been delivered and pruned since: unconfirmed.
    recheck = rating.created_at is not None and rating.created_at < recheck_before
    return (
        *webhook,
        rating.merchant_id,
        rating.rating_id,
        rating.version,
        rating.external_id,
        rating.stars,
        rating_json(rating),
        recheck,
        inbound.tenant,
    )


def _stored(row: asyncpg.Record) -> StoredWebhook:
    # By position, in relay_record_webhooks' order (id, status, delivery, superseded): cheaper than by name.
    webhook_id, status, delivery_id, superseded = row
    return StoredWebhook(webhook_id, status, delivery_id, list(superseded))


async def record_webhooks(conn: Conn, arrivals: list[Arrival]) -> list[StoredWebhook]:
    """Store each webhook in order, by one call in one round trip (atomic, in the caller's transaction)."""
    rows = await conn.fetch(_RECORD, [_arguments(inbound, recheck) for inbound, recheck in arrivals])
    return [_stored(row) for row in rows]


async def reprocess_webhook(
    conn: Conn, webhook_id: int, judgement: Judgement, *, now: datetime, recheck_before: datetime
) -> StoredWebhook | None:
    """Judge a quarantined webhook again as if it arrived `now`; it keeps its id, bytes and request id."""
    row = await conn.fetchrow(
        "SELECT status, request_id, content_type, body, tenant, dismissed_at FROM webhooks WHERE id = $1 "
        "FOR UPDATE",
        webhook_id,
    )
    # A dismissed one stays as an operator closed it.
    if row is None or row["status"] != "quarantined" or row["dismissed_at"] is not None:
        return None
    inbound = InboundWebhook(
        request_id=row["request_id"],
        received_at=now,
        body=bytes(row["body"]),
        content_type=row["content_type"],
        judgement=judgement,
        tenant=row["tenant"],
    )
    # Decided as for a new arrival, in a row of its own; that row is folded into the original.
    (stored,) = await record_webhooks(conn, [(inbound, recheck_before)])
    await conn.execute(
        "UPDATE webhooks SET (status, webhook_type, merchant_id, rating_id, errors) = "
        "(SELECT status, webhook_type, merchant_id, rating_id, errors FROM webhooks WHERE id = $1) "
        "WHERE id = $2",
        stored.webhook_id,
        webhook_id,
    )
    if stored.status == "accepted" and stored.delivery_id is not None:
        await conn.execute(
            "UPDATE deliveries SET webhook_id = $1 WHERE id = $2", webhook_id, stored.delivery_id
        )
    await conn.execute("DELETE FROM webhooks WHERE id = $1", stored.webhook_id)
    return replace(stored, webhook_id=webhook_id)
