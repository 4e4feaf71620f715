"""Guessing credentials: failures past the limit get 429 per address, a valid credential always passes."""

import aiohttp
import pytest
from structlog.testing import capture_logs

from relay.app import create_app
from relay.throttle import FAILURES_ALLOWED, MAX_ADDRESSES, WINDOW_S, FailureThrottle, client_key
from tests.conftest import AUTH, FakeClock, fixture_bytes

CLIENT_ID = "bringg-client"
CLIENT_SECRET = "bringg-client-secret-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
GUESSES = 60  # as many as the 0.04 s of guessing tried


def grant(secret: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": secret}


@pytest.fixture
async def relay(aiohttp_client, make_settings):
    settings = make_settings(
        bringg_oauth_client_id=CLIENT_ID,
        bringg_oauth_client_secret=CLIENT_SECRET,
        relay_admin_token=ADMIN_TOKEN,
    )
    return await aiohttp_client(create_app(settings, run_worker=False))


async def from_address(relay, address: str, method: str, path: str, **kwargs) -> aiohttp.ClientResponse:
    """One request from another loopback address (Linux routes all of 127/8 to the loopback)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        response = await session.request(method, relay.make_url(path), **kwargs)
        await response.read()
        return response


async def test_wrong_client_secrets_past_the_limit_get_429_and_one_log_line_and_the_right_one_still_works(
    relay,
):
    with capture_logs() as logs:
        answers = [await relay.post("/oauth/token", data=grant(f"guess-{n:04}")) for n in range(GUESSES)]
        right = await relay.post("/oauth/token", data=grant(CLIENT_SECRET))

    statuses = [answer.status for answer in answers]
    assert statuses == [401] * FAILURES_ALLOWED + [429] * (GUESSES - FAILURES_ALLOWED)
    throttled = answers[-1]
    assert throttled.content_type == "application/problem+json"
    assert 1 <= int(throttled.headers["Retry-After"]) <= WINDOW_S
    events = [line["event"] for line in logs]
    assert events.count("oauth.token_refused") == FAILURES_ALLOWED
    assert events.count("oauth.throttled") == 1  # once for the burst, not once per request
    [burst] = [line for line in logs if line["event"] == "oauth.throttled"]
    assert burst["client"] == "127.0.0.1"
    assert right.status == 200  # never slowed: a valid credential passes from a throttled address
    token = (await right.json())["access_token"]
    webhook = await relay.post(
        "/webhooks/bringg",
        data=fixture_bytes("bringg/rating_submitted.json"),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert webhook.status == 202
    other = await from_address(relay, "127.0.0.2", "POST", "/oauth/token", data=grant("wrong-again"))
    assert other.status == 401  # the budget is the address's own


async def test_wrong_admin_tokens_past_the_limit_get_429_and_the_right_one_still_works(relay):
    wrong = {"Authorization": "Bearer not-the-admin-token-0000"}

    with capture_logs() as logs:
        answers = [await relay.get("/admin/stats", headers=wrong) for _ in range(GUESSES)]
        right = await relay.get("/admin/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        other = await from_address(relay, "127.0.0.3", "GET", "/admin/stats", headers=wrong)

    assert [answer.status for answer in answers] == [401] * FAILURES_ALLOWED + [429] * (
        GUESSES - FAILURES_ALLOWED
    )
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= WINDOW_S
    events = [line["event"] for line in logs]
    assert (events.count("admin.unauthorized"), events.count("admin.throttled")) == (FAILURES_ALLOWED + 1, 1)
    assert right.status == 200
    assert other.status == 401


async def test_webhook_refusals_are_never_throttled(relay):
    # Bringg counts a 429 as an error like a 401, and after a credential change Bringg itself is the one
    # failing: it must keep seeing why (401), from whichever of its shared addresses it sends.
    body = fixture_bytes("bringg/rating_submitted.json")

    statuses = {
        (await relay.post("/webhooks/bringg", data=body, headers={"Authorization": "Bearer wrong"})).status
        for _ in range(2 * FAILURES_ALLOWED)
    }

    assert statuses == {401}
    assert (await relay.post("/webhooks/bringg", data=body, headers=AUTH)).status == 202


def test_a_burst_is_logged_once_and_ends_after_a_quiet_window():
    clock = FakeClock()
    throttle = FailureThrottle(clock)

    allowed = [throttle.record_failure("10.0.0.1") for _ in range(FAILURES_ALLOWED)]
    first = throttle.record_failure("10.0.0.1")
    clock.now += 1
    second = throttle.record_failure("10.0.0.1")

    assert allowed == [None] * FAILURES_ALLOWED
    assert first is not None and second is not None
    assert (first.first_of_burst, first.retry_after_s) == (True, WINDOW_S)
    assert (second.first_of_burst, second.retry_after_s) == (False, WINDOW_S - 1)
    # Failures that keep coming (one a second) keep the address throttled, in the same burst.
    later = []
    for _ in range(2 * int(WINDOW_S)):
        clock.now += 1
        later.append(throttle.record_failure("10.0.0.1"))
    assert all(throttled is not None and not throttled.first_of_burst for throttled in later)
    # Quiet for a whole window: allowed again, and a new burst is logged again.
    clock.now += WINDOW_S
    assert [throttle.record_failure("10.0.0.1") for _ in range(FAILURES_ALLOWED)] == [None] * FAILURES_ALLOWED
    again = throttle.record_failure("10.0.0.1")
    assert again is not None and again.first_of_burst


def test_waiting_retry_after_allows_a_failure_again():
    clock = FakeClock()
    throttle = FailureThrottle(clock)
    for _ in range(FAILURES_ALLOWED):
        throttle.record_failure("10.0.0.1")
        clock.now += 1

    throttled = throttle.record_failure("10.0.0.1")
    assert throttled is not None
    clock.now += throttled.retry_after_s

    assert throttle.record_failure("10.0.0.1") is None


def test_an_ipv6_host_spends_one_budget_for_its_whole_slash_64():
    throttle = FailureThrottle(FakeClock())
    for host in range(FAILURES_ALLOWED):
        throttle.record_failure(f"2001:db8:1:2::{host + 1:x}")

    assert throttle.record_failure("2001:db8:1:2:ffff::1") is not None
    assert throttle.record_failure("2001:db8:1:3::1") is None
    assert (client_key("::ffff:192.0.2.7"), client_key(None)) == ("192.0.2.7", "unknown")


def test_memory_is_bounded_however_many_addresses_fail():
    clock = FakeClock()
    throttle = FailureThrottle(clock)

    for n in range(MAX_ADDRESSES + 500):
        throttle.record_failure(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    assert len(throttle) == MAX_ADDRESSES
    clock.now += WINDOW_S
    throttle.record_failure("192.0.2.1")

    assert len(throttle) == 1  # addresses quiet for a window are forgotten
