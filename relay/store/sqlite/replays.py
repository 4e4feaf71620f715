"""Operators moving deliveries: replaying dead or unmatched ones, and cancelling waiting ones."""

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from relay.store.filters import CANCELLABLE_STATES, CANCELLED, REPLAYABLE_STATES
from relay.store.records import ReplayBatch, SkippedReplay, StateChange
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob


def replay_delivery(delivery_id: int, *, now: datetime) -> WriteJob[StateChange]:
    """A write job that sends a dead or unmatched delivery back to pending, due `now`.

    Attempts start again from 0 and its age from `now` (`replayed_at`); it is marked unconfirmed, so the
    worker reads the inquiry back before sending and never posts a rating twice. The last error is kept.
    A delivery with a newer version of its rating stays as it is: replaying it would overwrite the newer.
    """

    def job(conn: sqlite3.Connection) -> StateChange:
        row = conn.execute(
            """
            SELECT d.state, (
                SELECT n.id FROM deliveries n
                WHERE n.merchant_id = d.merchant_id AND n.rating_id = d.rating_id AND n.version > d.version
                ORDER BY n.version DESC LIMIT 1) AS newer
            FROM deliveries d WHERE d.id = ?
            """,
            (delivery_id,),
        ).fetchone()
        if row is None:
            return StateChange(None)
        state = row["state"]
        if state not in REPLAYABLE_STATES:
            return StateChange(
                state, f"delivery {delivery_id} is {state}: only dead or unmatched ones replay"
            )
        if row["newer"] is not None:
            return StateChange(state, _newer_version(row["newer"]))
        _replay(conn, [delivery_id], now)
        return StateChange(state)

    return job


def replay_batch(delivery_ids: Sequence[int], *, now: datetime) -> WriteJob[ReplayBatch]:
    """A write job replaying the listed deliveries (in their order); those it left, newest first, with why."""
    ids = list(delivery_ids)

    def job(conn: sqlite3.Connection) -> ReplayBatch:
        done = set(_replay(conn, ids, now))
        replayed = [delivery_id for delivery_id in dict.fromkeys(ids) if delivery_id in done]
        return ReplayBatch(replayed, _why_left(conn, sorted(set(ids) - done, reverse=True)))

    return job


def cancel_delivery(delivery_id: int, *, now: datetime) -> WriteJob[StateChange]:
    """A write job that stops a delivery not yet delivered nor in flight: it becomes dead, 'cancelled'."""

    def job(conn: sqlite3.Connection) -> StateChange:
        row = conn.execute("SELECT state FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if row is None:
            return StateChange(None)
        state = row["state"]
        if state == "sending":
            return StateChange(state, f"delivery {delivery_id} is sending: a call to Quivo is in flight")
        if state not in CANCELLABLE_STATES:
            return StateChange(state, f"delivery {delivery_id} is already {state}")
        conn.execute(
            "UPDATE deliveries SET state = 'dead', next_attempt_at = NULL, last_error = ?, updated_at = ? "
            "WHERE id = ?",
            (CANCELLED, to_text(now), delivery_id),
        )
        return StateChange(state)

    return job


def _why_left(conn: sqlite3.Connection, ids: list[int]) -> list[SkippedReplay]:
    """Why each of these matched deliveries was not replayed, newest first."""
    rows = conn.execute(
        """
        SELECT d.id, d.state, (
            SELECT n.id FROM deliveries n
            WHERE n.merchant_id = d.merchant_id AND n.rating_id = d.rating_id AND n.version > d.version
            ORDER BY n.version DESC LIMIT 1) AS newer
        FROM deliveries d WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.id DESC
        """,
        (json.dumps(ids),),
    ).fetchall()
    return [
        SkippedReplay(
            row["id"],
            _newer_version(row["newer"])
            if row["newer"] is not None
            else f"it became {row['state']} since it was listed: only dead or unmatched ones replay",
        )
        for row in rows
    ]


def _newer_version(newer_id: int) -> str:
    return f"delivery {newer_id} holds a newer version of this rating; replaying would undo it"


def _replay(conn: sqlite3.Connection, ids: list[int], now: datetime) -> list[int]:
    # States are checked again here: between listing and this commit the worker may have moved a row.
    rows = conn.execute(
        """
        UPDATE deliveries SET state = 'pending', next_attempt_at = :now, attempts = 0, unconfirmed = 1,
            replayed_at = :now, updated_at = :now,
            -- Quivo said the inquiry does not exist: match again, so a corrected link takes effect.
            inquiry_id = CASE WHEN last_status = 404 THEN NULL ELSE inquiry_id END
        WHERE id IN (SELECT value FROM json_each(:ids)) AND state IN ('dead', 'unmatched')
          AND NOT EXISTS (
              SELECT 1 FROM deliveries n
              WHERE n.merchant_id = deliveries.merchant_id AND n.rating_id = deliveries.rating_id
                AND n.version > deliveries.version)
        RETURNING id
        """,
        {"now": to_text(now), "ids": json.dumps(ids)},
    ).fetchall()
    return [int(row["id"]) for row in rows]
