"""Fill a relay database fast through its store's import (COPY on PostgreSQL), as `relay db copy` does."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from relay.domain.rating import Rating
from relay.store import create_store
from relay.store.api import Store
from relay.store.records import Row

CHUNK = 20_000


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    """The relay's store on `url`, migrated and open, closed at the end."""
    store = create_store(url, timeout_s=60, pool_size=2)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def seed(url: str, count: int, *, state: str, first_rating_id: int = 1, merchant_id: int = 1) -> None:
    """`count` deliveries in `state` (each with its accepted webhook), inquiry ids taken from INQ-<n>."""

    async def run() -> None:
        now = datetime.now(UTC)
        async with opened(url) as store:
            for start in range(first_rating_id, first_rating_id + count, CHUNK):
                ids = range(start, min(start + CHUNK, first_rating_id + count))
                await store.import_rows("webhooks", [_webhook(n, merchant_id, now) for n in ids])
                await store.import_rows("deliveries", [_delivery(n, merchant_id, state, now) for n in ids])
            # As `relay db copy` leaves its target: planned on statistics of these rows, as autovacuum
            # would have them a minute later, not at a moment of its own choosing during a measurement.
            await store.refresh_statistics()

    asyncio.run(run())


def _webhook(rating_id: int, merchant_id: int, now: datetime) -> Row:
    body = {"webhook_type": "rating_submitted", "merchant_id": merchant_id, "rating": {"id": rating_id}}
    return {
        "id": rating_id,
        "received_at": now,
        "request_id": f"seed-{rating_id}",
        "status": "accepted",
        "webhook_type": "rating_submitted",
        "merchant_id": merchant_id,
        "rating_id": rating_id,
        "body": json.dumps(body).encode(),
    }


def _delivery(rating_id: int, merchant_id: int, state: str, now: datetime) -> Row:
    rating = Rating(
        merchant_id=merchant_id,
        rating_id=rating_id,
        stars=1 + rating_id % 5,
        external_id=f"INQ-{rating_id}",
        comment="Fine",
        reasons=("On time",),
        task_title="Delivery",
    )
    delivered = state == "delivered"
    return {
        "id": rating_id,
        "webhook_id": rating_id,
        "merchant_id": merchant_id,
        "rating_id": rating_id,
        "version": "",
        "external_id": rating.external_id,
        "stars": rating.stars,
        "rating": rating.model_dump_json(),
        "state": state,
        "next_attempt_at": None if delivered else now,
        "inquiry_id": rating_id if delivered else None,
        "attempts": 1 if delivered else 0,
        "created_at": now,
        "updated_at": now,
        "delivered_at": now if delivered else None,
    }
