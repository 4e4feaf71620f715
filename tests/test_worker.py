"""Forwarding through HTTP: a relay with its worker against the Quivo stand-in, one outcome per test."""

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from relay import claim_ahead, pacing, tenant_worker
from relay import worker as worker_module
from relay.app import create_app
from relay.keys import SETTINGS, STORE, WORKER
from relay.linkfile import Link
from relay.ops.health import newest_beat
from relay.sim.app import create_sim_app
from relay.sim.state import SimState
from relay.store.api import Store
from relay.store.filters import DeliveryFilter
from relay.store.postgres.store import PostgresStore
from relay.store.records import TurnAsk
from relay.store.sqlite.store import SqliteStore
from tests.chaos.harness import Stage, delivered_tags, http_call, stage, wait_for
from tests.conftest import AUTH, BACKENDS, fixture_bytes
from tests.forwarding import (
    Quivo,
    all_deliveries,
    delivery_of,
    execute,
    forwarding_settings,
    on_store,
    rating_webhook,
    wait_for_delivery,
)
from tests.processes import run_relay

pytestmark = pytest.mark.backends(*BACKENDS)


@pytest.fixture
async def quivo(aiohttp_server) -> Quivo:
    state = SimState(rng=random.Random(7))
    server = await aiohttp_server(create_sim_app(state))
    return Quivo(state, str(server.make_url("")).rstrip("/"))


@pytest.fixture
def start_relay(aiohttp_client, make_settings, quivo):
    async def start(**overrides):
        settings = make_settings(**forwarding_settings(quivo, **overrides))
        return await aiohttp_client(create_app(settings, run_worker=True))

    return start


async def post(relay, body: bytes) -> dict[str, Any]:
    response = await relay.post("/webhooks/bringg", data=body, headers=AUTH)
    assert response.status in (200, 202)
    return await response.json()


def db(relay) -> Store:
    """The relay's own store: what it committed, read as an operator would."""
    store: Store = relay.app[STORE]
    return store


