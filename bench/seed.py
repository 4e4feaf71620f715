"""Fill a relay database fast, straight through SQLite: pending deliveries to drain, delivered ones."""

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from relay.domain.rating import Rating, format_instant
from relay.store import create_store

CHUNK = 20_000


def migrate(path: Path) -> None:
    """Create the schema with the relay's own migrations."""

    async def run() -> None:
        store = create_store(f"sqlite:///{path}", timeout_s=30, pool_size=1)
        await store.open()
        await store.close()

    asyncio.run(run())


def seed(path: Path, count: int, *, state: str, first_rating_id: int = 1, merchant_id: int = 1) -> None:
    """`count` deliveries in `state` (each with its accepted webhook), inquiry ids taken from INQ-<n>."""
    migrate(path)
    now = format_instant(datetime.now(UTC))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")  # a benchmark's set-up, not a webhook: speed over durability
    try:
        for start in range(first_rating_id, first_rating_id + count, CHUNK):
            ids = range(start, min(start + CHUNK, first_rating_id + count))
            with conn:
                _insert(conn, ids, state=state, merchant_id=merchant_id, now=now)
    finally:
        conn.close()


def _insert(conn: sqlite3.Connection, ids: range, *, state: str, merchant_id: int, now: str) -> None:
    webhooks = []
    deliveries = []
    for rating_id in ids:
        rating = Rating(
            merchant_id=merchant_id,
            rating_id=rating_id,
            stars=1 + rating_id % 5,
            external_id=f"INQ-{rating_id}",
            comment="Fine",
            reasons=("On time",),
            task_title="Delivery",
        )
        body = json.dumps(
            {
                "webhook_type": "rating_submitted",
                "merchant_id": merchant_id,
                "rating": {"id": rating_id, "rating": rating.stars},
            }
        ).encode()
        webhooks.append((rating_id, now, f"seed-{rating_id}", merchant_id, rating_id, body))
        delivered = state == "delivered"
        deliveries.append(
            (
                rating_id,
                rating_id,
                merchant_id,
                rating_id,
                rating.external_id,
                rating.stars,
                rating.model_dump_json(),
                state,
                None if delivered else now,
                rating_id if delivered else None,
                1 if delivered else 0,
                now,
                now,
                now if delivered else None,
            )
        )
    conn.executemany(
        "INSERT INTO webhooks (id, received_at, request_id, status, webhook_type, merchant_id, rating_id, "
        "body) "
        "VALUES (?, ?, ?, 'accepted', 'rating_submitted', ?, ?, ?)",
        webhooks,
    )
    conn.executemany(
        "INSERT INTO deliveries (id, webhook_id, merchant_id, rating_id, version, external_id, stars, "
        "rating, "
        "state, next_attempt_at, inquiry_id, attempts, created_at, updated_at, delivered_at) "
        "VALUES (?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        deliveries,
    )
