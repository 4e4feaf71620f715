"""The simulated Quivo through HTTP: documented behaviour, every fault knob, the control API, the CLI."""

import asyncio
import json
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from relay.sim.app import create_sim_app
from relay.sim.state import FAULT_KNOBS, SimState
from tests.conftest import FIXTURES, FakeClock

REPO_ROOT = Path(__file__).resolve().parents[1]
QUIVO_FIXTURES = FIXTURES / "quivo"
API_KEY = {"X-Api-Key": "sim-key"}
CREDENTIALS = {"username": "sim-user", "password": "sim-pass"}
RATING = {"rating": 4.5, "ratingMessage": "Driver was lovely [bringg:1:3452]"}

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> SimState:
    return SimState(clock=clock, rng=random.Random(7))


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, state: SimState) -> Client:
    return await aiohttp_client(create_sim_app(state))


async def login(client: Client) -> str:
    response = await client.post("/login", json=CREDENTIALS, headers=API_KEY)
    assert response.status == 200
    token: str = (await response.json())["token"]
    return token


async def session_headers(client: Client) -> dict[str, str]:
    return {**API_KEY, "Authorization": await login(client)}


async def post_rating(client: Client, inquiry_id: int = 42, body: Any = RATING) -> aiohttp.ClientResponse:
    return await client.post(
        f"/customerInquiries/{inquiry_id}/ratings", json=body, headers=await session_headers(client)
    )


async def sim_ratings(client: Client) -> dict[str, Any]:
    response = await client.get("/_sim/ratings")
    assert response.status == 200
    ratings: dict[str, Any] = await response.json()
    return ratings


async def put_faults(client: Client, **knobs: Any) -> aiohttp.ClientResponse:
    return await client.put("/_sim/faults", json=knobs)


async def test_login_answers_an_opaque_token_and_its_lifetime(client: Client) -> None:
    response = await client.post("/login", json=CREDENTIALS, headers=API_KEY)

    assert response.status == 200
    body = await response.json()
    assert body["expiresIn"] == 3600
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    assert body["token"] != await login(client)


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "wrong"}])
async def test_login_without_the_api_key_is_forbidden(client: Client, headers: dict[str, str]) -> None:
    response = await client.post("/login", json=CREDENTIALS, headers=headers)

    assert response.status == 403
    assert await response.json() == {"message": "Forbidden"}


@pytest.mark.parametrize(
    "body",
    [{"username": "sim-user", "password": "nope"}, {"username": "someone", "password": "sim-pass"}, {}],
)
async def test_login_with_wrong_credentials_is_refused(client: Client, body: dict[str, str]) -> None:
    response = await client.post("/login", json=body, headers=API_KEY)

    assert response.status == 401
    assert await response.json() == {"message": "Incorrect username or password."}


async def test_token_expires_after_its_ttl_with_the_documented_message(
    client: Client, clock: FakeClock
) -> None:
    headers = await session_headers(client)
    clock.now += 3599
    assert (await client.get("/customerInquiries/7", headers=headers)).status == 200

    clock.now += 1
    response = await client.get("/customerInquiries/7", headers=headers)

    assert response.status == 401
    assert await response.json() == {"message": "The incoming token has expired"}


@pytest.mark.parametrize("prefix", ["", "Bearer ", "bearer "])
async def test_bare_and_bearer_tokens_are_both_accepted(client: Client, prefix: str) -> None:
    token = await login(client)

    response = await client.get("/customerInquiries/7", headers={**API_KEY, "Authorization": prefix + token})

    assert response.status == 200


@pytest.mark.parametrize("authorization", [None, "", "not-a-token", "Bearer not-a-token"])
async def test_missing_or_unknown_token_is_unauthorized(client: Client, authorization: str | None) -> None:
    headers = dict(API_KEY) if authorization is None else {**API_KEY, "Authorization": authorization}

    response = await client.get("/customerInquiries/7", headers=headers)

    assert response.status == 401
    assert await response.json() == {"message": "Unauthorized"}