async def actions(relay, delivery_id: int) -> list[str]:
    return [call.action for call in (await delivery_of(db(relay), delivery_id)).attempts]


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str, within_s: float = 15) -> None:
    """Wait for `condition` (a check, or one that awaits), polling; TimeoutError naming `what` past
    `within_s`."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not await _holds(condition):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what}: not within {within_s}s")
        await asyncio.sleep(0.02)


async def _holds(condition: Callable[[], Awaitable[bool] | bool]) -> bool:
    held = condition()
    return held if isinstance(held, bool) else await held


async def paused_with_nothing_out(relay) -> bool:
    sending = await db(relay).list_deliveries(DeliveryFilter(state=("sending",)))
    return relay.app[WORKER].paused_reason is not None and not sending


async def has_heartbeat(relay) -> bool:
    return await newest_beat(relay.app[STORE]) is not None


async def test_rating_is_posted_once_with_its_value_message_and_tag(start_relay, quivo):
    relay = await start_relay()

    accepted = await post(relay, rating_webhook(31, "INQ-501", stars=4))
    row = await wait_for_delivery(db(relay), accepted["delivery_id"])

    assert (row.state, row.inquiry_id, row.attempts, row.current_rating) == (
        "delivered",
        501,
        1,
        4.0,
    )
    [received] = quivo.state.ratings
    assert (received.inquiry_id, received.rating) == (501, 4.0)
    assert received.message is not None
    assert "comment of rating 31" in received.message and "Friendly driver" in received.message
    assert received.message.endswith("\n[bringg:1:31]")
    [attempt] = (await delivery_of(db(relay), row.id)).attempts
    assert (attempt.action, attempt.status_code, attempt.number) == ("send", 200, 1)


async def test_stars_map_linearly_onto_the_configured_quivo_scale(start_relay, quivo):
    relay = await start_relay(quivo_rating_min=0, quivo_rating_max=10)

    for rating_id, stars in ((1, 1), (2, 3), (3, 5)):
        accepted = await post(relay, rating_webhook(rating_id, f"INQ-{rating_id}", stars=stars))
        await wait_for_delivery(db(relay), accepted["delivery_id"])

    assert sorted(record.rating for record in quivo.state.ratings) == [0.0, 5.0, 10.0]


async def test_expired_session_token_mid_run_means_one_new_login(start_relay, quivo):
    relay = await start_relay()
    first = await post(relay, rating_webhook(1, "INQ-1"))
    await wait_for_delivery(db(relay), first["delivery_id"])

    quivo.state.expire_tokens()
    second = await post(relay, rating_webhook(2, "INQ-2"))
    row = await wait_for_delivery(db(relay), second["delivery_id"])

    assert row.state == "delivered"
    assert quivo.state.logins == 2
    assert quivo.state.requests["post_rating", 401] == 1
    assert len(quivo.state.ratings) == 2


async def test_answer_dropped_after_commit_is_reconciled_not_sent_again(start_relay, quivo):
    quivo.state.drop_after_commit_rate = 1.0
    relay = await start_relay()

    accepted = await post(relay, rating_webhook(7, "INQ-70"))
    # The read-back (a reconcile) follows only an unconfirmed send: the actions below show it was one.
    row = await wait_for_delivery(db(relay), accepted["delivery_id"])

    assert row.state == "delivered"
    assert len(quivo.state.ratings) == 1
    assert await actions(relay, row.id) == ["send", "reconcile"]


async def test_unconfirmed_send_that_did_not_land_is_sent_after_checking(
    aiohttp_client, make_settings, start_relay, quivo
):
    intake = await aiohttp_client(create_app(make_settings(**forwarding_settings(quivo)), run_worker=False))
    accepted = await post(intake, rating_webhook(8, "INQ-80"))
    # As if a worker had died mid-send before its rating reached Quivo: claimed, its lease run out.
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    [claimed] = await db(intake).claim_due("default", now=datetime.now(UTC), lease_until=long_ago, limit=1)
    assert claimed.id == accepted["delivery_id"]

    relay = await start_relay()
    row = await wait_for_delivery(db(relay), accepted["delivery_id"])

    assert row.state == "delivered"
    assert len(quivo.state.ratings) == 1
    assert await actions(relay, row.id) == ["reconcile", "send"]


async def test_a_send_quivo_commits_late_is_read_back_after_the_settle_time_not_sent_again(
    start_relay, quivo
):
    # As behind a gateway that gives up at once while Quivo commits the rating a moment later.
    quivo.state.late_commit_s = 0.5
    relay = await start_relay(relay_unsure_settle_s=1.5)

    accepted = await post(relay, rating_webhook(16, "INQ-160"))
    row = await wait_for_delivery(db(relay), accepted["delivery_id"])

    assert (row.state, row.unconfirmed) == ("delivered", False)
    assert len(quivo.state.ratings) == 1
    calls = (await delivery_of(db(relay), row.id)).attempts
    assert [call.action for call in calls] == ["send", "reconcile"]
    send_ended = calls[0].started_at + timedelta(milliseconds=calls[0].duration_ms)
    # Rounding of duration_ms aside, the read-back waited the whole settle time after the send ended.
    assert (calls[1].started_at - send_ended).total_seconds() >= 1.49


def test_the_worker_refuses_a_quivo_timeout_longer_than_the_settle_time(tmp_path: Path):
    quivo = {"QUIVO_API_KEY": "k", "QUIVO_USERNAME": "u", "QUIVO_PASSWORD": "p"}

    refused = run_relay("worker", env={**quivo, "QUIVO_TIMEOUT_S": "61"}, cwd=tmp_path)

    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "relay: configuration error: QUIVO_TIMEOUT_S: must not exceed RELAY_UNSURE_SETTLE_S "
        "(how late Quivo may commit a send)"
    ]


async def test_retry_after_is_honoured(start_relay, quivo):
    quivo.state.rate_limit_rate = 1.0
    quivo.state.retry_after_s = 1
    relay = await start_relay(relay_retry_max_s=5)

    accepted = await post(relay, rating_webhook(9, "INQ-90"))
    await wait_for_delivery(db(relay), accepted["delivery_id"], states=frozenset({"retrying"}))
    quivo.state.rate_limit_rate = 0.0
    row = await wait_for_delivery(db(relay), accepted["delivery_id"])

    assert row.state == "delivered"
    sends = (await delivery_of(db(relay), row.id)).attempts
    assert [send.status_code for send in sends] == [429, 200]
    assert (sends[1].started_at - sends[0].started_at).total_seconds() >= 1.0


async def test_server_errors_and_outages_are_retried_until_delivered(start_relay, quivo):
    quivo.state.error_rate = 1.0
    relay = await start_relay()

    accepted = await post(relay, rating_webhook(10, "INQ-100"))
    await wait_for_delivery(db(relay), accepted["delivery_id"], states=frozenset({"retrying"}))
    quivo.state.error_rate = 0.0
    quivo.state.outage = True
    await asyncio.sleep(0.3)
    quivo.state.outage = False
    row = await wait_for_delivery(db(relay), accepted["delivery_id"])

    assert row.state == "delivered"
    assert row.attempts >= 2
    assert len(quivo.state.ratings) == 1


async def test_missing_inquiry_is_dead_with_quivos_answer_kept(start_relay, quivo):
    quivo.state.missing.add(404404)
    relay = await start_relay()

    accepted = await post(relay, rating_webhook(11, "INQ-404404"))
    row = await wait_for_delivery(db(relay), accepted["delivery_id"])

    assert (row.state, row.last_status, row.attempts) == ("dead", 404, 1)
    assert row.last_error is not None and "not found" in row.last_error


async def test_attempts_run_out_and_the_delivery_dies_with_its_last_error(start_relay, quivo):
    quivo.state.error_rate = 1.0
    relay = await start_relay(relay_max_attempts=2)

    accepted = await post(relay, rating_webhook(12, "INQ-120"))
    row = await wait_for_delivery(db(relay), accepted["delivery_id"], states=frozenset({"dead"}))

    assert row.attempts == 2
    assert row.last_error is not None and "RELAY_MAX_ATTEMPTS" in row.last_error
    assert quivo.state.ratings == []


async def test_refused_credentials_pause_deliveries_without_spending_attempts(start_relay, quivo):
    quivo.state.reject_credentials = True
    relay = await start_relay()

    accepted = [await post(relay, rating_webhook(n, f"INQ-{n}")) for n in (21, 22)]
    await until(lambda: paused_with_nothing_out(relay), "the worker paused, its claims put back")
    ready = await relay.get("/readyz")
    rows = await all_deliveries(db(relay))

    assert ready.status == 503
    assert (await ready.json())["problems"] == ["deliveries paused: Quivo refused the credentials, 401"]
    assert {(row.state, row.attempts) for row in rows} == {("pending", 0)}
    quivo.state.reject_credentials = False
    for answer in accepted:
        row = await wait_for_delivery(db(relay), answer["delivery_id"])
        assert (row.state, row.attempts) == ("delivered", 1)
    ready, _ = await poll(relay, "/readyz", lambda status, _: status == 200)
    assert ready == 200


async def test_unmatched_rating_is_delivered_once_its_link_is_saved(start_relay, quivo):
    relay = await start_relay()

    accepted = await post(relay, fixture_bytes("bringg/rating_submitted.json"))
    row = await wait_for_delivery(db(relay), accepted["delivery_id"])
    assert row.state == "unmatched"
    link = Link(merchant_id=1, external_id="12443523", inquiry_id=777)
    await relay.app[STORE].save_links([link], now=datetime.now(UTC))
    row = await wait_for_delivery(db(relay), accepted["delivery_id"], states=frozenset({"delivered"}))

    assert row.inquiry_id == 777
    assert [(r.inquiry_id, r.message and r.message.splitlines()[-1]) for r in quivo.state.ratings] == [
        (777, "[bringg:1:3452]")
    ]


async def test_update_supersedes_an_undelivered_older_version(start_relay, quivo):
    quivo.state.outage = True
    relay = await start_relay()

    original = await post(relay, rating_webhook(40, "INQ-400", stars=1))
    await wait_for_delivery(db(relay), original["delivery_id"], states=frozenset({"retrying"}))
    update = await post(relay, rating_webhook(40, "INQ-400", stars=5, updated_at="2026-11-21T10:00:00Z"))
    quivo.state.outage = False
    newer = await wait_for_delivery(db(relay), update["delivery_id"])
    older = (await delivery_of(db(relay), original["delivery_id"])).delivery

    assert (older.state, newer.state) == ("superseded", "delivered")
    [received] = quivo.state.ratings
    assert received.rating == 5.0
    assert received.message is not None and received.message.endswith("[bringg:1:40:20261121T100000.000000Z]")


async def test_one_inquiry_never_has_two_rating_posts_in_flight(start_relay, quivo):
    quivo.state.latency_ms = 50
    relay = await start_relay(quivo_max_concurrency=8)

    answers = [await post(relay, rating_webhook(n, "INQ-9000")) for n in range(50, 56)]
    answers += [await post(relay, rating_webhook(n, f"INQ-{n}")) for n in range(60, 64)]
    for answer in answers:
        await wait_for_delivery(db(relay), answer["delivery_id"])

    assert len(quivo.state.ratings) == 10
    assert quivo.state.most_rating_posts_at_once_per_inquiry == 1


async def test_deliveries_claimed_again_are_left_to_their_new_holder_unsent_and_unrecorded(
    start_relay, quivo
):
    # One call takes a second: the second rating for the inquiry waits its turn behind the first's.
    quivo.state.latency_ms = 1000
    relay = await start_relay()

    with structlog.testing.capture_logs() as logs:
        first = (await post(relay, rating_webhook(70, "INQ-7000")))["delivery_id"]
        await wait_for_delivery(db(relay), first, states=frozenset({"sending"}))
        second = (await post(relay, rating_webhook(71, "INQ-7000")))["delivery_id"]
        await wait_for_delivery(db(relay), second, states=frozenset({"sending"}))
        # As another worker does once leases have run out (here the clock is moved, not waited for).
        later = datetime.now(UTC) + timedelta(hours=1)
        taken = await db(relay).claim_due(
            "default", now=later, lease_until=later + timedelta(hours=1), limit=5
        )
        assert sorted(claimed.id for claimed in taken) == [first, second]

        async def both_given_up() -> bool:
            return sum(event["event"] == "delivery.lease_lost" for event in logs) == 2

        await until(both_given_up, "the worker gives both deliveries up", within_s=30)

    # The first's call was out already; the second, still waiting, never went.
    assert len(quivo.state.ratings) == 1
    for delivery_id in (first, second):
        left = await delivery_of(db(relay), delivery_id)
        assert (left.delivery.state, left.delivery.next_attempt_at, left.attempts) == (
            "sending",
            later + timedelta(hours=1),
            [],
        )


async def test_calls_in_flight_stay_within_the_concurrency_limit(start_relay, quivo):
    quivo.state.latency_ms = 60
    relay = await start_relay(quivo_max_concurrency=3)

    answers = [await post(relay, rating_webhook(n, f"INQ-{n}")) for n in range(100, 112)]
    for answer in answers:
        await wait_for_delivery(db(relay), answer["delivery_id"])

    assert len(quivo.state.ratings) == 12
    assert quivo.state.most_rating_posts_at_once == 3


async def test_sends_are_spaced_to_the_rate_limit(start_relay, quivo):
    relay = await start_relay(quivo_max_rps=10, quivo_max_concurrency=8)

    answers = [await post(relay, rating_webhook(n, f"INQ-{n}")) for n in range(70, 76)]
    for answer in answers:
        await wait_for_delivery(db(relay), answer["delivery_id"])

    starts = sorted(
        [
            call.started_at
            for answer in answers
            for call in (await delivery_of(db(relay), answer["delivery_id"])).attempts
        ]
    )
    assert len(starts) == 6
    # The k-th send goes k/10 s after the first or later. A send a busy event loop started late brings the
    # next one closer to it, so single gaps may shrink: the schedule holds, less that lateness (half a slot
    # at most on a loaded machine). Unpaced, all six would start within a few milliseconds of each other.
    since_first = [(start - starts[0]).total_seconds() for start in starts]
    assert all(since >= n / 10 - 0.05 for n, since in enumerate(since_first)), since_first


async def test_a_new_rating_wakes_the_worker_without_waiting_for_the_sweep(start_relay, quivo):
    relay = await start_relay(relay_sweep_interval_s=120)
    # The worker went round its loop once and sleeps: the next sweep is 120 s away.
    await until(lambda: has_heartbeat(relay), "the worker's first round")

    accepted = await post(relay, rating_webhook(80, "INQ-800"))
    row = await wait_for_delivery(db(relay), accepted["delivery_id"], within_s=10)

    assert row.state == "delivered"


async def test_delivery_older_than_max_age_dies_instead_of_retrying_forever(start_relay, quivo):
    quivo.state.error_rate = 1.0
    relay = await start_relay(relay_max_age=0.5, relay_max_attempts=1000)

    accepted = await post(relay, rating_webhook(13, "INQ-130"))
    row = await wait_for_delivery(db(relay), accepted["delivery_id"], states=frozenset({"dead"}))

    assert row.last_error is not None and "RELAY_MAX_AGE" in row.last_error
    assert row.attempts >= 1


async def test_unmatched_rating_past_its_ttl_is_dead(start_relay, quivo):
    relay = await start_relay(relay_unmatched_ttl=0)

    accepted = await post(relay, rating_webhook(14, "ORDER-WITHOUT-LINK"))
    row = await wait_for_delivery(db(relay), accepted["delivery_id"])

    assert row.state == "dead"
    assert row.last_error is not None and "RELAY_UNMATCHED_TTL" in row.last_error
    assert quivo.state.requests == {}


DELIVERED = 'relay_deliveries{state="delivered"}'


async def poll(relay, path: str, done: Callable[[int, str], bool], within_s: float = 15) -> tuple[int, str]:
    """GET `path` until `done(status, body)` or the deadline: /readyz and store gauges are up to 1 s old."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        response = await relay.get(path)
        answer = response.status, await response.text()
        if done(*answer) or asyncio.get_running_loop().time() > deadline:
            return answer
        await asyncio.sleep(0.05)


