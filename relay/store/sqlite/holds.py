"""One send in flight per inquiry across every worker: a hold row per inquiry, its primary key the guard."""

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from relay.store.records import Turn, TurnAsk
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob

# The delivery's tenant while it is still leased until :leased, its lease then lasting until :until.
_RENEW = (
    "UPDATE deliveries SET next_attempt_at = :until "
    "WHERE id = :delivery AND state = 'sending' AND next_attempt_at = :leased RETURNING tenant"
)
_LEASED = (
    "SELECT tenant FROM deliveries WHERE id = :delivery AND state = 'sending' AND next_attempt_at = :leased"
)


def take_turn(
    delivery_id: int, inquiry_id: int, *, leased_until: datetime, now: datetime, until: datetime
) -> WriteJob[Turn]:
    """A write job renewing the delivery's lease, if still `leased_until`, and taking its inquiry."""
    turns = take_turns([TurnAsk(delivery_id, inquiry_id, leased_until)], now=now, until=until)
    return lambda conn: turns(conn)[0]


def take_turns(asks: Sequence[TurnAsk], *, now: datetime, until: datetime) -> WriteJob[list[Turn]]:
    """A write job taking each delivery's turn in order, as take_turn does."""

    def job(conn: sqlite3.Connection) -> list[Turn]:
        # Each instant spelled once for the batch: a claim's deliveries share their lease, and `until`.
        now_text, until_text = to_text(now), to_text(until)
        return [_take(conn, ask, now_text, until, until_text) for ask in asks]

    return job


def _take(conn: sqlite3.Connection, ask: TurnAsk, now: str, until: datetime, until_text: str) -> Turn:
    # A lease already lasting until `until` (a claim's, moments ago) is only checked: no row to rewrite.
    kept = until == ask.leased_until
    leased = until_text if kept else to_text(ask.leased_until)
    renewed = conn.execute(
        _LEASED if kept else _RENEW, {"delivery": ask.delivery_id, "leased": leased, "until": until_text}
    ).fetchone()
    if renewed is None:
        return "lost"  # a claim took the run-out lease: the delivery is another's now
    # The conflict's WHERE is the rule: a hold that ran out (its worker died) or this delivery's own. Taken
    # or not, the change count says (RETURNING would cost a temporary table each time).
    taken = conn.execute(
        """
        INSERT INTO inquiry_holds (tenant, inquiry_id, delivery_id, held_until)
        VALUES (:tenant, :inquiry, :delivery, :until)
        ON CONFLICT (tenant, inquiry_id) DO UPDATE
        SET delivery_id = excluded.delivery_id, held_until = excluded.held_until
        WHERE inquiry_holds.held_until <= :now OR inquiry_holds.delivery_id = excluded.delivery_id
        """,
        {
            "tenant": renewed["tenant"],
            "inquiry": ask.inquiry_id,
            "delivery": ask.delivery_id,
            "until": until_text,
            "now": now,
        },
    ).rowcount
    return "go" if taken else "busy"


def release_holds(conn: sqlite3.Connection, delivery_ids: Sequence[int]) -> None:
    """Inside a write job: these deliveries' inquiries are free for the next send."""
    if delivery_ids:
        # One statement for them all: each statement hands the GIL to the event loop and waits for it back.
        conn.execute(
            "DELETE FROM inquiry_holds WHERE delivery_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(delivery_ids)),),
        )