async def test_a_valid_token_without_the_api_key_is_forbidden(client: Client) -> None:
    response = await client.get("/customerInquiries/7", headers={"Authorization": await login(client)})

    assert response.status == 403
    assert await response.json() == {"message": "Forbidden"}


async def test_an_inquiry_has_the_documented_shape(client: Client) -> None:
    documented = json.loads((QUIVO_FIXTURES / "customer_inquiry.doc-example.json").read_text())
    assert (await post_rating(client, 7)).status == 200

    inquiry = await (await client.get("/customerInquiries/7", headers=await session_headers(client))).json()

    assert inquiry.keys() == documented.keys()
    assert inquiry["messages"][0].keys() == documented["messages"][0].keys()
    assert inquiry["id"] == 7
    assert inquiry["status"] == "WITH_YOU"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", inquiry["created"])


async def test_a_fresh_inquiry_has_no_messages_and_no_rating(client: Client) -> None:
    response = await client.get(
        "/customerInquiries/9000000000000000000", headers=await session_headers(client)
    )

    inquiry = await response.json()
    assert (inquiry["id"], inquiry["messages"], inquiry["currentRating"]) == (9000000000000000000, [], None)


async def test_missing_inquiries_answer_404_and_take_no_rating(client: Client, state: SimState) -> None:
    state.missing.add(13)

    read = await client.get("/customerInquiries/13", headers=await session_headers(client))
    rate = await post_rating(client, 13)

    assert (read.status, rate.status) == (404, 404)
    assert await rate.json() == {"message": "Customer inquiry not found"}
    assert state.ratings == []


@pytest.mark.parametrize(("raw_id", "status"), [("0", 404), ("abc", 400), ("-5", 400), ("9" * 19, 400)])
async def test_ids_that_are_not_positive_int64_are_refused(client: Client, raw_id: str, status: int) -> None:
    response = await client.get(f"/customerInquiries/{raw_id}", headers=await session_headers(client))

    assert response.status == status


async def test_a_rating_lands_in_messages_current_rating_and_the_record(client: Client) -> None:
    first = await post_rating(client, 42, {"rating": 2})
    response = await post_rating(client, 42)

    assert first.status == response.status == 200
    inquiry = await response.json()
    assert inquiry["currentRating"] == 4.5
    assert [m["message"] for m in inquiry["messages"]] == [None, RATING["ratingMessage"]]
    message = inquiry["messages"][-1]
    assert message["category"] == "RATING_MESSAGE"
    assert message["created"] == message["postedAt"]
    assert (message["username"], message["metaInfo"], message["attachments"]) == ("sim-user", {}, [])
    read_back = await client.get("/customerInquiries/42", headers=await session_headers(client))
    assert await read_back.json() == inquiry
    recorded = await sim_ratings(client)
    assert recorded["count"] == 2
    assert recorded["ratings"][-1] == {
        "inquiry_id": 42,
        "rating": 4.5,
        "message": RATING["ratingMessage"],
        "at": message["created"],
    }


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({}, "rating: must not be null"),
        ({"rating": None, "ratingMessage": "x"}, "rating: must not be null"),
        ({"rating": "five"}, "rating: must be a number"),
        ({"rating": True}, "rating: must be a number"),
        ({"rating": 10**400}, "rating: must be a finite number"),
        ({"rating": 4, "ratingMessage": 5}, "ratingMessage: must be a string"),
        ([4], "Invalid request body"),
    ],
)
async def test_an_invalid_rating_body_gets_400_plain_text(
    client: Client, state: SimState, body: Any, text: str
) -> None:
    response = await post_rating(client, 42, body)

    assert response.status == 400
    assert response.content_type == "text/plain"
    assert await response.text() == text
    assert state.ratings == []


async def test_a_rating_body_that_is_not_json_gets_400_plain_text(client: Client) -> None:
    response = await client.post(
        "/customerInquiries/42/ratings", data=b"{rating", headers=await session_headers(client)
    )

    assert (response.status, await response.text()) == (400, "Invalid request body")