def metric(text: str, name: str) -> float:
    """The value of one sample line of Prometheus text, e.g. 'relay_deliveries{state="delivered"}'."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    raise AssertionError(f"{name} not exposed")


async def test_metrics_move_as_work_happens(start_relay, quivo):
    relay = await start_relay()
    before = await (await relay.get("/metrics")).text()

    accepted = await post(relay, rating_webhook(90, "INQ-900"))
    await post(relay, rating_webhook(90, "INQ-900"))  # duplicate
    await wait_for_delivery(db(relay), accepted["delivery_id"])
    _, after = await poll(relay, "/metrics", lambda _, text: metric(text, DELIVERED) == 1)

    assert metric(before, 'relay_webhooks_received_total{outcome="accepted",tenant="default"}') == 0
    assert metric(after, 'relay_webhooks_received_total{outcome="accepted",tenant="default"}') == 1
    assert metric(after, 'relay_webhooks_received_total{outcome="duplicate",tenant="default"}') == 1
    assert metric(after, 'relay_delivery_outcomes_total{outcome="delivered",tenant="default"}') == 1
    assert (
        metric(after, 'relay_quivo_requests_total{action="post_rating",status="200",tenant="default"}') == 1
    )
    assert metric(after, 'relay_quivo_requests_total{action="login",status="200",tenant="default"}') == 1
    assert metric(after, DELIVERED) == 1
    assert metric(after, 'relay_deliveries{state="pending"}') == 0
    assert metric(after, "relay_delivery_latency_seconds_count") == 1


async def test_a_reconcile_read_that_times_out_leaves_the_send_unsure_and_never_resends_blindly(
    start_relay, quivo
):
    quivo.state.drop_after_commit_rate = 1.0  # the send lands, its answer is lost
    relay = await start_relay(quivo_timeout_s=0.5, relay_unsure_settle_s=1.0)
    accepted = await post(relay, rating_webhook(19, "INQ-190"))
    async with asyncio.timeout(15):
        while not quivo.state.ratings:  # noqa: ASYNC110  # the send landed (its answer dropped)
            await asyncio.sleep(0.02)
    # Within the settle time, before the read-back is due: Quivo now answers only after the relay stopped
    # waiting.
    quivo.state.drop_after_commit_rate, quivo.state.latency_ms = 0.0, 1500

    async with asyncio.timeout(15):
        while "reconcile" not in await actions(relay, accepted["delivery_id"]):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    # The reconcile and the outcome it led to are one commit: this is what the timed-out read decided.
    after_read = (await delivery_of(db(relay), accepted["delivery_id"])).delivery
    sends_then = (await actions(relay, accepted["delivery_id"])).count("send")
    quivo.state.latency_ms = 0
    row = await wait_for_delivery(db(relay), accepted["delivery_id"])

    assert (after_read.state, after_read.unconfirmed) == ("retrying", True)
    assert sends_then == 1
    assert row.state == "delivered"
    assert len(quivo.state.ratings) == 1
    done = await actions(relay, row.id)
    assert done[0] == "send" and set(done[1:]) == {"reconcile"}


async def test_no_delivery_waits_longer_than_relay_retry_max_s(start_relay, quivo):
    quivo.state.error_rate = 1.0
    relay = await start_relay(relay_retry_base_s=0.2, relay_retry_max_s=0.2, relay_max_attempts=7)

    with structlog.testing.capture_logs() as logs:
        accepted = await post(relay, rating_webhook(20, "INQ-200"))
        await wait_for_delivery(db(relay), accepted["delivery_id"], states=frozenset({"dead"}))

    calls = {
        call.number: call.started_at + timedelta(milliseconds=call.duration_ms)
        for call in (await delivery_of(db(relay), accepted["delivery_id"])).attempts
    }
    waits = [
        (datetime.fromisoformat(event["next_attempt_at"]) - calls[event["attempt"]]).total_seconds()
        for event in logs
        if event["event"] == "delivery.retry_scheduled"
    ]
    # Uncapped, the waits would grow to 0.2 x 2^5 = 6.4 s: six waits all within 0.2 s would be a fluke.
    assert len(waits) >= 6
    assert max(waits) <= 0.2 + 0.05, waits


async def test_a_retry_after_beyond_relay_retry_max_s_is_cut_to_it(start_relay, quivo):
    quivo.state.rate_limit_rate, quivo.state.retry_after_s = 1.0, 3600
    relay = await start_relay(relay_retry_max_s=0.5)

    accepted = await post(relay, rating_webhook(21, "INQ-210"))
    row = await wait_for_delivery(db(relay), accepted["delivery_id"], states=frozenset({"retrying"}))
    assert row.next_attempt_at is not None
    assert (row.next_attempt_at - row.updated_at).total_seconds() <= 0.5
    quivo.state.rate_limit_rate = 0.0
    delivered = await wait_for_delivery(db(relay), accepted["delivery_id"], within_s=10)

    assert delivered.state == "delivered"


# It backdates rows behind the relay's back, which the store interface has no verb for.
@pytest.mark.backends("sqlite")
async def test_each_unmatched_delivery_the_sweep_expires_gets_its_own_dead_line(
    start_relay, quivo, monkeypatch
):
    monkeypatch.setattr(worker_module, "MAINTENANCE_INTERVAL_S", 0.05)
    relay = await start_relay(relay_unmatched_ttl=3600)
    with structlog.testing.capture_logs() as logs:
        accepted = [await post(relay, rating_webhook(n, f"ORDER-{n}")) for n in (22, 23)]
        for answer in accepted:
            await wait_for_delivery(db(relay), answer["delivery_id"], states=frozenset({"unmatched"}))
        execute(
            relay.app[SETTINGS].database_path,
            "UPDATE deliveries SET created_at = '2000-01-01T00:00:00.000000Z'",
        )
        # The lines themselves, not the rows: the worker logs only after its commit is visible.
        async with asyncio.timeout(15):
            while sum(event["event"] == "delivery.dead" for event in logs) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    swept = [event for event in logs if event["event"] == "worker.unmatched_swept"]
    dead = [event for event in logs if event["event"] == "delivery.dead"]
    assert [event["expired"] for event in swept] == [2]
    assert sorted((e["delivery_id"], e["merchant_id"], e["rating_id"], e["log_level"]) for e in dead) == [
        (accepted[0]["delivery_id"], 1, 22, "error"),
        (accepted[1]["delivery_id"], 1, 23, "error"),
    ]
    assert all("RELAY_UNMATCHED_TTL" in event["error"] for event in dead)


async def test_resuming_after_refused_credentials_says_how_long_and_why_it_paused(start_relay, quivo):
    quivo.state.reject_credentials = True
    relay = await start_relay()
    with structlog.testing.capture_logs() as logs:
        accepted = await post(relay, rating_webhook(24, "INQ-240"))
        async with asyncio.timeout(10):
            while not any(event["event"] == "worker.paused" for event in logs):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        quivo.state.reject_credentials = False
        await wait_for_delivery(db(relay), accepted["delivery_id"])

    [resumed] = [event for event in logs if event["event"] == "worker.resumed"]
    assert isinstance(resumed["was_paused_for"], float) and resumed["was_paused_for"] >= 0
    assert "401" in resumed["reason"]


async def test_deliveries_held_by_an_outage_go_within_seconds_of_quivo_coming_back(
    start_relay, quivo, monkeypatch
):
    # Probes 2 s apart at most instead of 10: the same behaviour, in a third of the time.
    monkeypatch.setattr(pacing, "OUTAGE_PROBE_MAX_S", PROBE_MAX_S)
    quivo.state.outage = True
    # Backoff that, left alone, would keep each delivery waiting for minutes after Quivo came back.
    relay = await start_relay(relay_retry_base_s=300, relay_retry_max_s=600)
    accepted = [await post(relay, rating_webhook(n, f"INQ-{n}")) for n in range(25, 30)]
    for answer in accepted:
        await wait_for_delivery(db(relay), answer["delivery_id"], states=frozenset({"retrying"}))
    # Down long enough to count as an outage (OUTAGE_FAILURES): two more failed calls, the probes.
    failed = _answered_503(quivo)
    async with asyncio.timeout(30):
        while _answered_503(quivo) < failed + 2:  # noqa: ASYNC110 - the stand-in's counters
            await asyncio.sleep(0.02)

    quivo.state.outage = False
    back = asyncio.get_running_loop().time()
    for answer in accepted:
        await wait_for_delivery(db(relay), answer["delivery_id"], within_s=30)
    took_s = asyncio.get_running_loop().time() - back

    assert len(quivo.state.ratings) == 5
    # The probe reads Quivo at least every OUTAGE_PROBE_MAX_S; the held ones then go at once (margin for a
    # busy machine: without the probe they wait their backoff, minutes).
    assert took_s <= PROBE_MAX_S + 8, took_s


# The outage test's longest wait between probes.
PROBE_MAX_S = 2.0


def _answered_503(quivo: Quivo) -> int:
    return sum(n for (_, status), n in quivo.state.requests.items() if status == 503)


def test_a_separate_worker_sends_new_ratings_long_before_its_next_sweep(tmp_path: Path, database_url: str):
    # A sweep a minute apart: only learning of the web process's commits gets these out in time.
    with stage(tmp_path, split=True, RELAY_SWEEP_INTERVAL_S="60", DATABASE_URL=database_url) as s:
        for rating_id in (26, 27):  # the second arrives while the worker idles after delivering the first
            took_s = _post_and_time_delivery(s, database_url, rating_id)
            assert took_s < 15, took_s


def _post_and_time_delivery(s: Stage, database_url: str, rating_id: int) -> float:
    """Seconds from the webhook's 202 to its rating at Quivo; returns once the worker recorded it."""
    body = rating_webhook(rating_id, f"INQ-{rating_id}")
    status, _, _ = http_call(
        "POST", f"{s.relay.url}/webhooks/bringg", body, {**AUTH, "Content-Type": "application/json"}
    )
    assert status == 202
    posted = time.monotonic()
    wait_for(lambda: (1, rating_id) in delivered_tags(s.sim), 20, f"rating {rating_id} at Quivo")
    took_s = time.monotonic() - posted
    delivered = DeliveryFilter(state=("delivered",))

    def recorded() -> bool:
        listed = on_store(database_url, lambda store: store.list_deliveries(delivered))
        return rating_id in {delivery.rating_id for delivery in listed}

    wait_for(recorded, 20, f"rating {rating_id} recorded")
    return took_s


