"""Deliveries waiting out a Quivo outage: the inquiry a probe reads, and making them due when it ends."""

import sqlite3
from datetime import datetime

from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob

# Waiting out a Quivo outage: retrying, not unsure, and its last call found Quivo unreachable (no answer to a
# send that certainly did not go out) or failing (5xx).
_HELD_BY_OUTAGE = """
    tenant = :tenant AND state = 'retrying' AND unconfirmed = 0 AND next_attempt_at > :now AND (
        SELECT a.status_code IS NULL OR a.status_code >= 500 FROM attempts a
        WHERE a.delivery_id = deliveries.id ORDER BY a.id DESC LIMIT 1)
"""


def inquiry_held_by_outage(tenant: str, *, now: datetime) -> WriteJob[int | None]:
    """The inquiry of the tenant's delivery waiting out an outage that is due soonest: what a probe reads."""

    def job(conn: sqlite3.Connection) -> int | None:
        row = conn.execute(
            f"SELECT inquiry_id FROM deliveries WHERE {_HELD_BY_OUTAGE} AND inquiry_id IS NOT NULL "
            "ORDER BY next_attempt_at LIMIT 1",
            {"tenant": tenant, "now": to_text(now)},
        ).fetchone()
        return None if row is None else int(row["inquiry_id"])

    return job


def due_after_outage(tenant: str, *, now: datetime) -> WriteJob[int]:
    """The tenant's Quivo is back: each of its deliveries held only by the outage is due now (how many)."""

    def job(conn: sqlite3.Connection) -> int:
        cursor = conn.execute(
            f"UPDATE deliveries SET next_attempt_at = :now, updated_at = :now WHERE {_HELD_BY_OUTAGE}",
            {"tenant": tenant, "now": to_text(now)},
        )
        return cursor.rowcount

    return job
