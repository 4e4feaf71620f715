"""The webhook route through HTTP: each answer, what is stored for it, and what is not."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from relay.app import create_app
from relay.keys import STORE
from relay.store.filters import WebhookFilter
from relay.store.records import DeliveryRecord, WebhookDetail, WebhookSummary
from tests.conftest import AUTH, BACKENDS, fixture_bytes
from tests.forwarding import MAX_LIMIT, all_deliveries, delivery_of

FIXTURE = "bringg/rating_submitted.json"


def rating_body(
    rating_id: int = 77, stars: Any = 5, updated_at: str | None = None, merchant_id: int = 9, **task: Any
) -> bytes:
    payload = {
        "webhook_type": "rating_submitted",
        "merchant_id": merchant_id,
        "rating": {
            "id": rating_id,
            "rating": stars,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "updated_at": updated_at,
            "comment": "Left at the door",
            "task": {"id": 5, "status": 4, "title": "Groceries", "external_id": "ORD-1", **task},
            "rating_reasons": [{"text": "On time"}],
        },
    }
    return json.dumps(payload).encode()


pytestmark = pytest.mark.backends(*BACKENDS)
Client = TestClient[web.Request, web.Application]


async def webhook(client: Client, webhook_id: int) -> WebhookDetail:
    """The stored webhook, read through the relay's store."""
    stored = await client.app[STORE].get_webhook(webhook_id)
    assert stored is not None
    return stored


async def webhooks(client: Client) -> list[WebhookSummary]:
    """Every stored webhook, oldest first."""
    return list(reversed(await client.app[STORE].list_webhooks(WebhookFilter(), limit=MAX_LIMIT)))


async def delivery(client: Client, delivery_id: int) -> DeliveryRecord:
    return (await delivery_of(client.app[STORE], delivery_id)).delivery


async def delivery_states(client: Client) -> dict[int, str]:
    return {row.id: row.state for row in await all_deliveries(client.app[STORE])}


@pytest.fixture
async def relay(aiohttp_client, make_settings):
    return await aiohttp_client(create_app(make_settings(), run_worker=False))


async def post(client, body: bytes, headers: dict[str, str] | None = None):
    response = await client.post("/webhooks/bringg", data=body, headers=AUTH if headers is None else headers)
    return response, await response.json()


async def test_new_rating_is_committed_with_a_pending_delivery_before_202(relay):
    response, answer = await post(relay, fixture_bytes(FIXTURE))

    assert response.status == 202
    assert answer["status"] == "accepted"
    stored_webhook = await webhook(relay, answer["id"])
    assert stored_webhook.body == fixture_bytes(FIXTURE)
    assert stored_webhook.status == "accepted"
    stored_delivery = await delivery(relay, answer["delivery_id"])
    assert (stored_delivery.state, stored_delivery.merchant_id, stored_delivery.rating_id) == (
        "pending",
        1,
        3452,
    )
    assert (stored_delivery.stars, stored_delivery.external_id, stored_delivery.version) == (
        4,
        "12443523",
        "",
    )
    stored = stored_delivery.rating
    assert stored["reasons"] == ["Driver friendlinesss", "Ease of use"]
    assert stored["created_at"] == "2022-07-20T12:01:30.191000Z"
    assert (stored["task_id"], stored["task_title"], stored["task_status"]) == (345623, "pickup", 1)


async def test_same_version_again_is_a_duplicate_without_a_second_delivery(relay):
    _, first = await post(relay, fixture_bytes(FIXTURE))
    response, again = await post(relay, fixture_bytes(FIXTURE))

    assert response.status == 200
    assert again["status"] == "duplicate"
    assert again["delivery_id"] == first["delivery_id"]
    assert len(await delivery_states(relay)) == 1
    assert [row.status for row in await webhooks(relay)] == ["accepted", "duplicate"]


async def test_newer_version_supersedes_the_waiting_older_one(relay):
    _, original = await post(relay, rating_body(stars=2))
    _, update = await post(relay, rating_body(stars=5, updated_at="2026-11-02T08:00:00Z"))

    assert update["status"] == "accepted"
    assert await delivery_states(relay) == {
        original["delivery_id"]: "superseded",
        update["delivery_id"]: "pending",
    }