async def test_quivo_answering_reads_while_failing_ratings_frees_held_deliveries_only_once(
    start_relay, quivo, monkeypatch
):
    # Backoff is jittered from 0 s up: pinned at its cap, only a freeing can make a held delivery due here.
    monkeypatch.setattr(tenant_worker, "retry_delay", lambda *args, **kwargs: 600.0)
    # One call at a time, so each failed call counts towards the outage.
    relay = await start_relay(quivo_max_concurrency=1, relay_retry_base_s=300, relay_retry_max_s=600)
    quivo.state.outage = True
    accepted = [await post(relay, rating_webhook(n, f"INQ-{n}")) for n in range(31, 34)]
    for answer in accepted:
        await wait_for_delivery(db(relay), answer["delivery_id"], states=frozenset({"retrying"}))
    # Now Quivo answers reads but fails every rating: its first answered read frees the held deliveries,
    # they fail again (an outage once more), and the next answered read must not free them a second time.
    quivo.state.outage, quivo.state.error_rate = False, 1.0
    async with asyncio.timeout(30):
        while quivo.state.requests[("get_inquiry", 200)] < 2:  # noqa: ASYNC110 - the stand-in's counters
            await asyncio.sleep(0.02)
    await _worker_loop_goes_round(relay, times=2)

    rows = await all_deliveries(db(relay))
    assert [(row.state, row.attempts) for row in rows] == [("retrying", 2)] * 3
    failed_posts = sum(n for (route, status), n in quivo.state.requests.items() if route == "post_rating")
    assert failed_posts == 3


