"""Inbound webhooks: the raw bytes of each, and for a usable rating its delivery row, in one transaction."""

import json
import sqlite3
from dataclasses import replace
from datetime import datetime

from relay.domain.judgement import Judgement
from relay.domain.rating import Rating
from relay.domain.rating_json import rating_json
from relay.store.records import InboundWebhook, StoredWebhook, WebhookStatus
from relay.store.sqlite.arrivals import Arrival, ArrivalIds, store_arrivals
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob


class RecordWebhook:
    """A write job that stores `inbound` and, for a new rating version, its pending delivery.

    A rating created before `recheck_before` may have been delivered and pruned since: its delivery
    starts unconfirmed, so the worker reads the inquiry back before it sends.
    """

    def __init__(self, inbound: InboundWebhook, recheck_before: datetime) -> None:
        self.inbound = inbound
        self.recheck_before = recheck_before

    def __call__(self, conn: sqlite3.Connection) -> StoredWebhook:
        inbound = self.inbound
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
        delivery_id = _insert_delivery(conn, _delivery_row(webhook_id, self, outdated=outdated))
        # With no other version stored there is nothing to supersede: skip the statement.
        if outdated:
            return StoredWebhook(webhook_id, "superseded", delivery_id=delivery_id)
        superseded = _supersede_older(conn, rating, inbound.received_at) if versions else []
        return StoredWebhook(webhook_id, "accepted", delivery_id=delivery_id, superseded=superseded)

    @staticmethod
    def together(conn: sqlite3.Connection, jobs: "list[RecordWebhook]") -> list[StoredWebhook]:
        """A run of webhooks, inside a transaction: in one statement when none of its ratings is known yet
        (see arrive), else webhook by webhook."""
        return RecordWebhook.arrive(conn, jobs) or [job(conn) for job in jobs]

    def arrival(self) -> Arrival:
        """The row values `store_arrivals` takes for this webhook, as if its rating were new."""
        inbound = self.inbound
        judgement = inbound.judgement
        rating = judgement.rating
        if judgement.status != "accepted" or rating is None:
            return _webhook_row(inbound, judgement.status), None
        recheck = rating.created_at is not None and rating.created_at < self.recheck_before
        delivery = (rating.version, rating.external_id, rating.stars, rating_json(rating), int(recheck))
        return _webhook_row(inbound, "accepted"), delivery

    @staticmethod
    def arrive(conn: sqlite3.Connection, jobs: "list[RecordWebhook]") -> list[StoredWebhook] | None:
        """A run of webhooks stored in one statement (see arrivals.store_arrivals); None, with nothing
        written, when one of its ratings is known already or comes twice."""
        ids = store_arrivals(conn, [job.arrival() for job in jobs])
        return None if ids is None else stored_arrivals(jobs, ids)

    # Alone in a batch of its kind, the writer runs `arrive` outside a transaction (see writer.py).
    in_one_statement = arrive


def record_webhook(inbound: InboundWebhook, *, recheck_before: datetime) -> RecordWebhook:
    """The write job storing `inbound` (see RecordWebhook)."""
    return RecordWebhook(inbound, recheck_before)


def stored_arrivals(jobs: list[RecordWebhook], ids: ArrivalIds) -> list[StoredWebhook]:
    """What each webhook of a run became, from the ids `store_arrivals` gave them."""
    return [
        StoredWebhook(webhook_id, job.inbound.judgement.status)
        if delivery_id is None
        else StoredWebhook(webhook_id, "accepted", delivery_id=delivery_id)
        for job, (webhook_id, delivery_id) in zip(jobs, ids, strict=True)
    ]


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


_WEBHOOK_COLUMNS = (
    "received_at, request_id, status, webhook_type, merchant_id, rating_id, errors, content_type, body, "
    "tenant"
)
_DELIVERY_COLUMNS = (
    "webhook_id, tenant, merchant_id, rating_id, version, external_id, stars, rating, state, "
    "next_attempt_at, unconfirmed, created_at, updated_at"
)
_INSERT_WEBHOOK = f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}) VALUES ({', '.join('?' * 10)})"
_INSERT_DELIVERY = f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES ({', '.join('?' * 13)})"


def _webhook_row(inbound: InboundWebhook, status: WebhookStatus) -> tuple[object, ...]:
    judgement = inbound.judgement
    return (
        to_text(inbound.received_at),
        inbound.request_id,
        status,
        judgement.webhook_type,
        judgement.merchant_id,
        judgement.rating_id,
        json.dumps(list(judgement.errors)) if judgement.errors else None,
        inbound.content_type,
        inbound.body,
        inbound.tenant,
    )


def _delivery_row(webhook_id: int, job: RecordWebhook, *, outdated: bool) -> tuple[object, ...]:
    inbound, rating = job.inbound, job.inbound.judgement.rating
    assert rating is not None
    stamp = to_text(inbound.received_at)
    recheck = rating.created_at is not None and rating.created_at < job.recheck_before
    return (
        webhook_id,
        inbound.tenant,
        rating.merchant_id,
        rating.rating_id,
        rating.version,
        rating.external_id,
        rating.stars,
        rating_json(rating),
        "superseded" if outdated else "pending",
        None if outdated else stamp,
        int(recheck),
        stamp,
        stamp,
    )


def _insert_webhook(conn: sqlite3.Connection, inbound: InboundWebhook, status: WebhookStatus) -> int:
    cursor = conn.execute(_INSERT_WEBHOOK, _webhook_row(inbound, status))
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _insert_delivery(conn: sqlite3.Connection, row: tuple[object, ...]) -> int:
    cursor = conn.execute(_INSERT_DELIVERY, row)
    assert cursor.lastrowid is not None
    return cursor.lastrowid
