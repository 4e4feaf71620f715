"""New webhooks and their deliveries stored by one statement (stdlib only: intake's process runs it)."""

import functools
import json
import sqlite3

# A webhook's row values as `INSERT INTO arrivals` takes them after its id (received_at, request_id, status,
# webhook_type, merchant_id, rating_id, errors, content_type, body, tenant), and for a new rating its
# delivery's after the delivery's id (version, external_id, stars, rating, unconfirmed); None without one.
Arrival = tuple[tuple[object, ...], tuple[object, ...] | None]
# Each arrival's webhook id and delivery id (None without a delivery), in order.
ArrivalIds = list[tuple[int, int | None]]

# The arrivals view's columns (migration 0013), after the webhook's: those of a row with no delivery, and of
# a padding row.
_ARRIVAL_WIDTH = 17
_NO_DELIVERY = (None,) * 6
_PADDING = (None,) * _ARRIVAL_WIDTH


def store_arrivals(conn: sqlite3.Connection, run: list[Arrival]) -> ArrivalIds | None:
    """The run stored in one statement, each webhook decided as alone in this order would decide it; None,
    with nothing written, when one of its ratings is known already or comes twice.

    Ids are chosen as SQLite would (one past the largest). Outside a transaction the statement commits
    itself: a writer that wrote between the read of those ids and it took the first of them, and the
    statement fails on the primary key (sqlite3.IntegrityError), writing nothing.
    """
    # A delivery's rating is the webhook's merchant and rating id (the view stores them for both rows).
    keys = {(webhook[4], webhook[5]) for webhook, delivery in run if delivery is not None}
    if len(keys) != sum(delivery is not None for _, delivery in run):
        return None
    last = last_ids(conn, keys)
    if last is None:
        return None
    webhook_id, delivery_id = last
    # One pass, each row's values added to one flat list of parameters.
    ids: ArrivalIds = []
    values: list[object] = []
    for webhook, delivery in run:
        webhook_id += 1
        values.append(webhook_id)
        values += webhook
        if delivery is None:
            ids.append((webhook_id, None))
            values += _NO_DELIVERY
            continue
        delivery_id += 1
        ids.append((webhook_id, delivery_id))
        values.append(delivery_id)
        values += delivery
    size = _arrivals_size(len(run))
    values += _PADDING * (size - len(run))
    conn.execute(_arrivals(size), values)
    return ids


def last_ids(conn: sqlite3.Connection, keys: set[tuple[object, object]]) -> tuple[int, int] | None:
    """The largest webhook and delivery ids, unless one of these (merchant, rating) pairs has a delivery
    already (then None): one statement."""
    # CROSS JOIN keeps the pairs the outer loop, so each is one lookup in the (merchant, rating) index.
    webhook_id, delivery_id, known = conn.execute(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM webhooks), (SELECT COALESCE(MAX(id), 0) FROM deliveries), "
        "EXISTS (SELECT 1 FROM json_each(?) AS k CROSS JOIN deliveries AS d "
        "ON d.merchant_id = json_extract(k.value, '$[0]') AND d.rating_id = json_extract(k.value, '$[1]'))",
        (json.dumps(list(keys)),),
    ).fetchone()
    return None if known else (webhook_id, delivery_id)


def _arrivals_size(count: int) -> int:
    """The statement's rows for a run of `count`: the next power of two, so few sizes are ever prepared."""
    return 1 << (count - 1).bit_length()


@functools.cache
def _arrivals(size: int) -> str:
    """`INSERT INTO arrivals VALUES (...), ...` for `size` rows (migration 0013)."""
    row = f"({', '.join('?' * _ARRIVAL_WIDTH)})"
    return f"INSERT INTO arrivals VALUES {', '.join([row] * size)}"