async def test_error_rate_answers_5xx_without_recording(client: Client, state: SimState) -> None:
    state.error_rate = 1.0

    statuses = {(await post_rating(client)).status for _ in range(12)}

    assert statuses <= {500, 502, 503} and len(statuses) > 1
    assert state.ratings == []


async def test_rate_limit_answers_429_with_retry_after_without_recording(client: Client) -> None:
    assert (await put_faults(client, rate_limit_rate=1.0, retry_after_s=7)).status == 200

    response = await post_rating(client)

    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    assert (await sim_ratings(client))["count"] == 0


async def test_outage_answers_503_on_every_route_but_not_the_control_api(client: Client) -> None:
    headers = await session_headers(client)
    assert (await put_faults(client, outage=True)).status == 200

    answers = [
        await client.post("/login", json=CREDENTIALS, headers=API_KEY),
        await client.get("/customerInquiries/42", headers=headers),
        await client.post("/customerInquiries/42/ratings", json=RATING, headers=headers),
    ]

    assert [a.status for a in answers] == [503, 503, 503]
    assert await answers[0].json() == {"message": "Service Unavailable"}
    assert (await sim_ratings(client))["count"] == 0
    await put_faults(client, outage=False)
    assert (await client.get("/customerInquiries/42", headers=headers)).status == 200


async def test_latency_delays_every_answer(client: Client, state: SimState) -> None:
    state.latency_ms = 60
    started = time.monotonic()

    response = await client.post("/login", json=CREDENTIALS, headers=API_KEY)

    assert response.status == 200
    assert time.monotonic() - started >= 0.06


async def test_drop_after_commit_records_the_rating_then_disconnects(client: Client, state: SimState) -> None:
    state.drop_after_commit_rate = 1.0

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post_rating(client, 42)

    assert (await sim_ratings(client))["count"] == 1
    inquiry = await (await client.get("/customerInquiries/42", headers=await session_headers(client))).json()
    assert inquiry["currentRating"] == 4.5
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["requests"]["post_rating"] == {"dropped": 1}


async def test_late_commit_drops_the_first_post_to_an_inquiry_and_commits_it_later(client: Client) -> None:
    await put_faults(client, late_commit_s=0.3)

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post_rating(client, 42)
    at_once = (await sim_ratings(client))["count"]
    pending = (await (await client.get("/_sim/stats")).json())["late_commits_pending"]
    second = await post_rating(client, 42)  # only the first POST to an inquiry commits late
    async with asyncio.timeout(10):
        while (await sim_ratings(client))["count"] < 2:  # noqa: ASYNC110 - the stand-in's state, over HTTP
            await asyncio.sleep(0.02)

    assert (at_once, pending, second.status) == (0, 1, 200)
    assert (await sim_ratings(client))["count"] == 2
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["requests"]["post_rating"] == {"dropped": 1, "200": 1}
    assert stats["late_commits_pending"] == 0


async def test_rejected_credentials_make_a_correct_login_fail(client: Client) -> None:
    await put_faults(client, reject_credentials=True)

    response = await client.post("/login", json=CREDENTIALS, headers=API_KEY)

    assert response.status == 401
    assert await response.json() == {"message": "Incorrect username or password."}


async def test_expiring_all_tokens_turns_them_into_expired_ones(client: Client) -> None:
    headers = await session_headers(client)

    expired = await client.post("/_sim/tokens/expire")
    response = await client.get("/customerInquiries/42", headers=headers)

    assert await expired.json() == {"expired": 1}
    assert (response.status, await response.json()) == (401, {"message": "The incoming token has expired"})
    assert (await client.get("/customerInquiries/42", headers=await session_headers(client))).status == 200


async def test_faults_update_answers_every_knob_value(client: Client, state: SimState) -> None:
    response = await put_faults(client, error_rate=0.25, outage=True, retry_after_s=3)

    assert response.status == 200
    knobs = await response.json()
    assert knobs.keys() == set(FAULT_KNOBS)
    assert (knobs["error_rate"], knobs["outage"], knobs["retry_after_s"]) == (0.25, True, 3)
    assert (state.error_rate, state.outage, state.latency_ms) == (0.25, True, 0)


