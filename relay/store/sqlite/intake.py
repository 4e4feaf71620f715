"""Inbound webhooks: the raw bytes of each, and for a usable rating its delivery row, in one transaction."""

import json
import sqlite3
from dataclasses import replace
from datetime import datetime

from relay.domain.judgement import Judgement
from relay.domain.rating import Rating
from relay.store.records import InboundWebhook, StoredWebhook, WebhookStatus
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob


def record_webhook(inbound: InboundWebhook, *, recheck_before: datetime) -> WriteJob[StoredWebhook]:
    """A write job that stores `inbound` and, for a new rating version, its pending delivery.

    A rating created before `recheck_before` may have been delivered and pruned since: its delivery
    starts unconfirmed, so the worker reads the inquiry back before it sends.
    """

    def job(conn: sqlite3.Connection) -> StoredWebhook:
        rating = inbound.judgement.rating
        if inbound.judgement.status != "accepted" or rating is None:
            webhook_id = _insert_webhook(conn, inbound, inbound.judgement.status)
            return StoredWebhook(webhook_id, inbound.judgement.status)
        versions = conn.execute(
            "SELECT id, version FROM deliveries WHERE merchant_id = ? AND rating_id = ?",
            (rating.merchant_id, rating.rating_id),
        ).fetchall()
        for row in versions:
            if row["version"] == rating.version:
                webhook_id = _insert_webhook(conn, inbound, "duplicate")
                return StoredWebhook(webhook_id, "duplicate", delivery_id=row["id"])
        webhook_id = _insert_webhook(conn, inbound, "accepted")
        # A version older than one already known is kept for the record (the webhook row says accepted,
        # its delivery superseded) but never delivered.
        outdated = any(row["version"] > rating.version for row in versions)
        recheck = rating.created_at is not None and rating.created_at < recheck_before
        delivery_id = _insert_delivery(conn, webhook_id, inbound, rating, outdated, recheck)
        # With no other version stored there is nothing to supersede: skip the statement.
        if outdated:
            return StoredWebhook(webhook_id, "superseded", delivery_id=delivery_id)
        superseded = _supersede_older(conn, rating, inbound.received_at) if versions else []
        return StoredWebhook(webhook_id, "accepted", delivery_id=delivery_id, superseded=superseded)

    return job


def reprocess_webhook(
    webhook_id: int, judgement: Judgement, *, now: datetime, recheck_before: datetime
) -> WriteJob[StoredWebhook | None]:
    """A write job that stores a new judgement of a quarantined webhook's body, as if it arrived `now`.

    The webhook keeps its id, bytes and request id; its status, ids and errors become the judgement's, and
    a usable rating gets a pending delivery (or is a duplicate) exactly as `record_webhook` decides for a
    new arrival, `recheck_before` included. None when the webhook is unknown or no longer quarantined.
    """

    def job(conn: sqlite3.Connection) -> StoredWebhook | None:
        row = conn.execute(
            "SELECT status, request_id, content_type, body, tenant, dismissed_at FROM webhooks WHERE id = ?",
            (webhook_id,),
        ).fetchone()
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
        # record_webhook decides as for a new arrival, in a row of its own; that row is folded into this one.
        stored = record_webhook(inbound, recheck_before=recheck_before)(conn)
        conn.execute(
            "UPDATE webhooks SET (status, webhook_type, merchant_id, rating_id, errors) = "
            "(SELECT status, webhook_type, merchant_id, rating_id, errors FROM webhooks WHERE id = :new) "
            "WHERE id = :original",
            {"new": stored.webhook_id, "original": webhook_id},
        )
        if stored.status == "accepted" and stored.delivery_id is not None:
            conn.execute(
                "UPDATE deliveries SET webhook_id = ? WHERE id = ?", (webhook_id, stored.delivery_id)
            )
        conn.execute("DELETE FROM webhooks WHERE id = ?", (stored.webhook_id,))
        return replace(stored, webhook_id=webhook_id)

    return job


def _supersede_older(conn: sqlite3.Connection, rating: Rating, now: datetime) -> list[int]:
    """Older versions of `rating` still waiting are superseded; one in flight finishes first."""
    rows = conn.execute(
        "UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL, updated_at = ? "
        "WHERE merchant_id = ? AND rating_id = ? AND version < ? "
        "AND state IN ('pending', 'retrying', 'unmatched') RETURNING id",
        (to_text(now), rating.merchant_id, rating.rating_id, rating.version),
    ).fetchall()
    return sorted(int(row["id"]) for row in rows)


def _insert_webhook(conn: sqlite3.Connection, inbound: InboundWebhook, status: WebhookStatus) -> int:
    cursor = conn.execute(
        "INSERT INTO webhooks (received_at, request_id, status, webhook_type, merchant_id, rating_id, "
        "errors, content_type, body, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            to_text(inbound.received_at),
            inbound.request_id,
            status,
            inbound.judgement.webhook_type,
            inbound.judgement.merchant_id,
            inbound.judgement.rating_id,
            json.dumps(list(inbound.judgement.errors)) if inbound.judgement.errors else None,
            inbound.content_type,
            inbound.body,
            inbound.tenant,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _insert_delivery(
    conn: sqlite3.Connection,
    webhook_id: int,
    inbound: InboundWebhook,
    rating: Rating,
    outdated: bool,
    recheck: bool,
) -> int:
    stamp = to_text(inbound.received_at)
    cursor = conn.execute(
        "INSERT INTO deliveries (webhook_id, tenant, merchant_id, rating_id, version, external_id, stars, "
        "rating, state, next_attempt_at, unconfirmed, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            webhook_id,
            inbound.tenant,
            rating.merchant_id,
            rating.rating_id,
            rating.version,
            rating.external_id,
            rating.stars,
            rating.model_dump_json(),
            "superseded" if outdated else "pending",
            None if outdated else stamp,
            int(recheck),
            stamp,
            stamp,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid
