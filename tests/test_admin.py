"""The admin API through HTTP: auth, every endpoint, filters and pages, replay, reprocess, links and stats."""

import base64
import json
import random
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from relay.app import create_app
from relay.bringg import routes as webhook_routes
from relay.bringg.payload import judge
from relay.domain.delivery import DELIVERY_STATES
from relay.domain.judgement import Judgement
from relay.domain.rating import Rating, format_instant
from relay.keys import NEW_DELIVERY, SETTINGS, STORE
from relay.sim.app import create_sim_app
from relay.sim.state import SimState
from relay.store.api import Store
from relay.store.filters import DeliveryFilter, ReplayFilter, WebhookFilter
from relay.store.operations import replay_matching
from relay.store.records import DeliverySummary
from relay.store.sqlite.store import SqliteStore
from tests.conftest import AUTH, BACKENDS, fixture_bytes
from tests.forwarding import (
    MAX_LIMIT,
    Quivo,
    forwarding_settings,
    on_store,
    rating_webhook,
    wait_for_delivery,
)
from tests.plans import full_scans_and_sorts, plan

TOKEN = "admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PROBLEM = "application/problem+json"
T = TypeVar("T")
# The admin API reads and changes the store: each test runs on every backend unless marked otherwise.
pytestmark = pytest.mark.backends(*BACKENDS)
# Requests refused before the store is read: what they prove holds whatever the backend, so SQLite alone.
REFUSED_BEFORE_THE_STORE = pytest.mark.backends("sqlite")


@pytest.fixture
async def relay(aiohttp_client, make_settings):
    settings = make_settings(relay_admin_token=TOKEN)
    return await aiohttp_client(create_app(settings, run_worker=False))


def ago(**delta: float) -> str:
    return format_instant(datetime.now(UTC) - timedelta(**delta))


