"""Operators' reads of stored webhooks: the filtered listing, and one webhook with its raw body."""

import json
import sqlite3
from typing import Any

import aiosqlite

from relay.store.filters import WebhookFilter
from relay.store.records import WebhookDetail, WebhookStatus, WebhookSummary, webhook_status
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.reading import newest_first, one, record

_WEBHOOK_COLUMNS = (
    "id, tenant, received_at, request_id, status, webhook_type, merchant_id, rating_id, errors, "
    "length(body) AS bytes, dismissed_at, dismissed_reason"
)


async def list_webhooks(
    conn: aiosqlite.Connection, where: WebhookFilter, *, after: int | None = None, limit: int = 50
) -> list[WebhookSummary]:
    """Up to `limit` stored webhooks matching `where`, newest first, from below the id `after`."""
    conditions: list[str] = []
    parameters: list[Any] = []
    if where.tenant is not None:
        conditions.append("tenant = ?")
        parameters.append(where.tenant)
    if where.since is not None:
        conditions.append("received_at >= ?")
        parameters.append(to_text(where.since))
    statuses, dismissed = where.stored_statuses()
    if dismissed is not None:
        conditions.append(f"(status <> 'quarantined' OR dismissed_at IS {'NOT ' if dismissed else ''}NULL)")
    rows = await newest_first(
        conn,
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks",
        ("status", statuses),
        conditions,
        parameters,
        after,
        limit,
    )
    return [record(WebhookSummary, row, errors=_errors(row), status=_status(row)) for row in rows]


async def get_webhook(conn: aiosqlite.Connection, webhook_id: int) -> WebhookDetail | None:
    """One stored webhook with its raw body and the ids of the deliveries it created; None if unknown."""
    row = await one(
        conn, f"SELECT {_WEBHOOK_COLUMNS}, content_type, body FROM webhooks WHERE id = ?", (webhook_id,)
    )
    if row is None:
        return None
    delivery_ids: list[int] = []
    if row["merchant_id"] is not None and row["rating_id"] is not None:
        # Through the rating's key: deliveries have no index on webhook_id.
        found = await conn.execute_fetchall(
            "SELECT id FROM deliveries WHERE merchant_id = ? AND rating_id = ? AND webhook_id = ? "
            "ORDER BY id",
            (row["merchant_id"], row["rating_id"], webhook_id),
        )
        delivery_ids = [int(delivery["id"]) for delivery in found]
    return record(
        WebhookDetail,
        row,
        errors=_errors(row),
        status=_status(row),
        body=bytes(row["body"]),
        delivery_ids=delivery_ids,
    )


def _status(row: sqlite3.Row) -> WebhookStatus:
    return webhook_status(row["status"], row["dismissed_at"] is not None)


def _errors(row: sqlite3.Row) -> list[str]:
    return list(json.loads(row["errors"])) if row["errors"] else []
