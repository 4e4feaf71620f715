"""Per Quivo account, across every worker: spaced send slots, and pauses after refusals."""

import sqlite3
from datetime import datetime, timedelta

import aiosqlite

from relay.store.records import AccountPause
from relay.store.sqlite.instants import from_text, from_text_or_none, to_text
from relay.store.sqlite.writer import WriteJob


def reserve_send_slot(account: str, *, now: datetime, spacing_s: float, count: int = 1) -> WriteJob[datetime]:
    """A write job giving the account's next slot, max(now, the next free one), and moving that one on
    (`count` slots on: the first of them is given, the rest follow `spacing_s` apart)."""
    span_s = spacing_s * count

    def job(conn: sqlite3.Connection) -> datetime:
        # One statement: the slot taken and the next one written together, whatever other workers do.
        (next_slot_at,) = conn.execute(
            """
            INSERT INTO account_state (account, next_slot_at) VALUES (:account, instant_plus(:now, :span))
            ON CONFLICT (account) DO UPDATE SET next_slot_at = instant_plus(
                max(:now, COALESCE(account_state.next_slot_at, :now)), :span)
            RETURNING next_slot_at
            """,
            {"account": account, "now": to_text(now), "span": span_s},
        ).fetchone()
        return from_text(next_slot_at) - timedelta(seconds=span_s)

    return job


def pause_account(pause: AccountPause) -> WriteJob[None]:
    """A write job holding every worker's calls to the account until the pause's `until`."""

    def job(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO account_state (account, paused_until, pause_reason) VALUES (?, ?, ?) "
            "ON CONFLICT (account) DO UPDATE "
            "SET paused_until = excluded.paused_until, pause_reason = excluded.pause_reason",
            (pause.account, None if pause.until is None else to_text(pause.until), pause.reason),
        )

    return job


def lift_pause(account: str) -> WriteJob[None]:
    """A write job letting calls to the account go again."""

    def job(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE account_state SET paused_until = NULL, pause_reason = NULL WHERE account = ?", (account,)
        )

    return job


async def account_pauses(conn: aiosqlite.Connection, *, now: datetime) -> list[AccountPause]:
    """The pauses in force at `now`, by account."""
    rows = await conn.execute_fetchall(
        "SELECT account, pause_reason, paused_until FROM account_state "
        "WHERE pause_reason IS NOT NULL AND (paused_until IS NULL OR paused_until > ?) ORDER BY account",
        (to_text(now),),
    )
    return [
        AccountPause(row["account"], row["pause_reason"], from_text_or_none(row["paused_until"]))
        for row in rows
    ]