def sql(relay, statement: str, *args: Any) -> list[sqlite3.Row]:
    """Run one statement on the relay's database file, committed at once (the relay reads it through WAL)."""
    conn = sqlite3.connect(relay.app[SETTINGS].database_path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(statement, args).fetchall()
    finally:
        conn.close()


def seed(
    relay,
    *,
    state: str = "pending",
    merchant_id: int = 1,
    rating_id: int | None = None,
    external_id: str = "ORD-1",
    inquiry_id: int | None = None,
    version: str = "",
    created_at: str | None = None,
    updated_at: str | None = None,
    next_attempt_at: str | None = None,
    attempts: int = 0,
    last_status: int | None = None,
    last_error: str | None = None,
    request_id: str = "seeded",
) -> int:
    """A delivery in any state, with the accepted webhook it came from, written through a store of its own
    (as `relay db copy` writes rows), on whichever backend the relay runs."""
    created = datetime.fromisoformat(created_at or ago(minutes=1))

    async def write(store: Store) -> int:
        deliveries = await store.list_deliveries(DeliveryFilter(), limit=MAX_LIMIT)
        delivery_id = deliveries[0].id + 1 if deliveries else 1
        rating = rating_id or max((row.rating_id for row in deliveries), default=1000) + 1
        webhook_id = await _import_webhook(
            store,
            {
                "received_at": created,
                "request_id": request_id,
                "status": "accepted",
                "webhook_type": "rating_submitted",
                "merchant_id": merchant_id,
                "rating_id": rating,
                "body": rating_webhook(rating, external_id, merchant_id=merchant_id),
            },
        )
        normalized = Rating(merchant_id=merchant_id, rating_id=rating, stars=4, external_id=external_id)
        await store.import_rows(
            "deliveries",
            [
                {
                    "id": delivery_id,
                    "webhook_id": webhook_id,
                    "merchant_id": merchant_id,
                    "rating_id": rating,
                    "version": version,
                    "external_id": external_id,
                    "stars": 4,
                    "rating": normalized.model_dump_json(),
                    "state": state,
                    "inquiry_id": inquiry_id,
                    "attempts": attempts,
                    "next_attempt_at": next_attempt_at and datetime.fromisoformat(next_attempt_at),
                    "last_status": last_status,
                    "last_error": last_error,
                    "created_at": created,
                    "updated_at": datetime.fromisoformat(updated_at) if updated_at else created,
                }
            ],
        )
        return delivery_id

    return through_store(relay, write)


def seed_quarantined(
    relay, body: bytes, *, errors: list[str], received_at: str, request_id: str = "seeded"
) -> int:
    """A quarantined webhook with no delivery, as an older relay that refused `body` would have left it."""

    async def write(store: Store) -> int:
        return await _import_webhook(
            store,
            {
                "received_at": datetime.fromisoformat(received_at),
                "request_id": request_id,
                "status": "quarantined",
                "errors": json.dumps(errors),
                "content_type": "application/json",
                "body": body,
            },
        )

    return through_store(relay, write)


async def _import_webhook(store: Store, row: dict[str, Any]) -> int:
    """Insert one webhook row, numbered past the newest; its id."""
    newest = await store.list_webhooks(WebhookFilter(), limit=1)
    webhook_id = newest[0].id + 1 if newest else 1
    await store.import_rows("webhooks", [{"id": webhook_id, **row}])
    return webhook_id


def seed_attempt(
    relay,
    delivery_id: int,
    *,
    started_at: str,
    duration_ms: int,
    status_code: int,
    outcome: str,
    error: str | None = None,
    number: int = 1,
    action: str = "send",
) -> None:
    """One call to Quivo recorded for a delivery, written through a store of its own as `seed` writes."""
    call = {
        "delivery_id": delivery_id,
        "number": number,
        "action": action,
        "started_at": datetime.fromisoformat(started_at),
        "duration_ms": duration_ms,
        "status_code": status_code,
        "outcome": outcome,
        "error": error,
    }
    through_store(relay, lambda store: store.import_rows("attempts", [call]))


def through_store(relay, read: Callable[[Store], Awaitable[T]]) -> T:
    """`read` on a store of its own on the relay's database, in a thread: the test's loop runs in this one."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(on_store, relay.app[SETTINGS].database_url, read).result()


def delivery_row(relay, delivery_id: int) -> dict[str, Any]:
    """Every field of one delivery, read through the store."""
    detail = through_store(relay, lambda store: store.get_delivery(delivery_id))
    assert detail is not None
    return asdict(detail.delivery)


def webhook_row(relay, webhook_id: int) -> dict[str, Any]:
    """Every field of one stored webhook, its body included, read through the store."""
    detail = through_store(relay, lambda store: store.get_webhook(webhook_id))
    assert detail is not None
    return asdict(detail)


def every_delivery(relay) -> list[DeliverySummary]:
    """Every delivery, newest first, read through the store."""
    return through_store(relay, lambda store: store.list_deliveries(DeliveryFilter(), limit=MAX_LIMIT))


def links(relay) -> list[tuple[int, str, int]]:
    """Every saved link as (merchant_id, external_id, inquiry_id), in key order."""
    saved = through_store(relay, lambda store: store.list_links(limit=MAX_LIMIT))
    return [(link.merchant_id, link.external_id, link.inquiry_id) for link in saved]


async def get(relay, path: str, **params: Any) -> tuple[int, Any]:
    response = await relay.get(path, params=params, headers=ADMIN)
    return response.status, await response.json()


async def post(relay, path: str, **kwargs: Any) -> tuple[int, Any]:
    response = await relay.post(path, headers={**ADMIN, **kwargs.pop("headers", {})}, **kwargs)
    return response.status, await response.json()


async def listed_ids(relay, path: str, **params: Any) -> list[int]:
    status, answer = await get(relay, path, **params)
    assert status == 200, answer
    return [item["id"] for item in answer["items"]]


# Access


@REFUSED_BEFORE_THE_STORE
async def test_admin_does_not_exist_without_a_token(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))

    response = await client.get("/admin/stats", headers=ADMIN)

    assert response.status == 404


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-value"}, {"Authorization": f"Basic {TOKEN}"}, AUTH],
)
async def test_missing_or_wrong_token_is_refused_with_401_and_never_logged(relay, capsys, headers):
    response = await relay.get("/admin/deliveries", headers=headers)

    assert response.status == 401
    assert response.content_type == PROBLEM
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    logged = capsys.readouterr()
    assert "wrong-token-value" not in logged.out + logged.err
    assert (await relay.get("/admin/deliveries", headers=ADMIN)).status == 200


# Deliveries: listing


async def test_deliveries_are_listed_newest_first_with_their_fields(relay):
    first = seed(relay, state="dead", inquiry_id=5, attempts=3, last_error="Quivo answered 422")
    second = seed(relay)

    status, answer = await get(relay, "/admin/deliveries")

    assert status == 200
    assert [item["id"] for item in answer["items"]] == [second, first]
    assert answer["next_cursor"] is None
    item = answer["items"][1]
    assert set(item) == {
        "id",
        "tenant",
        "state",
        "merchant_id",
        "rating_id",
        "external_id",
        "inquiry_id",
        "stars",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
        "updated_at",
    }
    assert (item["state"], item["inquiry_id"], item["attempts"], item["last_error"]) == (
        "dead",
        5,
        3,
        "Quivo answered 422",
    )


async def test_deliveries_filter_by_state_merchant_order_inquiry_and_time(relay):
    old_dead = seed(relay, state="dead", created_at=ago(hours=3))
    unmatched = seed(relay, state="unmatched", merchant_id=2, external_id="ORD-9", created_at=ago(hours=1))
    delivered = seed(relay, state="delivered", inquiry_id=77, created_at=ago(minutes=30))
    recent_dead = seed(relay, state="dead", merchant_id=2, external_id="ORD-8")

    assert await listed_ids(relay, "/admin/deliveries", state="dead") == [recent_dead, old_dead]
    assert await listed_ids(relay, "/admin/deliveries", state="dead,unmatched") == [
        recent_dead,
        unmatched,
        old_dead,
    ]
    repeated = await relay.get("/admin/deliveries?state=unmatched&state=delivered", headers=ADMIN)
    assert [item["id"] for item in (await repeated.json())["items"]] == [delivered, unmatched]
    assert await listed_ids(relay, "/admin/deliveries", merchant_id=2) == [recent_dead, unmatched]
    assert await listed_ids(relay, "/admin/deliveries", merchant_id=2, external_id="ORD-9") == [unmatched]
    assert await listed_ids(relay, "/admin/deliveries", inquiry_id=77) == [delivered]
    assert await listed_ids(relay, "/admin/deliveries", since="2h") == [recent_dead, delivered, unmatched]
    assert await listed_ids(relay, "/admin/deliveries", since="2h", until="45m") == [unmatched]
    assert await listed_ids(relay, "/admin/deliveries", since="2h", until="3h") == []
    assert await listed_ids(relay, "/admin/deliveries", until=ago(hours=2)[:19]) == [old_dead]
    assert await listed_ids(relay, "/admin/deliveries", state="dead", since="2h") == [recent_dead]
    # An order id alone: at every merchant (the document allows it; each item names its merchant).
    elsewhere = seed(relay, state="dead", merchant_id=5, external_id="ORD-9")
    assert await listed_ids(relay, "/admin/deliveries", external_id="ORD-9") == [elsewhere, unmatched]


async def test_an_order_id_holding_a_nul_matches_no_delivery_to_list_or_replay(relay):
    # PostgreSQL's text cannot hold a NUL: asked for one, it must still answer, as SQLite does.
    dead = seed(relay, state="dead", external_id="ORD")

    for params in (
        {"external_id": "ORD\x00X"},
        {"merchant_id": 1, "external_id": "ORD\x00", "state": "dead"},
    ):
        assert await listed_ids(relay, "/admin/deliveries", **params) == [], params
    status, answer = await post(relay, "/admin/deliveries/replay", params={"external_id": "ORD\x00X"})

    assert (status, answer["replayed"]) == (200, 0)
    assert delivery_row(relay, dead)["state"] == "dead"


@pytest.mark.parametrize("state", [None, "pending,dead"])
async def test_pages_walk_every_delivery_once_newest_first(relay, state):
    seeded = {n: seed(relay, state=("dead", "pending", "delivered")[n % 3]) for n in range(23)}
    wanted = [n for n in seeded if state is None or n % 3 != 2]
    expected = sorted((seeded[n] for n in wanted), reverse=True)

    walked: list[int] = []
    params: dict[str, Any] = {"limit": 5} | ({"state": state} if state else {})
    pages = 0
    while True:
        status, answer = await get(relay, "/admin/deliveries", **params)
        assert status == 200
        assert len(answer["items"]) <= 5
        walked += [item["id"] for item in answer["items"]]
        pages += 1
        if answer["next_cursor"] is None:
            break
        params["cursor"] = answer["next_cursor"]

    assert walked == expected
    assert pages == -(-len(expected) // 5)


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"state": "lost"}, "state"),
        ({"state": "dead,lost"}, "state"),
        ({"since": "yesterday"}, "since"),
        ({"merchant_id": "-1"}, "merchant_id"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_bad_listing_filter_is_400_problem_naming_the_field(relay, params, field):
    response = await relay.get("/admin/deliveries", params=params, headers=ADMIN)

    assert response.status == 400
    assert response.content_type == PROBLEM
    answer = await response.json()
    assert (answer["title"], answer["field"]) == ("Bad Request", field)
    assert answer["detail"].startswith(f"{field}: ")


def crafted_cursor(key_json: str) -> str:
    return base64.urlsafe_b64encode(key_json.encode()).decode().rstrip("=")


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/admin/deliveries", {"cursor": crafted_cursor(f"[{2**64}]")}, "cursor"),
        ("/admin/deliveries", {"cursor": crafted_cursor("[-1]")}, "cursor"),
        ("/admin/deliveries", {"cursor": crafted_cursor("[" * 5000)}, "cursor"),
        ("/admin/webhooks", {"cursor": crafted_cursor("[" * 5000)}, "cursor"),
        ("/admin/links", {"cursor": crafted_cursor('[1, "\\ud800"]')}, "cursor"),
        ("/admin/links", {"cursor": crafted_cursor(f'[{2**64}, "ORD-1"]')}, "cursor"),
        ("/admin/deliveries", {"since": "9999-12-31T23:59:59-23:59"}, "since"),
        ("/admin/deliveries", {"until": "0001-01-01T00:00:00+23:59"}, "until"),
        ("/admin/webhooks", {"since": "9999-12-31T23:59:59-23:59"}, "since"),
    ],
)
async def test_crafted_cursors_and_times_beyond_range_are_400_naming_the_field(relay, path, params, field):
    response = await relay.get(path, params=params, headers=ADMIN)

    assert response.status == 400
    answer = await response.json()
    assert (response.content_type, answer["field"]) == (PROBLEM, field)


@REFUSED_BEFORE_THE_STORE
async def test_a_bulk_replay_since_beyond_the_range_is_400_naming_it(relay):
    status, answer = await post(
        relay, "/admin/deliveries/replay", json={"since": "9999-12-31T23:59:59-23:59"}
    )

    assert (status, answer["field"]) == (400, "since")


@REFUSED_BEFORE_THE_STORE
async def test_limit_out_of_range_says_the_range(relay):
    _, answer = await get(relay, "/admin/deliveries", limit=1000)

    assert answer["detail"] == "limit: must be between 1 and 500"


# Query plans are SQLite's to show.
@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    ("path", "params", "step"),
    [
        ("/admin/deliveries", {"cursor": "WzEwMF0"}, "SEARCH deliveries USING INTEGER PRIMARY KEY (rowid<?)"),
        ("/admin/deliveries", {"state": "dead"}, "USING INDEX deliveries_state (state=?)"),
        ("/admin/deliveries", {"state": "dead,unmatched", "since": "2h"}, "MERGE (UNION ALL)"),
        # Alone, a merchant is found by walking ids from the newest, stopped by the page's LIMIT.
        ("/admin/deliveries", {"merchant_id": 1}, "SCAN deliveries"),
        ("/admin/deliveries", {"merchant_id": 1, "external_id": "A"}, "USING INDEX deliveries_external"),
        ("/admin/deliveries", {"inquiry_id": 5, "until": "1h"}, "USING INDEX deliveries_inquiry"),
        (
            "/admin/webhooks",
            {"status": "quarantined", "since": "1d"},
            "USING INDEX webhooks_status (status=?)",
        ),
        ("/admin/links", {"merchant_id": 1}, "SEARCH links USING PRIMARY KEY (merchant_id=?)"),
    ],
)
async def test_listings_use_their_index_and_never_sort(relay, path, params, step):
    store = relay.app[STORE]
    assert isinstance(store, SqliteStore)  # the plans are SQLite's
    reader = store.database.reader
    statements: list[str] = []
    await reader.set_trace_callback(statements.append)
    try:
        status, _ = await get(relay, path, **params)
    finally:
        await reader.set_trace_callback(None)  # type: ignore[arg-type]  # sqlite3 takes None: stop tracing

    assert status == 200
    [listing] = [statement for statement in statements if statement.lstrip().startswith("SELECT")]
    steps = await plan(store.database, listing)
    assert any(step in each for each in steps), steps
    assert [each for each in full_scans_and_sorts(steps) if each != "SCAN deliveries"] == []


# Deliveries: one


async def test_delivery_detail_has_the_rating_its_calls_and_its_webhook(relay):
    received = await relay.post(
        "/webhooks/bringg", data=fixture_bytes("bringg/rating_submitted.json"), headers=AUTH
    )
    accepted = await received.json()
    delivery_id = accepted["delivery_id"]
    called_at = ago(minutes=1)
    seed_attempt(
        relay,
        delivery_id,
        started_at=called_at,
        duration_ms=120,
        status_code=503,
        outcome="retry",
        error="Quivo answered 503",
    )

    status, detail = await get(relay, f"/admin/deliveries/{delivery_id}")

    assert status == 200
    delivery = detail["delivery"]
    assert (delivery["id"], delivery["state"]) == (delivery_id, "pending")
    assert delivery["unconfirmed"] is bool(delivery_row(relay, delivery_id)["unconfirmed"])
    assert delivery["rating"]["reasons"] == ["Driver friendlinesss", "Ease of use"]
    assert delivery["rating"]["external_id"] == "12443523"
    assert detail["attempts"] == [
        {
            "number": 1,
            "action": "send",
            "started_at": called_at,
            "duration_ms": 120,
            "status_code": 503,
            "outcome": "retry",
            "error": "Quivo answered 503",
        }
    ]
    assert detail["webhook"]["id"] == accepted["id"]
    assert detail["webhook"]["request_id"] == received.headers["X-Request-ID"]
    assert detail["webhook"]["status"] == "accepted"
    assert "body" not in detail["webhook"]


async def test_unknown_delivery_is_404_problem(relay):
    for method, path in [
        ("GET", "/admin/deliveries/999"),
        ("POST", "/admin/deliveries/999/replay"),
        ("POST", "/admin/deliveries/999/cancel"),
        ("GET", f"/admin/deliveries/{'9' * 30}"),
    ]:
        response = await relay.request(method, path, headers=ADMIN)
        assert (response.status, response.content_type) == (404, PROBLEM), path


# Replay and cancel


async def test_replay_sends_a_dead_delivery_back_to_pending_unconfirmed_and_wakes_the_worker(relay):
    dead = seed(relay, state="dead", attempts=20, last_error="attempts exhausted", created_at=ago(days=5))
    woken = relay.app[NEW_DELIVERY]
    woken.clear()

    status, detail = await post(relay, f"/admin/deliveries/{dead}/replay")

    assert status == 200
    assert detail["delivery"]["state"] == "pending"
    row = delivery_row(relay, dead)
    assert (row["state"], row["attempts"], row["unconfirmed"], row["last_error"]) == (
        "pending",
        0,
        1,
        "attempts exhausted",
    )
    assert row["replayed_at"] == row["next_attempt_at"] == row["updated_at"]
    assert row["replayed_at"] > datetime.now(UTC) - timedelta(seconds=10)
    assert woken.is_set()


async def test_replay_matches_again_when_quivo_said_the_inquiry_does_not_exist(relay):
    missing = seed(relay, state="dead", inquiry_id=404404, last_status=404, last_error="not found")
    refused = seed(relay, state="dead", inquiry_id=777, last_status=403, last_error="forbidden")

    for delivery_id in (missing, refused):
        assert (await post(relay, f"/admin/deliveries/{delivery_id}/replay"))[0] == 200

    assert delivery_row(relay, missing)["inquiry_id"] is None  # a corrected link now takes effect
    assert delivery_row(relay, refused)["inquiry_id"] == 777


async def test_replay_of_unmatched_is_allowed_and_of_delivered_is_409_naming_the_state(relay):
    unmatched = seed(relay, state="unmatched")
    delivered = seed(relay, state="delivered")

    replayed, _ = await post(relay, f"/admin/deliveries/{unmatched}/replay")
    response = await relay.post(f"/admin/deliveries/{delivered}/replay", headers=ADMIN)

    assert replayed == 200
    assert (response.status, response.content_type) == (409, PROBLEM)
    answer = await response.json()
    assert answer["state"] == "delivered"
    assert "delivered" in answer["detail"]
    assert delivery_row(relay, delivered)["state"] == "delivered"


async def test_replay_refuses_an_old_version_when_a_newer_one_exists(relay):
    old = seed(relay, state="dead", rating_id=50)
    newer = seed(relay, state="delivered", rating_id=50, version="2026-11-02T08:00:00.000000Z")

    status, answer = await post(relay, f"/admin/deliveries/{old}/replay")
    bulk_status, bulk = await post(relay, "/admin/deliveries/replay")

    assert status == 409
    assert str(newer) in answer["detail"]
    # The bulk replay says which it left, and why: an operator would otherwise think it was replayed.
    assert (bulk_status, bulk) == (
        200,
        {
            "replayed": 0,
            "skipped": 1,
            "skipped_deliveries": [
                {
                    "delivery_id": old,
                    "reason": f"delivery {newer} holds a newer version of this rating; "
                    "replaying would undo it",
                }
            ],
        },
    )
    assert delivery_row(relay, old)["state"] == "dead"


async def test_bulk_replay_takes_dead_and_unmatched_matching_the_filters(relay):
    dead = [seed(relay, state="dead") for _ in range(3)]
    unmatched = seed(relay, state="unmatched")
    others = [
        seed(relay, state="delivered"),
        seed(relay, state="pending"),
        seed(relay, state="dead", merchant_id=2),
    ]
    relay.app[NEW_DELIVERY].clear()

    status, answer = await post(relay, "/admin/deliveries/replay?merchant_id=1")

    assert (status, answer) == (200, {"replayed": 4, "skipped": 0, "skipped_deliveries": []})
    assert {delivery_row(relay, d)["state"] for d in [*dead, unmatched]} == {"pending"}
    assert [delivery_row(relay, d)["state"] for d in others] == ["delivered", "pending", "dead"]
    assert relay.app[NEW_DELIVERY].is_set()
    status, answer = await post(relay, "/admin/deliveries/replay", json={"state": ["dead"], "merchant_id": 2})
    assert (status, answer["replayed"]) == (200, 1)


async def test_bulk_replay_given_a_query_and_a_body_takes_what_matches_both(relay):
    first = seed(relay, state="dead", merchant_id=1)
    second = seed(relay, state="unmatched", merchant_id=2)
    seed(relay, state="dead", merchant_id=2)

    conflicting = await post(relay, "/admin/deliveries/replay?merchant_id=1", json={"merchant_id": 2})
    both = await post(relay, "/admin/deliveries/replay?merchant_id=2", json={"state": "unmatched"})
    bad_query = await post(relay, "/admin/deliveries/replay?merchant_id=-1", json={"merchant_id": 1})

    assert (conflicting[0], conflicting[1]["replayed"]) == (200, 0)
    assert (both[0], both[1]["replayed"]) == (200, 1)
    assert (bad_query[0], bad_query[1]["field"]) == (400, "merchant_id")
    assert [delivery_row(relay, d)["state"] for d in (first, second)] == ["dead", "pending"]


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize(
    ("how", "field"),
    [
        ({"params": {"state": "delivered"}}, "state"),
        ({"json": {"state": "dead,pending"}}, "state"),
        ({"json": {"since": "soon"}}, "since"),
        ({"json": {"limit": 5}}, "limit"),
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, "body"),
    ],
)
async def test_bulk_replay_refuses_other_states_and_bad_filters_with_400(relay, how, field):
    dead = seed(relay, state="dead")

    status, answer = await post(relay, "/admin/deliveries/replay", **how)

    assert (status, answer["field"]) == (400, field)
    assert delivery_row(relay, dead)["state"] == "dead"


async def test_bulk_replay_commits_in_batches(relay):
    dead = [seed(relay, state="dead") for _ in range(5)]
    heard: list[int] = []

    replayed = await replay_matching(
        relay.app[STORE], ReplayFilter(), now=datetime.now(UTC), batch_size=2, progress=heard.append
    )

    assert (replayed.replayed, replayed.skipped, heard) == (5, [], [2, 4, 5])
    assert {delivery_row(relay, d)["state"] for d in dead} == {"pending"}


async def test_cancel_kills_a_waiting_delivery_but_not_one_in_flight_or_done(relay):
    waiting = seed(relay, state="retrying", next_attempt_at=ago(seconds=-60))
    sending = seed(relay, state="sending")
    delivered = seed(relay, state="delivered")

    status, detail = await post(relay, f"/admin/deliveries/{waiting}/cancel")
    in_flight, in_flight_answer = await post(relay, f"/admin/deliveries/{sending}/cancel")
    done, done_answer = await post(relay, f"/admin/deliveries/{delivered}/cancel")

    assert status == 200
    assert (detail["delivery"]["state"], detail["delivery"]["last_error"]) == (
        "dead",
        "cancelled by operator",
    )
    assert delivery_row(relay, waiting)["next_attempt_at"] is None
    assert (in_flight, in_flight_answer["state"]) == (409, "sending")
    assert "in flight" in in_flight_answer["detail"]
    assert (done, done_answer["state"]) == (409, "delivered")
    assert [delivery_row(relay, d)["state"] for d in (sending, delivered)] == ["sending", "delivered"]


# Webhooks


async def webhook(relay, body: bytes) -> dict[str, Any]:
    response = await relay.post("/webhooks/bringg", data=body, headers=AUTH)
    return await response.json()


async def test_webhooks_are_listed_by_status_newest_first_and_page_by_cursor(relay):
    accepted = await webhook(relay, rating_webhook(1, "ORD-1"))
    quarantined = await webhook(relay, rating_webhook(2, "ORD-2", stars=9))
    ignored = await webhook(relay, b'{"webhook_type": "order_done", "merchant_id": 4}')

    status, answer = await get(relay, "/admin/webhooks", status="quarantined")
    first = await get(relay, "/admin/webhooks", limit=2)
    rest = await get(relay, "/admin/webhooks", limit=2, cursor=first[1]["next_cursor"])

    assert status == 200
    [item] = answer["items"]
    assert item["id"] == quarantined["id"]
    assert (item["status"], item["webhook_type"], item["merchant_id"], item["rating_id"]) == (
        "quarantined",
        "rating_submitted",
        1,
        2,
    )
    assert item["errors"] == ["rating.rating: stars must be 1..5, got 9"]
    assert item["bytes"] == len(rating_webhook(2, "ORD-2", stars=9))
    assert [i["id"] for i in first[1]["items"] + rest[1]["items"]] == [
        ignored["id"],
        quarantined["id"],
        accepted["id"],
    ]
    assert rest[1]["next_cursor"] is None
    assert await listed_ids(relay, "/admin/webhooks", status="accepted,ignored") == [
        ignored["id"],
        accepted["id"],
    ]
    assert await listed_ids(relay, "/admin/webhooks", since="1h") == [
        ignored["id"],
        quarantined["id"],
        accepted["id"],
    ]
    bad = await relay.get("/admin/webhooks", params={"status": "lost"}, headers=ADMIN)
    assert (bad.status, (await bad.json())["field"]) == (400, "status")


async def test_webhook_detail_has_the_raw_body_and_its_deliveries(relay):
    accepted = await webhook(relay, rating_webhook(1, "ORD-1"))
    binary = await webhook(relay, b"\xff\xfe not utf-8")

    status, detail = await get(relay, f"/admin/webhooks/{accepted['id']}")
    _, raw = await get(relay, f"/admin/webhooks/{binary['id']}")

    assert status == 200
    assert (detail["body"], detail["body_encoding"]) == (rating_webhook(1, "ORD-1").decode(), "utf-8")
    assert detail["delivery_ids"] == [accepted["delivery_id"]]
    assert (raw["body"], raw["body_encoding"], raw["delivery_ids"]) == ("//4gbm90IHV0Zi04", "base64", [])
    missing = await relay.get("/admin/webhooks/404", headers=ADMIN)
    assert (missing.status, missing.content_type) == (404, PROBLEM)


async def test_reprocess_of_a_body_still_unusable_stays_quarantined_with_its_errors(relay):
    quarantined = seed_quarantined(
        relay, rating_webhook(2, "ORD-2", stars=9), errors=["an old reason"], received_at=ago(hours=1)
    )

    status, answer = await post(relay, f"/admin/webhooks/{quarantined}/reprocess")

    assert (status, answer) == (
        200,
        {"status": "quarantined", "errors": ["rating.rating: stars must be 1..5, got 9"]},
    )
    stored = webhook_row(relay, quarantined)
    assert (stored["status"], stored["errors"]) == ("quarantined", answer["errors"])
    assert every_delivery(relay) == []


async def test_reprocess_of_a_body_now_usable_accepts_it_with_a_pending_delivery(relay):
    # As if an older relay had refused the fixture: the row is quarantined, the body is valid today.
    webhook_id = seed_quarantined(
        relay,
        fixture_bytes("bringg/rating_submitted.json"),
        errors=["refused by an older relay"],
        received_at=ago(days=10),
        request_id="old-request",
    )
    relay.app[NEW_DELIVERY].clear()

    status, answer = await post(relay, f"/admin/webhooks/{webhook_id}/reprocess")

    assert status == 200
    assert answer["status"] == "accepted"
    delivery = delivery_row(relay, answer["delivery_id"])
    assert (delivery["state"], delivery["webhook_id"], delivery["rating_id"]) == ("pending", webhook_id, 3452)
    assert delivery["created_at"] > datetime.now(UTC) - timedelta(seconds=10)
    assert delivery["unconfirmed"] == 1  # a rating from 2022: delivered and pruned long ago, maybe
    stored = webhook_row(relay, webhook_id)
    assert (stored["status"], stored["errors"], stored["merchant_id"]) == ("accepted", [], 1)
    assert (stored["request_id"], stored["body"]) == (
        "old-request",
        fixture_bytes("bringg/rating_submitted.json"),
    )
    assert relay.app[NEW_DELIVERY].is_set()
    again = await relay.post(f"/admin/webhooks/{webhook_id}/reprocess", headers=ADMIN)
    assert (again.status, (await again.json())["webhook_status"]) == (409, "accepted")


async def test_reprocess_of_a_version_already_delivered_from_elsewhere_is_a_duplicate(relay):
    first = await webhook(relay, fixture_bytes("bringg/rating_submitted.json"))
    again = seed_quarantined(
        relay, fixture_bytes("bringg/rating_submitted.json"), errors=[], received_at=ago(hours=1)
    )

    status, answer = await post(relay, f"/admin/webhooks/{again}/reprocess")

    assert (status, answer) == (200, {"status": "duplicate", "delivery_id": first["delivery_id"]})
    assert len(every_delivery(relay)) == 1
    listed = through_store(relay, lambda store: store.list_webhooks(WebhookFilter(), limit=MAX_LIMIT))
    assert [(hook.id, hook.status) for hook in listed] == [(again, "duplicate"), (first["id"], "accepted")]


# Links


async def test_a_link_saved_with_spaces_around_its_order_id_is_deleted_by_the_same_url(relay):
    saved = await relay.put("/admin/links/3/%20ORD-9%20", json={"inquiry_id": 5}, headers=ADMIN)
    deleted = await relay.delete("/admin/links/3/%20ORD-9%20", headers=ADMIN)

    assert (saved.status, deleted.status) == (200, 204)
    assert links(relay) == []


async def test_put_link_wakes_the_unmatched_delivery_and_delete_removes_it(relay):
    unmatched = seed(relay, state="unmatched", merchant_id=3, external_id="ORD 7/A")
    relay.app[NEW_DELIVERY].clear()

    response = await relay.put("/admin/links/3/ORD%207%2FA", json={"inquiry_id": 901}, headers=ADMIN)

    assert response.status == 200
    assert await response.json() == {
        "merchant_id": 3,
        "external_id": "ORD 7/A",
        "inquiry_id": 901,
        "woken": [unmatched],
    }
    row = delivery_row(relay, unmatched)
    assert (row["state"], row["next_attempt_at"] is not None) == ("pending", True)
    assert relay.app[NEW_DELIVERY].is_set()
    _, listed = await get(relay, "/admin/links", merchant_id=3)
    assert listed["items"] == [{"merchant_id": 3, "external_id": "ORD 7/A", "inquiry_id": 901}]
    deleted = await relay.delete("/admin/links/3/ORD%207%2FA", headers=ADMIN)
    again = await relay.delete("/admin/links/3/ORD%207%2FA", headers=ADMIN)
    assert (deleted.status, again.status, again.content_type) == (204, 404, PROBLEM)
    assert links(relay) == []


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inquiry_id": "901"}, "inquiry_id"),
        ({"inquiry_id": 0}, "inquiry_id"),
        ({"inquiry_id": True}, "inquiry_id"),
        ({}, "inquiry_id"),
        ({"inquiry_id": 1, "note": "x"}, "note"),
        ([901], "body"),
    ],
)
async def test_bad_link_body_is_400_naming_the_field(relay, body, field):
    response = await relay.put("/admin/links/3/ORD-7", json=body, headers=ADMIN)

    assert (response.status, response.content_type) == (400, PROBLEM)
    assert (await response.json())["field"] == field
    assert links(relay) == []


async def test_links_in_bulk_as_json_are_all_saved_or_none(relay):
    unmatched = seed(relay, state="unmatched", merchant_id=1, external_id="A")
    good = [
        {"merchant_id": 1, "external_id": "A", "inquiry_id": 11},
        {"merchant_id": 2, "external_id": "B", "inquiry_id": 12},
    ]
    bad = [
        *good,
        {"merchant_id": 3, "external_id": " ", "inquiry_id": 13},
        {"merchant_id": 4, "external_id": "D"},
    ]

    refused, problem = await post(relay, "/admin/links", json=bad)
    assert links(relay) == []
    status, answer = await post(relay, "/admin/links", json=good)

    assert (refused, problem["field"]) == (400, "[2].external_id")
    assert [error["field"] for error in problem["errors"]] == ["[2].external_id", "[3].inquiry_id"]
    assert (status, answer) == (200, {"saved": 2, "woken": 1, "problems": []})
    assert delivery_row(relay, unmatched)["state"] == "pending"


async def test_links_in_bulk_as_csv_save_the_good_rows_and_report_the_bad_by_line(relay):
    csv = "merchant_id,external_id,inquiry_id\n1,A,11\n1,B,not-a-number\n2,C,13\n"

    status, answer = await post(relay, "/admin/links", data=csv, headers={"Content-Type": "text/csv"})

    assert status == 200
    assert (answer["saved"], answer["woken"]) == (2, 0)
    [problem] = answer["problems"]
    assert problem["line"] == 3 and "inquiry_id" in problem["reason"]
    assert [(merchant_id, external_id) for merchant_id, external_id, _ in links(relay)] == [
        (1, "A"),
        (2, "C"),
    ]


async def test_links_page_by_cursor_in_key_order(relay):
    links = [
        {"merchant_id": m, "external_id": f"O-{n}", "inquiry_id": 100 + n} for m in (1, 2) for n in range(4)
    ]
    await post(relay, "/admin/links", json=links)

    walked: list[tuple[int, str]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        _, page = await get(relay, "/admin/links", **params)
        walked += [(link["merchant_id"], link["external_id"]) for link in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    assert walked == [(link["merchant_id"], link["external_id"]) for link in links]
    bad = await relay.get("/admin/links", params={"cursor": "WzFd"}, headers=ADMIN)  # a delivery's cursor
    assert (bad.status, (await bad.json())["field"]) == (400, "cursor")


async def test_a_links_cursor_holding_a_nul_pages_on_from_just_past_it(relay):
    # No saved order id holds a NUL (PostgreSQL's text cannot), but a cursor may: the page still follows it.
    saved = [
        {"merchant_id": 1, "external_id": external_id, "inquiry_id": 7} for external_id in ("A", "AB", "B")
    ]
    await post(relay, "/admin/links", json=[*saved, {"merchant_id": 2, "external_id": "A", "inquiry_id": 8}])

    _, page = await get(relay, "/admin/links", cursor=crafted_cursor('[1, "A\\u0000Z"]'), merchant_id=1)
    _, rest = await get(relay, "/admin/links", cursor=crafted_cursor('[1, "\\u0000"]'))

    assert [link["external_id"] for link in page["items"]] == ["AB", "B"]
    assert [(link["merchant_id"], link["external_id"]) for link in rest["items"]] == [
        (1, "A"),
        (1, "AB"),
        (1, "B"),
        (2, "A"),
    ]


# Stats


async def test_stats_count_what_is_there(relay):
    seed(relay, state="pending", next_attempt_at=ago(minutes=10))
    seed(relay, state="retrying", next_attempt_at=ago(minutes=2))
    seed(relay, state="retrying", next_attempt_at=ago(minutes=-5))  # not due yet
    seed(relay, state="delivered", updated_at=ago(minutes=5))
    seed(relay, state="delivered", updated_at=ago(hours=5))
    seed(relay, state="delivered", updated_at=ago(days=3))
    seed(relay, state="dead", updated_at=ago(hours=2))
    await webhook(relay, rating_webhook(9, "X", stars=9))

    status, stats = await get(relay, "/admin/stats")

    assert status == 200
    assert stats["deliveries"] == {
        **dict.fromkeys(DELIVERY_STATES, 0),
        "pending": 1,
        "retrying": 2,
        "delivered": 3,
        "dead": 1,
    }
    assert stats["webhooks"] == {
        "accepted": 7,
        "duplicate": 0,
        "ignored": 0,
        "quarantined": 1,
        "dismissed": 0,
    }
    assert 600 <= stats["worker_lag_s"] < 660
    assert stats["delivered"] == {"last_hour": 1, "last_day": 2}
    assert stats["dead"] == {"last_hour": 0, "last_day": 1}


async def test_stats_of_an_empty_relay_have_no_backlog(relay):
    _, stats = await get(relay, "/admin/stats")

    assert stats["backlog_age_s"] is None
    assert stats["worker_lag_s"] is None
    assert set(stats["deliveries"].values()) == {0}


# Runbook 5.3: a body quarantined by one release is accepted after a release that judges it otherwise


async def test_a_body_quarantined_by_an_older_rule_is_accepted_on_reprocess_and_delivered_once(
    aiohttp_client, aiohttp_server, make_settings, monkeypatch
):
    state = SimState(rng=random.Random(5))
    quivo = Quivo(state, str((await aiohttp_server(create_sim_app(state))).make_url("")).rstrip("/"))
    settings = make_settings(relay_admin_token=TOKEN, **forwarding_settings(quivo))
    relay = await aiohttp_client(create_app(settings, run_worker=True))

    def older_release(body: bytes) -> Judgement:
        # As if the relay of last month had refused ratings with a comment: the rule 5.3 waits out.
        return judge(body)._replace(status="quarantined", errors=("rating.comment: not allowed",))

    monkeypatch.setattr(webhook_routes, "judge", older_release)
    refused = await relay.post("/webhooks/bringg", data=rating_webhook(61, "INQ-610"), headers=AUTH)
    quarantined = await refused.json()
    monkeypatch.undo()  # the new release judges the same bytes otherwise
    status, reprocessed = await post(relay, f"/admin/webhooks/{quarantined['id']}/reprocess")
    delivered = asdict(await wait_for_delivery(relay.app[STORE], reprocessed["delivery_id"]))
    again = await relay.post(f"/admin/webhooks/{quarantined['id']}/reprocess", headers=ADMIN)

    assert (refused.status, quarantined["status"]) == (202, "quarantined")
    assert (status, reprocessed["status"]) == (200, "accepted")
    assert (delivered["state"], delivered["inquiry_id"]) == ("delivered", 610)
    assert again.status == 409
    [rating] = quivo.state.ratings
    assert (rating.inquiry_id, rating.rating) == (610, 4.0)
    assert rating.message is not None and rating.message.endswith("[bringg:1:61]")


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize(
    ("external_id", "detail"),
    [
        ("x" * 7000, "external_id: has 7000 characters, an order id has at most 200"),
        ("ORD%001", "external_id: holds control characters"),
        ("ORD%1B%5B2J", "external_id: holds control characters"),
        ("%20%20", "external_id: is empty"),
    ],
)
async def test_an_order_id_too_long_or_with_control_characters_is_400_naming_it(relay, external_id, detail):
    saved = await relay.put(f"/admin/links/3/{external_id}", json={"inquiry_id": 5}, headers=ADMIN)
    deleted = await relay.delete(f"/admin/links/3/{external_id}", headers=ADMIN)
    listed = await relay.post(
        "/admin/links", json=[{"merchant_id": 3, "external_id": "x" * 7000, "inquiry_id": 5}], headers=ADMIN
    )

    for response in (saved, deleted):
        assert (response.status, response.content_type) == (400, PROBLEM)
        answer = await response.json()
        assert (answer["field"], answer["detail"]) == ("external_id", detail), answer
    assert listed.status == 400
    assert (await listed.json())["field"] == "[0].external_id"
    assert links(relay) == []


@REFUSED_BEFORE_THE_STORE
async def test_a_404_does_not_repeat_an_unbounded_id(relay):
    for path in [
        f"/admin/deliveries/{'9' * 5000}",
        f"/admin/links/{'9' * 5000}/ORD-1",
        f"/admin/links/3/{'x' * 200}",
    ]:
        response = (
            await relay.delete(path, headers=ADMIN)
            if "links" in path
            else await relay.get(path, headers=ADMIN)
        )

        assert response.status == 404, path
        assert len(await response.text()) < 600, path
