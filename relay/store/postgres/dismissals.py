"""Operators dismissing quarantined webhooks: closed with a reason, kept, no longer waiting."""

from datetime import datetime

from relay.store.postgres.connection import Conn
from relay.store.records import WebhookStatus, webhook_status


async def dismiss_webhook(conn: Conn, webhook_id: int, reason: str, *, now: datetime) -> WebhookStatus | None:
    """Dismiss a quarantined webhook (in the caller's transaction); its status before (None: no such one)."""
    row = await conn.fetchrow(
        "SELECT status, dismissed_at FROM webhooks WHERE id = $1 FOR UPDATE", webhook_id
    )
    if row is None:
        return None
    before = webhook_status(row["status"], row["dismissed_at"] is not None)
    if before == "quarantined":
        await conn.execute(
            "UPDATE webhooks SET dismissed_at = $1, dismissed_reason = $2 WHERE id = $3",
            now,
            reason,
            webhook_id,
        )
    return before
