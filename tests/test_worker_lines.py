"""The line per delivery, spelled by the worker itself, is byte for byte what the logger's call with the same
keys writes (and so what structlog's processors and JSONRenderer write: tests/test_logs_lines.py)."""

import asyncio
import io
import json
import random
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from relay import jsonline, tenant_worker
from relay.app import create_app
from relay.keys import STORE
from relay.sim.app import create_sim_app
from relay.sim.state import SimState
from relay.store.records import ClaimedDelivery, Outcome
from relay.tenant_worker import outcome_members
from tests.conftest import AUTH
from tests.forwarding import Quivo, forwarding_settings, rating_webhook, wait_for_delivery

# What operators meet in lines: control characters, quotes, backslashes, non-ASCII, surrogates.
TEXT = st.text(st.characters(codec=None)) | st.sampled_from(
    ["", '"', "\\", "\x00\x1f\x7f", "tëst ✓ 😀", "\ud800"]
)
IDS = st.integers(min_value=0, max_value=2**63 - 1)
# The order of the keys in the worker's call (relay/tenant_worker.py: _record), after the bound tenant.
CALL_ORDER = [
    "tenant",
    "delivery_id",
    "merchant_id",
    "rating_id",
    "inquiry_id",
    "attempt",
    "state",
    "status_code",
    "error",
    "next_attempt_at",
    "current_rating",
    "duration_ms",
]
AGE = datetime(2026, 12, 2, tzinfo=UTC)


@given(
    delivery_id=IDS,
    merchant_id=IDS,
    rating_id=IDS,
    inquiry_id=st.none() | IDS,
    attempts=st.integers(min_value=0, max_value=1000),
    state=TEXT,
    status_code=st.none() | st.integers(min_value=100, max_value=599),
    error=st.none() | TEXT,
    next_attempt_at=st.none() | st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
    current_rating=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    duration_ms=st.integers(0, 10**12).map(lambda ns: round(ns / 1e6, 2)),
)
def test_the_members_are_spelled_as_the_calls_keys_are(
    delivery_id: int,
    merchant_id: int,
    rating_id: int,
    inquiry_id: int | None,
    attempts: int,
    state: str,
    status_code: int | None,
    error: str | None,
    next_attempt_at: str | None,
    current_rating: float | None,
    duration_ms: float,
) -> None:
    delivery = ClaimedDelivery(
        delivery_id, "t", merchant_id, rating_id, "{}", inquiry_id, attempts, False, AGE
    )
    outcome = Outcome(
        delivery_id,
        "retrying",
        attempts,
        False,
        inquiry_id=inquiry_id,
        last_error=error,
        current_rating=current_rating,
    )
    call: dict[str, Any] = {
        "delivery_id": delivery_id,
        "merchant_id": merchant_id,
        "rating_id": rating_id,
        "inquiry_id": inquiry_id,
        "attempt": attempts,
        "state": state,
        "status_code": status_code,
        "error": error,
        "next_attempt_at": next_attempt_at,
        "current_rating": current_rating,
        "duration_ms": duration_ms,
    }

    spelled = outcome_members(delivery, outcome, state, status_code, next_attempt_at, duration_ms)

    assert spelled == jsonline.encode(call)[1:-1]


@pytest.mark.parametrize(
    ("fault", "event", "state"),
    [
        ({}, "delivery.delivered", "delivered"),
        ({"error_rate": 1.0}, "delivery.retry_scheduled", "retrying"),
        ({"missing": {810}}, "delivery.dead", "dead"),
    ],
)
async def test_the_line_of_a_delivery_is_the_logger_calls_line(
    aiohttp_client, aiohttp_server, make_settings, lines, monkeypatch, fault, event, state
):
    quivo_state = SimState(rng=random.Random(3))
    for knob, value in fault.items():
        setattr(quivo_state, knob, value)
    server = await aiohttp_server(create_sim_app(quivo_state))
    quivo = Quivo(quivo_state, str(server.make_url("")).rstrip("/"))
    monkeypatch.setattr(time, "time_ns", lambda: 1_764_640_000_123_456_789)
    # structlog keeps the logger a proxy first made, and with it an earlier test's stream: a fresh one.
    monkeypatch.setattr(tenant_worker, "log", structlog.get_logger("relay.delivery"))
    relay = await aiohttp_client(create_app(make_settings(**forwarding_settings(quivo)), run_worker=True))

    answer = await relay.post("/webhooks/bringg", data=rating_webhook(81, "INQ-810"), headers=AUTH)
    delivery_id = (await answer.json())["delivery_id"]
    await wait_for_delivery(relay.app[STORE], delivery_id, states=frozenset({state}))
    # The line follows the commit.
    async with asyncio.timeout(10):
        while not (written := _first_line(lines, event)):  # noqa: ASYNC110 - written by the worker's task
            await asyncio.sleep(0.01)

    keys = json.loads(written)
    assert list(keys)[: len(CALL_ORDER)] == CALL_ORDER
    assert keys["delivery_id"] == delivery_id
    # The same keys and values through the logger's own call write the same line.
    logger = structlog.get_logger("relay.delivery").bind(tenant=keys["tenant"])
    before = len(lines.getvalue())
    getattr(logger, keys["level"])(event, **{key: keys[key] for key in CALL_ORDER[1:]})
    assert lines.getvalue()[before:] == written


def _first_line(lines: io.StringIO, event: str) -> str:
    found = (line for line in lines.getvalue().splitlines(keepends=True) if f'"event": "{event}"' in line)
    return next(found, "")
