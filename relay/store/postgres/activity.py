"""The console's chart on PostgreSQL: webhooks received and deliveries delivered, counted by the minute."""

from datetime import UTC, datetime

from relay.store.activity import MINUTE, MinuteActivity, minute_of, minute_series
from relay.store.postgres.connection import Conn

# In UTC whatever the session's time zone: a minute is the same everywhere, but say so.
_WEBHOOKS = """
    SELECT date_trunc('minute', received_at AT TIME ZONE 'UTC'), count(*) FROM webhooks
    WHERE received_at >= $1 AND received_at < $2 GROUP BY 1
"""
# A delivered row is never touched again, so its updated_at is when it was delivered; the condition on
# both states matches the partial index deliveries_finished.
_DELIVERED = """
    SELECT date_trunc('minute', updated_at AT TIME ZONE 'UTC'), count(*) FROM deliveries
    WHERE state IN ('delivered', 'superseded') AND state = 'delivered'
      AND updated_at >= $1 AND updated_at < $2
    GROUP BY 1
"""


async def activity(conn: Conn, *, since: datetime, now: datetime) -> list[MinuteActivity]:
    """Webhooks received and deliveries delivered in each minute from `since`'s to `now`'s."""
    start, end = minute_of(since), minute_of(now) + MINUTE
    webhooks = {key.replace(tzinfo=UTC): count for key, count in await conn.fetch(_WEBHOOKS, start, end)}
    delivered = {key.replace(tzinfo=UTC): count for key, count in await conn.fetch(_DELIVERED, start, end)}
    return minute_series(since, now, webhooks, delivered)