async def test_same_rating_id_from_two_merchants_is_two_ratings_each_delivered(relay):
    # The duplicate key and the versions a new one supersedes are per merchant: ids are Bringg's per merchant.
    _, first = await post(relay, rating_body(rating_id=77, merchant_id=9))
    response, other = await post(relay, rating_body(rating_id=77, merchant_id=10))
    _, newer_other = await post(
        relay, rating_body(rating_id=77, merchant_id=10, updated_at="2026-11-02T08:00:00Z")
    )

    assert (response.status, first["status"], other["status"]) == (202, "accepted", "accepted")
    assert first["delivery_id"] != other["delivery_id"]
    assert await delivery_states(relay) == {
        first["delivery_id"]: "pending",
        other["delivery_id"]: "superseded",
        newer_other["delivery_id"]: "pending",
    }


async def test_older_version_arriving_late_is_kept_but_never_delivered_and_answered_so(relay):
    _, update = await post(relay, rating_body(stars=5, updated_at="2026-11-02T08:00:00Z"))
    response, late = await post(relay, rating_body(stars=2))

    assert (response.status, late["status"]) == (202, "superseded")
    assert (await webhook(relay, late["id"])).status == "accepted"
    assert await delivery_states(relay) == {
        update["delivery_id"]: "pending",
        late["delivery_id"]: "superseded",
    }


async def test_a_far_future_version_is_quarantined_and_blocks_no_later_genuine_one(relay):
    far, near = datetime.now(UTC) + timedelta(hours=25), datetime.now(UTC) + timedelta(hours=23)
    _, year_9999 = await post(relay, rating_body(stars=1, updated_at="9999-12-31T23:59:59Z"))
    _, tomorrow = await post(relay, rating_body(stars=1, updated_at=far.isoformat()))
    response, genuine = await post(relay, rating_body(stars=4, updated_at="2026-11-02T08:00:00Z"))
    _, skewed = await post(relay, rating_body(stars=5, updated_at=near.isoformat()))

    assert (year_9999["status"], tomorrow["status"]) == ("quarantined", "quarantined")
    assert year_9999["errors"] == [
        "rating.updated_at: 9999-12-31T23:59:59.000000Z is more than 1 day ahead of the relay's clock, "
        "not a plausible version"
    ]
    assert (response.status, genuine["status"], skewed["status"]) == (202, "accepted", "accepted")
    assert await delivery_states(relay) == {
        genuine["delivery_id"]: "superseded",
        skewed["delivery_id"]: "pending",
    }


async def test_other_webhook_type_is_ignored_and_its_body_kept(relay):
    body = b'{"webhook_type": "order_done", "merchant_id": 4, "task": {"id": 1}}'
    response, answer = await post(relay, body)

    assert (response.status, answer["status"]) == (202, "ignored")
    stored = await webhook(relay, answer["id"])
    assert (stored.status, stored.webhook_type, stored.merchant_id) == ("ignored", "order_done", 4)
    assert stored.body == body
    assert await delivery_states(relay) == {}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (fixture_bytes("bringg/rating_submitted.doc-example.txt"), "Invalid JSON"),
        (fixture_bytes("bringg/rating_submitted.doc-nulls.txt"), "Invalid JSON"),
        (fixture_bytes("bringg/rating_submitted.nulls.json"), "rating.id: missing"),
        (b"not json at all", "Invalid JSON"),
        (b"[1, 2, 3]", "object"),
        (b'{"merchant_id": 1, "rating": {"id": 1, "rating": 3}}', "webhook_type: missing"),
        (rating_body(stars=0), "stars must be 1..5, got 0"),
        (rating_body(stars=6), "stars must be 1..5, got 6"),
        (rating_body(stars=4.5), "rating.rating"),
        (rating_body(stars=True), "rating.rating: a boolean is not a number"),
        (
            rating_body(external_id="1" * 201),
            "rating.task.external_id: 201 characters, an order id has at most 200",
        ),
        (rating_body(external_id="ORD\x001"), "rating.task.external_id: holds a NUL character"),
        (
            b'{"webhook_type": "order\\u0000done", "merchant_id": 3}',
            "webhook_type: holds a NUL character",
        ),
        (rating_body(stars=None), "stars missing"),
        (rating_body(rating_id=None), "rating.id: missing"),  # type: ignore[arg-type]
        (rating_body(rating_id=2**70), "rating.id"),
        (b'{"webhook_type": "rating_submitted", "merchant_id": 3}', "rating: missing"),
        (b'{"webhook_type": "rating_submitted", "rating": {"id": 1, "rating": 3}}', "merchant_id: missing"),
    ],
)
async def test_unusable_rating_is_quarantined_with_its_reason_and_raw_bytes(relay, body, reason):
    response, answer = await post(relay, body)

    assert (response.status, answer["status"]) == (202, "quarantined")
    assert any(reason in error for error in answer["errors"]), answer["errors"]
    stored = await webhook(relay, answer["id"])
    assert stored.body == body
    assert stored.status == "quarantined"
    assert any(reason in error for error in stored.errors)
    assert await delivery_states(relay) == {}


