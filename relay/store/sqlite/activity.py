"""The console's chart on SQLite: webhooks received and deliveries delivered, counted by the minute."""

from datetime import UTC, datetime

import aiosqlite

from relay.store.activity import MINUTE, MinuteActivity, minute_of, minute_series
from relay.store.sqlite.instants import to_text

# Stored instants read `2026-12-01T18:45:09.123456Z`: their first 16 characters name their minute.
_WEBHOOKS = """
    SELECT substr(received_at, 1, 16), COUNT(*) FROM webhooks
    WHERE received_at >= ? AND received_at < ? GROUP BY 1
"""
# A delivered row is never touched again, so its updated_at is when it was delivered; the partial index's
# own WHERE, repeated, lets SQLite walk it.
_DELIVERED = """
    SELECT substr(updated_at, 1, 16), COUNT(*) FROM deliveries INDEXED BY deliveries_finished
    WHERE state IN ('delivered', 'superseded') AND state = 'delivered' AND updated_at >= ? AND updated_at < ?
    GROUP BY 1
"""


async def activity(conn: aiosqlite.Connection, *, since: datetime, now: datetime) -> list[MinuteActivity]:
    """Webhooks received and deliveries delivered in each minute from `since`'s to `now`'s."""
    bounds = (to_text(minute_of(since)), to_text(minute_of(now) + MINUTE))
    webhooks = {_minute(key): count for key, count in await conn.execute_fetchall(_WEBHOOKS, bounds)}
    delivered = {_minute(key): count for key, count in await conn.execute_fetchall(_DELIVERED, bounds)}
    return minute_series(since, now, webhooks, delivered)


def _minute(key: str) -> datetime:
    return datetime.fromisoformat(key).replace(tzinfo=UTC)
