"""One send in flight per inquiry across every worker: a hold row per inquiry, its primary key the guard."""

import sqlite3
from datetime import datetime

from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob


def hold_inquiry(inquiry_id: int, delivery_id: int, *, now: datetime, until: datetime) -> WriteJob[bool]:
    """A write job taking the inquiry for the delivery until `until`; False while another send holds it."""

    def job(conn: sqlite3.Connection) -> bool:
        # The conflict's WHERE is the rule: a hold that ran out (its worker died) or this delivery's own.
        taken = conn.execute(
            """
            INSERT INTO inquiry_holds (inquiry_id, delivery_id, held_until)
            VALUES (:inquiry, :delivery, :until)
            ON CONFLICT (inquiry_id) DO UPDATE
            SET delivery_id = excluded.delivery_id, held_until = excluded.held_until
            WHERE inquiry_holds.held_until <= :now OR inquiry_holds.delivery_id = excluded.delivery_id
            RETURNING inquiry_id
            """,
            {"inquiry": inquiry_id, "delivery": delivery_id, "until": to_text(until), "now": to_text(now)},
        ).fetchall()
        return bool(taken)

    return job


def release_hold(conn: sqlite3.Connection, delivery_id: int) -> None:
    """Inside a write job: the delivery's inquiry is free for the next send."""
    conn.execute("DELETE FROM inquiry_holds WHERE delivery_id = ?", (delivery_id,))
