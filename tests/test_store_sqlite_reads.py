"""SQLite reads: each sees every commit made before it began, whatever other reads run beside it."""

import asyncio
from datetime import timedelta
from pathlib import Path

from relay.store.sqlite.store import SqliteStore
from tests.test_store_sqlite import NOW, inbound

OTHER_READERS = 4
WEBHOOKS = 150


async def test_a_delivery_is_read_back_at_once_while_other_reads_share_the_reader(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.db", timeout_s=5)
    await store.open()
    stop = asyncio.Event()

    async def read_meanwhile() -> None:
        # An operator's page, a scrape: reads that may be under way when another one begins.
        while not stop.is_set():
            await store.get_webhook(1)

    readers = [asyncio.create_task(read_meanwhile()) for _ in range(OTHER_READERS)]
    missed = []
    try:
        for rating_id in range(1, WEBHOOKS + 1):
            stored = await store.record_webhook(inbound(rating_id), recheck_before=NOW - timedelta(days=30))
            assert stored.delivery_id is not None
            if await store.get_delivery(stored.delivery_id) is None:
                missed.append(stored.delivery_id)
    finally:
        stop.set()
        await asyncio.gather(*readers)
        await store.close()

    assert missed == []