async def _worker_loop_goes_round(relay, *, times: int) -> None:
    """Until the worker's loop has started `times` more passes (each frees and claims what it should)."""
    worker = relay.app[WORKER]
    for _ in range(times):
        began = time.time()
        async with asyncio.timeout(10):
            while (worker.last_heartbeat or 0) <= began:  # noqa: ASYNC110 - the loop's own mark
                await asyncio.sleep(0.01)


async def test_a_claims_deliveries_take_their_turns_and_send_slots_together_once_each(
    aiohttp_client, make_settings, quivo, monkeypatch
):
    # Taken at each call, turns (and on PostgreSQL send slots) were asked one at a time, a round trip or a
    # share of one each; a claim's are asked in one store call, and a call right after needs no renewal.
    settings = make_settings(**forwarding_settings(quivo, quivo_max_concurrency=4))
    intake = await aiohttp_client(create_app(settings, run_worker=False))
    accepted = [await post(intake, rating_webhook(n, f"INQ-{n}")) for n in range(900, 908)]
    await intake.close()
    asked: dict[str, list[int]] = {"take_turn": [], "take_turns": [], "reserve_send_slot": []}
    sizes = {
        "take_turn": lambda *args, **kwargs: 1,
        "take_turns": lambda self, asks, **kwargs: len(asks),
        "reserve_send_slot": lambda *args, count=1, **kwargs: count,
    }
    # The claim leased them as long as their turns would: each turn keeps the lease the claim gave.
    kept: list[bool] = []

    async def keeping(self: Store, asks: list[TurnAsk], *, now: datetime, until: datetime) -> None:
        kept.extend(ask.leased_until == until for ask in asks)

    for name, size in sizes.items():
        _first_on_both_stores(monkeypatch, name, _noting(size, asked[name]))
    _first_on_both_stores(monkeypatch, "take_turns", keeping)

    relay = await aiohttp_client(create_app(settings, run_worker=True))
    for answer in accepted:
        assert (await wait_for_delivery(db(relay), answer["delivery_id"])).state == "delivered"

    # All 8 claimed at once, their turns asked together, none renewed at its call.
    assert (asked["take_turns"], asked["take_turn"]) == ([8], [])
    assert kept == [True] * 8
    assert asked["reserve_send_slot"] == ([] if db(relay).single_worker else [8])