@pytest.mark.parametrize(
    ("knobs", "named"),
    [({"outage": True, "meltdown": 1}, "meltdown"), ({"error_rate": 1.5}, "error_rate")],
)
async def test_faults_update_refuses_unknown_or_invalid_knobs(
    client: Client, state: SimState, knobs: dict[str, Any], named: str
) -> None:
    response = await put_faults(client, **knobs)

    assert response.status == 400
    assert named in " ".join((await response.json())["errors"])
    assert state.fault_knobs() == SimState().fault_knobs()


async def test_stats_count_requests_by_route_and_status(client: Client, state: SimState) -> None:
    state.missing.add(13)
    await post_rating(client, 42)
    await post_rating(client, 13)
    await client.post("/login", json=CREDENTIALS, headers={})

    stats = await (await client.get("/_sim/stats")).json()

    assert stats == {
        "requests": {"login": {"200": 2, "403": 1}, "post_rating": {"200": 1, "404": 1}},
        "logins": 2,
        "ratings": 1,
        "most_rating_posts_at_once_per_inquiry": 1,
        "most_calls_at_once_per_inquiry": 1,
        "most_rating_posts_at_once": 1,
        "late_commits_pending": 0,
        "rating_posts_open": 0,
    }


async def test_reset_forgets_ratings_counters_inquiries_and_faults(client: Client, state: SimState) -> None:
    headers = await session_headers(client)
    await client.post("/customerInquiries/42/ratings", json=RATING, headers=headers)
    await put_faults(client, latency_ms=5, reject_credentials=True)

    response = await client.post("/_sim/reset")

    assert await response.json() == SimState().fault_knobs()
    assert (state.ratings, state.logins, state.requests) == ([], 0, {})
    inquiry = await (await client.get("/customerInquiries/42", headers=headers)).json()
    assert inquiry["messages"] == []


async def test_cli_announces_the_bound_port_serves_and_exits_0_on_sigterm() -> None:
    entry = (
        "import argparse, sys\n"
        "from relay.sim import cli\n"
        "parser = argparse.ArgumentParser()\n"
        "cli.configure_parser(parser)\n"
        "sys.exit(cli.run(parser.parse_args(sys.argv[1:])))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        entry,
        "--port",
        "0",
        "--api-key",
        "k",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        announced = re.fullmatch(r"sim-quivo listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert announced is not None and int(announced[2]) > 0
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{announced[1]}/login", json=CREDENTIALS, headers={"X-Api-Key": "k"}) as response,
        ):
            assert response.status == 200

        process.send_signal(signal.SIGTERM)

        assert await asyncio.wait_for(process.wait(), 10) == 0
        assert await process.stdout.read() == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_stats_show_rating_posts_open_at_once_for_one_inquiry(client: Client, state: SimState) -> None:
    headers = await session_headers(client)
    state.latency_ms = 100

    await asyncio.gather(
        client.post("/customerInquiries/7/ratings", json=RATING, headers=headers),
        client.post("/customerInquiries/7/ratings", json=RATING, headers=headers),
        client.post("/customerInquiries/8/ratings", json=RATING, headers=headers),
    )

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["most_rating_posts_at_once_per_inquiry"] == 2
    assert stats["most_rating_posts_at_once"] == 3


async def test_stats_show_calls_open_at_once_for_one_inquiry_reads_included(
    client: Client, state: SimState
) -> None:
    headers = await session_headers(client)
    state.latency_ms = 100

    await asyncio.gather(
        client.get("/customerInquiries/7", headers=headers),
        client.post("/customerInquiries/7/ratings", json=RATING, headers=headers),
        client.get("/customerInquiries/8", headers=headers),
    )

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["most_calls_at_once_per_inquiry"] == 2
    assert stats["most_rating_posts_at_once_per_inquiry"] == 1
