"""Relay-wide duties (retention, the unmatched sweep): one holder at a time, until its hold runs out."""

import sqlite3
from datetime import datetime

from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob


def take_duty(duty: str, holder: str, *, now: datetime, until: datetime) -> WriteJob[bool]:
    """A write job holding `duty` for `holder` until `until`; False while another holds it."""

    def job(conn: sqlite3.Connection) -> bool:
        # The conflict's WHERE is the rule: a hold that ran out, or the same holder extending its own.
        taken = conn.execute(
            """
            INSERT INTO duties (duty, holder, held_until) VALUES (:duty, :holder, :until)
            ON CONFLICT (duty) DO UPDATE SET holder = excluded.holder, held_until = excluded.held_until
            WHERE duties.held_until <= :now OR duties.holder = excluded.holder
            RETURNING duty
            """,
            {"duty": duty, "holder": holder, "until": to_text(until), "now": to_text(now)},
        ).fetchall()
        return bool(taken)

    return job