async def test_a_stop_during_a_lease_renewal_releases_the_delivery_under_the_renewed_lease(
    aiohttp_client, make_settings, quivo, monkeypatch, opened_store
):
    # A stop cancelled the wait for a renewal that committed all the same: the release named the old lease,
    # found it lost, and left the row `sending` until the new lease ran out (chaos scenario 2, full run).
    settings = make_settings(**forwarding_settings(quivo, relay_shutdown_grace_s=0.05))
    intake = await aiohttp_client(create_app(settings, run_worker=False))
    accepted = await post(intake, rating_webhook(990, "INQ-990"))
    await intake.close()
    # Claims lease half a lease: the call renews it first, through take_turn.
    monkeypatch.setattr(tenant_worker, "TURN_FRESH_SHARE", -0.5)
    renewed, answer = asyncio.Event(), asyncio.Event()

    def answered_late(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def take_turn(*args: Any, **kwargs: Any) -> Any:
            turn = await method(*args, **kwargs)
            renewed.set()
            await answer.wait()  # committed; its answer held until the delivery's wait was cancelled
            return turn

        return take_turn

    _wrapped_on_both_stores(monkeypatch, "take_turn", answered_late)

    relay = await aiohttp_client(create_app(settings, run_worker=True))
    await asyncio.wait_for(renewed.wait(), 30)
    stopping = asyncio.ensure_future(relay.close())

    def delivering() -> list[asyncio.Task[Any]]:
        named = "TenantWorker._deliver"
        return [task for task in asyncio.all_tasks() if getattr(task.get_coro(), "__qualname__", "") == named]

    async with asyncio.timeout(30):
        while not any(task.cancelling() for task in delivering()):  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.005)
    answer.set()
    await stopping

    store = await opened_store(settings.database_url)
    detail = await store.get_delivery(accepted["delivery_id"])
    assert detail is not None and detail.delivery.state in ("pending", "retrying"), detail
    assert not quivo.state.ratings


