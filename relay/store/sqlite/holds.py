"""One send in flight per inquiry across every worker: a hold row per inquiry, its primary key the guard."""

import sqlite3
from datetime import datetime

from relay.store.records import Turn
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob


def take_turn(
    delivery_id: int, inquiry_id: int, *, leased_until: datetime, now: datetime, until: datetime
) -> WriteJob[Turn]:
    """A write job renewing the delivery's lease, if still `leased_until`, and taking its inquiry."""

    def job(conn: sqlite3.Connection) -> Turn:
        renewed = conn.execute(
            "UPDATE deliveries SET next_attempt_at = :until "
            "WHERE id = :delivery AND state = 'sending' AND next_attempt_at = :leased RETURNING tenant",
            {"delivery": delivery_id, "leased": to_text(leased_until), "until": to_text(until)},
        ).fetchone()
        if renewed is None:
            return "lost"  # a claim took the run-out lease: the delivery is another's now
        # The conflict's WHERE is the rule: a hold that ran out (its worker died) or this delivery's own.
        taken = conn.execute(
            """
            INSERT INTO inquiry_holds (tenant, inquiry_id, delivery_id, held_until)
            VALUES (:tenant, :inquiry, :delivery, :until)
            ON CONFLICT (tenant, inquiry_id) DO UPDATE
            SET delivery_id = excluded.delivery_id, held_until = excluded.held_until
            WHERE inquiry_holds.held_until <= :now OR inquiry_holds.delivery_id = excluded.delivery_id
            RETURNING inquiry_id
            """,
            {
                "tenant": renewed["tenant"],
                "inquiry": inquiry_id,
                "delivery": delivery_id,
                "until": to_text(until),
                "now": to_text(now),
            },
        ).fetchall()
        return "go" if taken else "busy"

    return job


def release_hold(conn: sqlite3.Connection, delivery_id: int) -> None:
    """Inside a write job: the delivery's inquiry is free for the next send."""
    conn.execute("DELETE FROM inquiry_holds WHERE delivery_id = ?", (delivery_id,))
