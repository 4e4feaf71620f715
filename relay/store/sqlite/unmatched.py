"""Deliveries waiting for a link to their inquiry: woken when one appears, dead when they waited too long."""

import sqlite3
from collections.abc import Mapping
from datetime import datetime

from relay.store.records import ExpiredDelivery, UnmatchedSweep
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob


def sweep_unmatched(*, now: datetime, expire_before: Mapping[str, datetime]) -> WriteJob[UnmatchedSweep]:
    """Unmatched ones whose link now exists go back to pending (their ids); those of the tenants named in
    `expire_before` waiting since before the tenant's instant die."""

    def job(conn: sqlite3.Connection) -> UnmatchedSweep:
        stamp = to_text(now)
        woken = conn.execute(
            """
            UPDATE deliveries SET state = 'pending', next_attempt_at = :now, updated_at = :now
            WHERE state = 'unmatched' AND EXISTS (
                SELECT 1 FROM links l
                WHERE l.merchant_id = deliveries.merchant_id AND l.external_id = deliveries.external_id)
            RETURNING id
            """,
            {"now": stamp},
        ).fetchall()
        expired = [
            row
            for tenant, before in expire_before.items()
            for row in conn.execute(
                """
                UPDATE deliveries SET state = 'dead', next_attempt_at = NULL, updated_at = :now,
                    last_error = 'no Quivo inquiry found for this order within RELAY_UNMATCHED_TTL'
                WHERE state = 'unmatched' AND tenant = :tenant
                  AND COALESCE(replayed_at, created_at) < :expire_before
                RETURNING id, tenant, merchant_id, rating_id, attempts
                """,
                {"now": stamp, "tenant": tenant, "expire_before": to_text(before)},
            ).fetchall()
        ]
        return UnmatchedSweep(
            woken=sorted(int(row["id"]) for row in woken),
            expired=[
                ExpiredDelivery(
                    row["id"], row["tenant"], row["merchant_id"], row["rating_id"], row["attempts"]
                )
                for row in sorted(expired, key=lambda row: int(row["id"]))
            ],
        )

    return job


def retry_unmatched(*, now: datetime) -> WriteJob[int]:
    """Every unmatched delivery is tried again (at start: the inquiry id pattern may have changed)."""

    def job(conn: sqlite3.Connection) -> int:
        cursor = conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = :now, updated_at = :now "
            "WHERE state = 'unmatched'",
            {"now": to_text(now)},
        )
        return cursor.rowcount

    return job