def bad_reasons_body(count: int) -> bytes:
    reasons: list[dict[str, list[str]]] = [{"text": []}] * count
    rating = {"id": 1, "rating": 3, "rating_reasons": reasons}
    return json.dumps({"webhook_type": "rating_submitted", "merchant_id": 9, "rating": rating}).encode()


async def test_a_megabyte_of_bad_reasons_is_one_small_reason_everywhere(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(relay_max_body_bytes=2**21), run_worker=False))
    body = bad_reasons_body(86_000)

    with structlog.testing.capture_logs() as logged:
        response, answer = await post(client, body)

    assert len(body) > 1_000_000
    assert (response.status, answer["status"]) == (202, "quarantined")
    assert answer["errors"] == [
        "rating.rating_reasons: List should have at most 100 items after validation, not 86000"
    ]
    assert (await webhook(client, answer["id"])).errors == answer["errors"]
    [line] = [line for line in logged if line["event"] == "webhook.quarantined"]
    assert line["errors"] == answer["errors"]


@pytest.mark.parametrize("rating", [{}, {"id": "not a number"}])
async def test_a_megabyte_webhook_type_is_kept_cut_everywhere(aiohttp_client, make_settings, rating):
    admin = {"Authorization": "Bearer admin-token-0123456789abcdef"}
    settings = make_settings(relay_max_body_bytes=2**21, relay_admin_token=admin["Authorization"][7:])
    client = await aiohttp_client(create_app(settings, run_worker=False))
    # A rating that does not parse takes the other path to the same judgement.
    body = json.dumps({"webhook_type": "t" + "x" * 1_040_000, "merchant_id": 1, "rating": rating}).encode()

    for _ in range(5):
        with structlog.testing.capture_logs() as logged:
            response, answer = await post(client, body)
    listing = await client.get("/admin/webhooks", params={"limit": 5}, headers=admin)

    cut = "t" + "x" * 62 + "…"
    assert (response.status, answer["status"]) == (202, "ignored")
    assert len(json.dumps(answer)) < 200
    [line] = [line for line in logged if line["event"] == "webhook.ignored"]
    assert line["webhook_type"] == cut
    assert (await webhook(client, answer["id"])).webhook_type == cut
    assert listing.status == 200
    assert len(await listing.read()) < 5 * 600
    assert [item["webhook_type"] for item in (await listing.json())["items"]] == [cut] * 5


async def test_many_errors_are_reported_as_the_first_few_and_a_count(relay):
    with structlog.testing.capture_logs() as logged:
        response, answer = await post(relay, bad_reasons_body(100))

    assert (response.status, answer["status"]) == (202, "quarantined")
    expected = [f"rating.rating_reasons.{n}.text: Input should be a valid string" for n in range(5)]
    assert answer["errors"] == [*expected, "... and 95 more (100 in all)"]
    assert (await webhook(relay, answer["id"])).errors == answer["errors"]
    [line] = [line for line in logged if line["event"] == "webhook.quarantined"]
    assert line["errors"] == answer["errors"]


async def test_loose_types_are_read_leniently(relay):
    body = (
        b'{"webhook_type": "rating_submitted", "merchant_id": "12", "extra": {"x": 1}, "rating": {'
        b'"id": "345", "rating": "3", "task": {"external_id": 98765, "title": null, "new_field": true}, '
        b'"created_at": "2026-11-01T10:00:00", "rating_reasons": [null, {"text": null}, {"text": "Late"}]}}'
    )
    response, answer = await post(relay, body)

    assert (response.status, answer["status"]) == (202, "accepted")
    [only] = await delivery_states(relay)
    stored_delivery = await delivery(relay, only)
    assert (stored_delivery.merchant_id, stored_delivery.rating_id, stored_delivery.stars) == (12, 345, 3)
    assert stored_delivery.external_id == "98765"
    stored = stored_delivery.rating
    assert stored["reasons"] == ["Late"]
    assert stored["created_at"] == "2026-11-01T10:00:00Z"  # no offset given: read as UTC


