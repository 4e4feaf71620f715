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

# The same for the deliveries given as a JSON array (?1): their ids and tenants.
_RENEW_MANY = (
    "UPDATE deliveries SET next_attempt_at = ?3 WHERE id IN (SELECT value FROM json_each(?1)) "
    "AND state = 'sending' AND next_attempt_at = ?2 RETURNING id, tenant"
)
_LEASED_MANY = (
    "SELECT id, tenant FROM deliveries WHERE id IN (SELECT value FROM json_each(?1)) "
    "AND state = 'sending' AND next_attempt_at = ?2"
)
# Holds of [tenant, inquiry, delivery] (?1) until ?2, as _take's INSERT takes each, the now ?3; the deliveries
# whose hold was taken (inserted or updated: a hold the WHERE refuses is left out).
_HOLD_MANY = """
    INSERT INTO inquiry_holds (tenant, inquiry_id, delivery_id, held_until)
    SELECT value ->> 0, value ->> 1, value ->> 2, ?2 FROM json_each(?1) WHERE true
    ON CONFLICT (tenant, inquiry_id) DO UPDATE
    SET delivery_id = excluded.delivery_id, held_until = excluded.held_until
    WHERE inquiry_holds.held_until <= ?3 OR inquiry_holds.delivery_id = excluded.delivery_id
    RETURNING delivery_id
    """


def take_turn(
    delivery_id: int, inquiry_id: int, *, leased_until: datetime, now: datetime, until: datetime
) -> WriteJob[Turn]:
    """A write job renewing the delivery's lease, if still `leased_until`, and taking its inquiry."""
    ask = TurnAsk(delivery_id, inquiry_id, leased_until)
    return lambda conn: _take(conn, ask, to_text(now), until, to_text(until))


def take_turns(asks: Sequence[TurnAsk], *, now: datetime, until: datetime) -> WriteJob[list[Turn]]:
    """A write job taking each delivery's turn in order, as take_turn does."""

    def job(conn: sqlite3.Connection) -> list[Turn]:
        # Each instant spelled once for the batch: a claim's deliveries share their lease, and `until`.
        now_text, until_text = to_text(now), to_text(until)
        if _apart(asks):
            return _take_together(conn, asks, now_text, until, until_text)
        # One delivery or inquiry twice, or leases of their own: each ask sees what those before it took.
        return [_take(conn, ask, now_text, until, until_text) for ask in asks]

    return job


def _apart(asks: Sequence[TurnAsk]) -> bool:
    """Whether the asks hold one lease, each for a delivery and an inquiry of its own: then none sees
    another's hold, and their turns are taken together (a claim's, right after it)."""
    leases = {ask.leased_until for ask in asks}
    deliveries = {ask.delivery_id for ask in asks}
    inquiries = {ask.inquiry_id for ask in asks}
    return len(leases) == 1 and len(deliveries) == len(inquiries) == len(asks)


def _take_together(
    conn: sqlite3.Connection, asks: Sequence[TurnAsk], now: str, until: datetime, until_text: str
) -> list[Turn]:
    """As _take for each ask, in two statements for them all: one renews (or checks) the leases, one takes
    the inquiries of those still leased. Each statement hands the GIL to the event loop and waits for it."""
    ids = json.dumps([ask.delivery_id for ask in asks])
    leased_until = asks[0].leased_until
    if until == leased_until:
        leased = conn.execute(_LEASED_MANY, (ids, until_text))
    else:
        leased = conn.execute(_RENEW_MANY, (ids, to_text(leased_until), until_text))
    tenants: dict[int, str] = {row[0]: row[1] for row in leased.fetchall()}
    holds = [
        [tenants[ask.delivery_id], ask.inquiry_id, ask.delivery_id]
        for ask in asks
        if ask.delivery_id in tenants
    ]
    taken = (
        {row[0] for row in conn.execute(_HOLD_MANY, (json.dumps(holds), until_text, now))} if holds else set()
    )
    return [
        "go" if ask.delivery_id in taken else "busy" if ask.delivery_id in tenants else "lost" for ask in asks
    ]


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
