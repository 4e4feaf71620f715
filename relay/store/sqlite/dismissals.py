"""Operators dismissing quarantined webhooks: closed with a reason, kept, no longer waiting."""

import sqlite3
from datetime import datetime

from relay.store.records import WebhookStatus, webhook_status
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob


def dismiss_webhook(webhook_id: int, reason: str, *, now: datetime) -> WriteJob[WebhookStatus | None]:
    """A write job that dismisses a quarantined webhook; its status before (None: no such webhook)."""

    def job(conn: sqlite3.Connection) -> WebhookStatus | None:
        row = conn.execute("SELECT status, dismissed_at FROM webhooks WHERE id = ?", (webhook_id,)).fetchone()
        if row is None:
            return None
        before = webhook_status(row["status"], row["dismissed_at"] is not None)
        if before == "quarantined":
            conn.execute(
                "UPDATE webhooks SET dismissed_at = ?, dismissed_reason = ? WHERE id = ?",
                (to_text(now), reason, webhook_id),
            )
        return before

    return job
