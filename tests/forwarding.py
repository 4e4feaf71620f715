"""Helpers for forwarding tests: a Quivo stand-in in the test's loop, and waiting on delivery states."""

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from relay.domain.delivery import DELIVERY_STATES, WAITING_STATES
from relay.sim.state import SimState
from relay.store import create_store
from relay.store.api import Store
from relay.store.filters import DeliveryFilter
from relay.store.records import DeliveryDetail, DeliveryRecord, DeliverySummary

T = TypeVar("T")
# Enough for every delivery a test makes.
MAX_LIMIT = 10_000

SETTLED = frozenset(DELIVERY_STATES) - frozenset(WAITING_STATES)


@dataclass
class Quivo:
    """The stand-in's state (its fault knobs and records) and where it listens."""

    state: SimState
    url: str


def forwarding_settings(quivo: Quivo, **overrides: Any) -> dict[str, Any]:
    """Settings that point the worker at the stand-in, with short retry and sweep times for tests."""
    return {
        "quivo_base_url": quivo.url,
        "quivo_api_key": quivo.state.api_key,
        "quivo_username": quivo.state.username,
        "quivo_password": quivo.state.password,
        "relay_inquiry_id_pattern": r"^INQ-(\d+)$",
        "relay_retry_base_s": 0.05,
        "relay_retry_max_s": 0.2,
        "relay_sweep_interval_s": 0.05,
        "quivo_timeout_s": 2.0,
        # Below the timeout (load_settings refuses that): the stand-in commits at once unless told.
        "relay_unsure_settle_s": 0.2,
        "quivo_max_rps": 1000.0,
        **overrides,
    }


def rating_webhook(
    rating_id: int, external_id: str, *, stars: int = 4, updated_at: str | None = None, merchant_id: int = 1
) -> bytes:
    return json.dumps(
        {
            "webhook_type": "rating_submitted",
            "merchant_id": merchant_id,
            "rating": {
                "id": rating_id,
                "rating": stars,
                "comment": f"comment of rating {rating_id}",
                "created_at": "2026-11-20T09:00:00Z",
                "updated_at": updated_at,
                "task": {"id": rating_id * 10, "title": "Delivery", "external_id": external_id},
                "rating_reasons": [{"text": "Friendly driver"}],
            },
        }
    ).encode()


def query(path: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def execute(path: Path, sql: str, *args: Any) -> None:
    """A write beside the relay's own, committed, as another process on the database would make it."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(sql, args)
    finally:
        conn.close()


async def delivery_of(store: Store, delivery_id: int) -> DeliveryDetail:
    """One delivery with its calls to Quivo, read through the store as an operator would."""
    detail = await store.get_delivery(delivery_id)
    assert detail is not None, f"no delivery {delivery_id}"
    return detail


async def all_deliveries(store: Store) -> list[DeliverySummary]:
    """Every delivery, oldest first."""
    return list(reversed(await store.list_deliveries(DeliveryFilter(), limit=MAX_LIMIT)))


async def wait_for_delivery(
    store: Store, delivery_id: int, states: frozenset[str] = SETTLED, within_s: float = 15
) -> DeliveryRecord:
    """The delivery once its state is one of `states`."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        delivery = (await delivery_of(store, delivery_id)).delivery
        if delivery.state in states:
            return delivery
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"delivery {delivery_id} still {delivery.state} after {within_s}s")
        await asyncio.sleep(0.02)


def on_store(url: str, read: Callable[[Store], Awaitable[T]]) -> T:
    """`read` on a store of its own on DATABASE_URL `url`, as a process beside the relay would open it."""

    async def run() -> T:
        store = create_store(url, timeout_s=5, pool_size=1)
        await store.open()
        try:
            return await read(store)
        finally:
            await store.close()

    return asyncio.run(run())


async def wait_for_state(
    path: Path, delivery_id: int, states: frozenset[str] = SETTLED, within_s: float = 15
) -> sqlite3.Row:
    """The delivery's row once its state is one of `states`."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        row = query(path, "SELECT * FROM deliveries WHERE id = ?", delivery_id)[0]
        if row["state"] in states:
            return row
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"delivery {delivery_id} still {row['state']} after {within_s}s")
        await asyncio.sleep(0.02)