async def test_outcomes_finishing_together_are_recorded_in_one_store_call(
    aiohttp_client, make_settings, quivo, monkeypatch
):
    # Recorded one store call each, 8 deliveries finishing while their records wait took 8 calls; those
    # waiting share one. Each record here waits until all 8 ratings went out, so all 8 finish together.
    settings = make_settings(**forwarding_settings(quivo, quivo_max_concurrency=4))
    intake = await aiohttp_client(create_app(settings, run_worker=False))
    accepted = [await post(intake, rating_webhook(n, f"INQ-{n}")) for n in range(910, 918)]
    await intake.close()
    recorded: list[int] = []

    def held(size: Callable[..., int]) -> Callable[..., Awaitable[None]]:
        async def record(*args: Any, **kwargs: Any) -> None:
            async with asyncio.timeout(10):
                while _ratings_posted(quivo) < 8:  # noqa: ASYNC110 - another server's count
                    await asyncio.sleep(0.01)
            recorded.append(size(*args, **kwargs))

        return record

    _first_on_both_stores(monkeypatch, "record_outcome", held(lambda *args, **kwargs: 1))
    _first_on_both_stores(
        monkeypatch, "record_outcomes", held(lambda self, finishes, **kwargs: len(finishes))
    )

    relay = await aiohttp_client(create_app(settings, run_worker=True))
    for answer in accepted:
        assert (await wait_for_delivery(db(relay), answer["delivery_id"])).state == "delivered"

    # The first two records went out as soon as their deliveries finished; the others waited together.
    assert sum(recorded) == 8
    assert len(recorded) <= 4, recorded


