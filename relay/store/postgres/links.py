"""Links from a merchant's order to its Quivo inquiry, and waking the deliveries that waited for one."""

from collections.abc import Sequence
from datetime import datetime

from relay.linkfile import Link
from relay.store.postgres.connection import Conn
from relay.store.records import LinkUpsert


async def save_links(conn: Conn, links: Sequence[Link], *, now: datetime) -> LinkUpsert:
    """Save links (the later of two for one order wins) and wake their unmatched deliveries."""
    if not links:
        return LinkUpsert(saved=0, woken=[])
    # One row per order: ON CONFLICT may not touch a row twice in one statement, and the later one wins.
    latest = {(link.merchant_id, link.external_id): link.inquiry_id for link in links}
    merchants, orders = [key[0] for key in latest], [key[1] for key in latest]
    await conn.execute(
        "INSERT INTO links (merchant_id, external_id, inquiry_id, updated_at) "
        "SELECT m, e, i, $4 FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS saved (m, e, i) "
        "ON CONFLICT (merchant_id, external_id) DO UPDATE "
        "SET inquiry_id = excluded.inquiry_id, updated_at = excluded.updated_at",
        merchants,
        orders,
        list(latest.values()),
        now,
    )
    # Every key just saved has a link now, so its unmatched deliveries are the ones to wake.
    woken = await conn.fetch(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = $3, updated_at = $3 "
        "WHERE state = 'unmatched' AND (merchant_id, external_id) IN "
        "(SELECT m, e FROM unnest($1::bigint[], $2::text[]) AS saved (m, e)) RETURNING id",
        merchants,
        orders,
        now,
    )
    return LinkUpsert(saved=len(links), woken=sorted(int(row["id"]) for row in woken))


async def delete_link(conn: Conn, merchant_id: int, external_id: str) -> bool:
    """Remove one link; True when there was one. Deliveries already matched keep their inquiry."""
    deleted = await conn.fetchval(
        "DELETE FROM links WHERE merchant_id = $1 AND external_id = $2 RETURNING 1", merchant_id, external_id
    )
    return deleted is not None


async def list_links(
    conn: Conn,
    *,
    merchant_id: int | None,
    after: tuple[int, str] | None,
    limit: int,
    external_id: str | None = None,
) -> list[Link]:
    """Up to `limit` links in (merchant_id, external_id) order, starting past the key `after`; with an
    `external_id`, only that order's links."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    conditions: list[str] = []
    arguments: list[int | str] = []
    if merchant_id is not None:
        arguments.append(merchant_id)
        conditions.append(f"merchant_id = ${len(arguments)}")
    if external_id is not None:
        if "\x00" in external_id:
            return []  # text holds no NUL, so no link has this order id
        arguments.append(external_id)
        conditions.append(f"external_id = ${len(arguments)}")
    if after is not None:
        # Text holds no NUL (the server refuses one), so past the part before it is past the whole key.
        arguments.extend((after[0], after[1].partition("\x00")[0]))
        conditions.append(f"(merchant_id, external_id) > (${len(arguments) - 1}, ${len(arguments)})")
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    arguments.append(limit)
    rows = await conn.fetch(
        f"SELECT merchant_id, external_id, inquiry_id FROM links {where}"
        f"ORDER BY merchant_id, external_id LIMIT ${len(arguments)}",
        *arguments,
    )
    return [Link(int(row["merchant_id"]), str(row["external_id"]), int(row["inquiry_id"])) for row in rows]
