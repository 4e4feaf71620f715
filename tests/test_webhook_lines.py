"""The canonical line per webhook, spelled by the route itself, is byte for byte what the logger's call with
the same keys writes (and so what structlog's processors and JSONRenderer write: tests/test_logs_lines.py)."""

import json
import time
from typing import Any, get_args

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from relay import jsonline
from relay.app import create_app
from relay.bringg import routes
from relay.bringg.routes import webhook_members
from relay.domain.judgement import Judgement
from relay.logs import bind_request_id, get_logger
from relay.store.records import StoredStatus, StoredWebhook
from tests.conftest import AUTH
from tests.test_webhook import rating_body

# What operators meet in lines: control characters, quotes, backslashes, non-ASCII, surrogates.
TEXT = st.text(st.characters(codec=None)) | st.sampled_from(
    ["", '"', "\\", "\x00\x1f\x7f", "tëst ✓ 😀", "\ud800"]
)
IDS = st.integers(min_value=0, max_value=2**63 - 1)
# The order of the keys in the route's call (relay/bringg/routes.py: _report_stored).
CALL_ORDER = [
    "webhook_id",
    "delivery_id",
    "webhook_type",
    "errors",
    "outcome",
    "duration_ms",
    "tenant",
    "merchant_id",
    "rating_id",
    "auth",
    "bytes",
]


@given(
    webhook_id=IDS,
    status=st.sampled_from(get_args(StoredStatus)),
    delivery_id=st.none() | IDS,
    webhook_type=st.none() | TEXT,
    errors=st.lists(TEXT, max_size=3).map(tuple),
    merchant_id=st.none() | IDS,
    rating_id=st.none() | IDS,
    tenant=TEXT,
    auth=st.none() | TEXT,
    size=st.integers(min_value=0, max_value=2**31),
    duration_ms=st.floats(min_value=0, max_value=1e9)
    | st.integers(0, 10**9).map(lambda ns: ns // 10_000 / 100),
)
def test_the_members_are_spelled_as_the_calls_keys_are(
    webhook_id: int,
    status: StoredStatus,
    delivery_id: int | None,
    webhook_type: str | None,
    errors: tuple[str, ...],
    merchant_id: int | None,
    rating_id: int | None,
    tenant: str,
    auth: str | None,
    size: int,
    duration_ms: float,
) -> None:
    stored = StoredWebhook(webhook_id, status, delivery_id)
    judgement = Judgement("accepted", webhook_type, merchant_id, rating_id, errors)
    fields = {
        "tenant": tenant,
        "merchant_id": merchant_id,
        "rating_id": rating_id,
        "auth": auth,
        "bytes": size,
    }
    call: dict[str, Any] = {
        "webhook_id": webhook_id,
        "delivery_id": delivery_id,
        "webhook_type": webhook_type,
        "errors": list(errors) or None,
        "outcome": status,
        "duration_ms": duration_ms,
        **fields,
    }

    assert webhook_members(stored, judgement, fields, duration_ms) == jsonline.encode(call)[1:-1]


@pytest.mark.parametrize(
    ("body", "event"),
    [(rating_body(), "webhook.accepted"), (b'{"webhook_type": "rating_submitted"}', "webhook.quarantined")],
)
async def test_the_line_of_a_webhook_is_the_logger_calls_line(
    aiohttp_client, make_settings, lines, monkeypatch, body, event
):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))
    monkeypatch.setattr(time, "time_ns", lambda: 1_764_640_000_123_456_789)
    # structlog keeps the logger a proxy first made, and with it an earlier test's stream: a fresh one.
    monkeypatch.setattr(routes, "log", get_logger("relay.webhook"))

    response = await client.post("/webhooks/bringg", data=body, headers=AUTH)

    assert response.status == 202
    [written] = [line for line in lines.getvalue().splitlines(keepends=True) if f'"event": "{event}"' in line]
    keys = json.loads(written)
    assert list(keys)[: len(CALL_ORDER)] == CALL_ORDER
    # The same keys and values through the logger's own call, in the request's context, write the same line.
    bind_request_id(keys["request_id"])
    logger = structlog.get_logger("relay.webhook")
    getattr(logger, keys["level"])(event, **{key: keys[key] for key in CALL_ORDER})
    assert lines.getvalue().endswith(written + written)