async def test_body_over_the_limit_gets_413_and_nothing_is_stored(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(relay_max_body_bytes=2048), run_worker=False))
    big = rating_body(title="x" * 4096)

    declared = await client.post("/webhooks/bringg", data=big, headers=AUTH)

    async def chunks() -> AsyncIterator[bytes]:
        yield big[:1000]
        yield big[1000:]

    streamed = await client.post("/webhooks/bringg", data=chunks(), headers=AUTH)
    assert (declared.status, streamed.status) == (413, 413)
    assert declared.content_type == "application/problem+json"
    assert await webhooks(client) == []


async def test_request_id_is_taken_from_the_caller_or_made_and_echoed(relay):
    given = await relay.post(
        "/webhooks/bringg", data=rating_body(), headers={**AUTH, "X-Request-ID": "abc-123"}
    )
    made = await relay.post("/webhooks/bringg", data=rating_body(rating_id=78), headers=AUTH)

    assert given.headers["X-Request-ID"] == "abc-123"
    assert len(made.headers["X-Request-ID"]) == 32
    assert [row.request_id for row in await webhooks(relay)] == ["abc-123", made.headers["X-Request-ID"]]


async def test_rating_older_than_the_retention_window_is_checked_at_quivo_before_sending(
    aiohttp_client, make_settings
):
    client = await aiohttp_client(create_app(make_settings(relay_retention_days=30), run_worker=False))

    _, old = await post(client, fixture_bytes(FIXTURE))  # created 2022: its delivery may have been pruned
    _, recent = await post(client, rating_body())  # created days ago

    assert (await delivery(client, old["delivery_id"])).unconfirmed is True
    assert (await delivery(client, recent["delivery_id"])).unconfirmed is False


async def test_body_that_stalls_past_the_body_timeout_gets_408_and_nothing_is_stored(
    aiohttp_client, make_settings
):
    client = await aiohttp_client(create_app(make_settings(relay_body_timeout_s=0.3), run_worker=False))
    body = fixture_bytes(FIXTURE)

    async def trickle() -> AsyncIterator[bytes]:
        yield body[:20]
        await asyncio.sleep(0.8)
        yield body[20:]

    stalled = await client.post("/webhooks/bringg", data=trickle(), headers=AUTH)
    prompt = await client.post("/webhooks/bringg", data=body, headers=AUTH)

    assert (stalled.status, stalled.content_type) == (408, "application/problem+json")
    assert prompt.status == 202
    assert len(await webhooks(client)) == 1


async def test_a_refusal_tells_the_caller_nothing_of_the_configuration_and_the_log_why(
    aiohttp_client, make_settings
):
    secret = "bringg-shared-jwt-secret-of-32-bytes!"
    settings = make_settings(bringg_jwt_secret=secret, bringg_jwt_issuer="https://us2-admin-api.bringg.com")
    client = await aiohttp_client(create_app(settings, run_worker=False))
    foreign = jwt.encode({"iss": "https://evil.example", "exp": int(time.time()) + 300}, secret, "HS256")

    with capture_logs() as logs:
        response, answer = await post(client, fixture_bytes(FIXTURE), {"Authorization": f"Bearer {foreign}"})

    assert (response.status, answer["detail"]) == (401, "missing or invalid credentials")
    for word in ("token", "jwt", "issuer", "oauth"):
        assert word not in json.dumps(answer).lower()
    [line] = [line for line in logs if line["event"] == "webhook.unauthorized"]
    assert line["reason"] == "token does not match; jwt issuer mismatch"


async def test_a_chunked_body_over_the_limit_that_came_whole_gets_413(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(relay_max_body_bytes=2048), run_worker=False))
    big = rating_body(title="x" * 4096)
    head = (
        "POST /webhooks/bringg HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        f"Authorization: {AUTH['Authorization']}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    # Headers and every chunk in one write: the body is all there when the handler starts.
    request = head + f"{len(big):x}\r\n".encode() + big + b"\r\n0\r\n\r\n"
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request)
    answer = await reader.read()
    writer.close()

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert await webhooks(client) == []