async def test_deliveries_waiting_for_their_outcomes_commit_leave_room_for_the_next_claim(
    aiohttp_client, make_settings, quivo, monkeypatch
):
    # Counted against the claim ahead until their outcomes committed, deliveries whose calls were done held
    # the next claim back while the store committed, and the call slots stood idle meanwhile. Here no
    # outcome commits until more ratings went out than one claim ahead holds.
    concurrency = 2
    room = claim_ahead.LEAST_PER_SLOT * concurrency
    settings = make_settings(**forwarding_settings(quivo, quivo_max_concurrency=concurrency))
    intake = await aiohttp_client(create_app(settings, run_worker=False))
    accepted = [await post(intake, rating_webhook(n, f"INQ-{n}")) for n in range(930, 930 + 2 * room)]
    await intake.close()
    posted_before_any_outcome: list[int] = []

    async def held(*args: Any, **kwargs: Any) -> None:
        if not posted_before_any_outcome:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while _ratings_posted(quivo) <= room:  # noqa: ASYNC110 - another server's count
                        await asyncio.sleep(0.01)
            posted_before_any_outcome.append(_ratings_posted(quivo))

    _first_on_both_stores(monkeypatch, "record_outcomes", held)

    relay = await aiohttp_client(create_app(settings, run_worker=True))
    for answer in accepted:
        assert (await wait_for_delivery(db(relay), answer["delivery_id"])).state == "delivered"

    assert posted_before_any_outcome[0] > room
    assert _ratings_posted(quivo) == 2 * room


async def test_a_worker_finishing_deliveries_fast_claims_more_than_three_slots_worth_and_no_more_than_eight(
    aiohttp_client, make_settings, quivo, monkeypatch
):
    # Three slots' worth ran out while a claim was out in a drain, and the slots stood idle. Here any rate
    # measured, over a millisecond, fills the cap: the claims grow without this machine's speed deciding.
    monkeypatch.setattr(claim_ahead, "WINDOW_S", 0.001)
    monkeypatch.setattr(claim_ahead, "HORIZON_S", 1e6)
    concurrency = 2
    settings = make_settings(**forwarding_settings(quivo, quivo_max_concurrency=concurrency))
    intake = await aiohttp_client(create_app(settings, run_worker=False))
    accepted = [await post(intake, rating_webhook(n, f"INQ-{n}")) for n in range(960, 1000)]
    await intake.close()
    limits: list[int] = []

    async def asked(*args: Any, **kwargs: Any) -> None:
        limits.append(kwargs["limit"])

    _first_on_both_stores(monkeypatch, "claim_due", asked)

    relay = await aiohttp_client(create_app(settings, run_worker=True))
    for answer in accepted:
        assert (await wait_for_delivery(db(relay), answer["delivery_id"])).state == "delivered"

    assert limits[0] == claim_ahead.LEAST_PER_SLOT * concurrency
    assert claim_ahead.LEAST_PER_SLOT * concurrency < max(limits) <= claim_ahead.MOST_PER_SLOT * concurrency


def _ratings_posted(quivo: Quivo) -> int:
    return sum(
        count
        for route, answers in quivo.state.requests_by_route().items()
        if route == "post_rating"
        for count in answers.values()
    )


def _first_on_both_stores(
    monkeypatch: pytest.MonkeyPatch, name: str, first: Callable[..., Awaitable[None]]
) -> None:
    """Each backend's store method `name` awaits `first` with the call's arguments, then runs as before."""

    def wrapping(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            await first(*args, **kwargs)
            return await method(*args, **kwargs)

        return wrapped

    _wrapped_on_both_stores(monkeypatch, name, wrapping)


def _wrapped_on_both_stores(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    wrapping: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]],
) -> None:
    """Each backend's store method `name` replaced by `wrapping` of it."""
    for store_class in (SqliteStore, PostgresStore):
        monkeypatch.setattr(store_class, name, wrapping(getattr(store_class, name)))


def _noting(size: Callable[..., int], asked: list[int]) -> Callable[..., Awaitable[None]]:
    """Notes in `asked` how many turns or slots each call asks for (see _first_on_both_stores)."""

    async def noting(*args: Any, **kwargs: Any) -> None:
        asked.append(size(*args, **kwargs))

    return noting
