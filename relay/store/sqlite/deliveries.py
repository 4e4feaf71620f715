"""Operators' reads of deliveries: the filtered listing and its count, and one delivery in full."""

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import aiosqlite

from relay.store.filters import DeliveryFilter
from relay.store.records import (
    DeliveryAttempt,
    DeliveryDetail,
    DeliveryRecord,
    DeliverySummary,
    WebhookSource,
)
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.reading import newest_first, one, record

_SUMMARY_COLUMNS = ", ".join(field.name for field in fields(DeliverySummary))


async def list_deliveries(
    conn: aiosqlite.Connection, where: DeliveryFilter, *, after: int | None = None, limit: int = 50
) -> list[DeliverySummary]:
    """Up to `limit` deliveries matching `where`, newest (highest id) first, from below the id `after`."""
    conditions, parameters = _matching(where)
    rows = await newest_first(
        conn,
        f"SELECT {_SUMMARY_COLUMNS} FROM deliveries",
        ("state", where.state),
        conditions,
        parameters,
        after,
        limit,
    )
    return [record(DeliverySummary, row) for row in rows]


async def count_deliveries(conn: aiosqlite.Connection, where: DeliveryFilter) -> int:
    """How many deliveries match `where`."""
    conditions, parameters = _matching(where)
    if where.state:
        conditions.append(f"state IN ({', '.join('?' * len(where.state))})")
        parameters.extend(where.state)
    sql = "SELECT count(*) FROM deliveries" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
    row = await one(conn, sql, parameters)
    assert row is not None  # count(*) always gives a row
    return int(row[0])


async def delivery_comments(conn: aiosqlite.Connection, delivery_ids: Sequence[int]) -> dict[int, str | None]:
    """The consumer's comment of each of these deliveries (those that exist)."""
    if not delivery_ids:
        return {}
    marks = ", ".join("?" * len(delivery_ids))
    rows = await conn.execute_fetchall(
        f"SELECT id, json_extract(rating, '$.comment') FROM deliveries WHERE id IN ({marks})",
        list(delivery_ids),
    )
    return {row[0]: row[1] for row in rows}


def _matching(where: DeliveryFilter) -> tuple[list[str], list[Any]]:
    """The conditions (and their parameters) of every part of `where` but its states."""
    conditions: list[str] = []
    parameters: list[Any] = []
    if where.tenant is not None:
        conditions.append("tenant = ?")
        parameters.append(where.tenant)
    if where.merchant_id is not None:
        # With an external id, (merchant_id, external_id) yields rows in id order; alone, it would mean
        # sorting all of a merchant's rows, so walk the ids instead (`+` keeps SQLite off that index).
        conditions.append("merchant_id = ?" if where.external_id is not None else "+merchant_id = ?")
        parameters.append(where.merchant_id)
    if where.external_id is not None:
        # Without its merchant no index leads with the order id: walk the ids, as for a merchant alone.
        conditions.append("external_id = ?" if where.merchant_id is not None else "+external_id = ?")
        parameters.append(where.external_id)
    if where.rating_id is not None:
        # No index leads with the rating id (the unique key starts with the merchant): walk the ids.
        conditions.append("+rating_id = ?")
        parameters.append(where.rating_id)
    if where.inquiry_id is not None:
        conditions.append("inquiry_id = ?")
        parameters.append(where.inquiry_id)
    if where.search is not None:
        number = where.searched_number()
        if number is None:
            conditions.append("+external_id = ?")
            parameters.append(where.search)
        else:
            conditions.append("(+external_id = ? OR +rating_id = ? OR +inquiry_id = ?)")
            parameters.extend([where.search, number, number])
    if where.since is not None:
        conditions.append("created_at >= ?")
        parameters.append(to_text(where.since))
    if where.until is not None:
        conditions.append("created_at < ?")
        parameters.append(to_text(where.until))
    return conditions, parameters


async def get_delivery(conn: aiosqlite.Connection, delivery_id: int) -> DeliveryDetail | None:
    """One delivery with its calls to Quivo and the webhook it came from; None when there is no such one."""
    row = await one(conn, "SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
    if row is None:
        return None
    calls = await conn.execute_fetchall(
        "SELECT number, action, started_at, duration_ms, status_code, outcome, error "
        "FROM attempts WHERE delivery_id = ? ORDER BY id",
        (delivery_id,),
    )
    webhook = await one(
        conn, "SELECT id, received_at, request_id, status FROM webhooks WHERE id = ?", (row["webhook_id"],)
    )
    return DeliveryDetail(
        delivery=record(
            DeliveryRecord, row, unconfirmed=bool(row["unconfirmed"]), rating=json.loads(row["rating"])
        ),
        attempts=[record(DeliveryAttempt, call) for call in calls],
        webhook=None if webhook is None else record(WebhookSource, webhook),
    )
