"""Links from a merchant's order to its Quivo inquiry, and waking the deliveries that waited for one."""

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime

import aiosqlite

from relay.linkfile import Link
from relay.store.records import LinkUpsert
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob


def save_links(links: Sequence[Link], *, now: datetime) -> WriteJob[LinkUpsert]:
    """A write job that saves `links` and wakes the unmatched deliveries of their orders.

    A link given twice for one (merchant_id, external_id) ends as the later one. Woken deliveries go back
    to 'pending', due `now`, in the same transaction as the links.
    """

    def job(conn: sqlite3.Connection) -> LinkUpsert:
        if not links:
            return LinkUpsert(saved=0, woken=[])
        stamp = to_text(now)
        conn.executemany(
            "INSERT INTO links (merchant_id, external_id, inquiry_id, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (merchant_id, external_id) DO UPDATE "
            "SET inquiry_id = excluded.inquiry_id, updated_at = excluded.updated_at",
            [(link.merchant_id, link.external_id, link.inquiry_id, stamp) for link in links],
        )
        # Every key just saved has a link now, so its unmatched deliveries are the ones to wake.
        keys = json.dumps([[link.merchant_id, link.external_id] for link in links])
        woken = conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, updated_at = ? "
            "WHERE state = 'unmatched' AND (merchant_id, external_id) IN "
            "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)) "
            "RETURNING id",
            (stamp, stamp, keys),
        ).fetchall()
        return LinkUpsert(saved=len(links), woken=sorted(int(row["id"]) for row in woken))

    return job


def delete_link(merchant_id: int, external_id: str) -> WriteJob[bool]:
    """A write job that removes one link; True when there was one. Deliveries already matched keep theirs."""

    def job(conn: sqlite3.Connection) -> bool:
        cursor = conn.execute(
            "DELETE FROM links WHERE merchant_id = ? AND external_id = ?", (merchant_id, external_id)
        )
        return cursor.rowcount > 0

    return job


async def list_links(
    conn: aiosqlite.Connection,
    *,
    merchant_id: int | None = None,
    after: tuple[int, str] | None = None,
    limit: int = 100,
    external_id: str | None = None,
) -> list[Link]:
    """Up to `limit` links in (merchant_id, external_id) order, starting past the key `after`; with an
    `external_id`, only that order's links (at every merchant without `merchant_id`: a scan of the table).

    Pass the key of the last link of one page as `after` to get the next; an empty page is the end.
    """
    if limit < 1:
        # SQLite reads a negative LIMIT as no limit at all.
        raise ValueError(f"limit must be at least 1, got {limit}")
    conditions: list[str] = []
    parameters: list[int | str] = []
    if merchant_id is not None:
        if after is not None and after[0] > merchant_id:
            return []
        conditions.append("merchant_id = ?")
        parameters.append(merchant_id)
        # With merchant_id fixed, SQLite seeks the primary key on this form but not on the row value.
        if after is not None and after[0] == merchant_id:
            conditions.append("external_id > ?")
            parameters.append(after[1])
    elif after is not None:
        conditions.append("(merchant_id, external_id) > (?, ?)")
        parameters.extend(after)
    if external_id is not None:
        conditions.append("external_id = ?")
        parameters.append(external_id)
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    rows = await conn.execute_fetchall(
        f"SELECT merchant_id, external_id, inquiry_id FROM links {where}"
        "ORDER BY merchant_id, external_id LIMIT ?",
        [*parameters, limit],
    )
    return [Link(int(row["merchant_id"]), str(row["external_id"]), int(row["inquiry_id"])) for row in rows]
