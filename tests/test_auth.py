"""Webhook authentication through HTTP: every method Bringg offers, and every way a credential fails."""

import asyncio
import base64
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from structlog.testing import capture_logs
from structlog.typing import EventDict

from relay.app import create_app
from relay.keys import SETTINGS, TENANTS
from tests.conftest import WEBHOOK_TOKEN, fixture_bytes

BODY = fixture_bytes("bringg/rating_submitted.json")
JWT_SECRET = "bringg-shared-jwt-secret-of-32-bytes!"
ISSUER = "https://us2-admin-api.bringg.com"
CLIENT_ID = "bringg-client"
CLIENT_SECRET = "bringg-client-secret-0123456789abcdef"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def bringg_jwt(secret: str = JWT_SECRET, *, ttl: int = 300, **claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "bringg-event", "iss": ISSUER, "exp": now + ttl, **claims}, secret, "HS256")


def stored_webhooks(client) -> int:
    conn = sqlite3.connect(client.app[SETTINGS].database_path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM webhooks").fetchone()[0])
    finally:
        conn.close()


async def webhook_status(client, headers: dict[str, str]):
    response = await client.post("/webhooks/bringg", data=BODY, headers=headers)
    if response.status == 401:
        assert response.content_type == "application/problem+json"
    return response.status


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, 202),
        ({"Authorization": WEBHOOK_TOKEN}, 202),
        ({"Authorization": f"bearer  {WEBHOOK_TOKEN} "}, 202),
        ({}, 401),
        ({"Authorization": ""}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Bearer {WEBHOOK_TOKEN}x"}, 401),
        ({"X-Other": WEBHOOK_TOKEN}, 401),
    ],
)
async def test_static_token(aiohttp_client, make_settings, headers, status):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))

    assert await webhook_status(client, headers) == status
    assert stored_webhooks(client) == (1 if status == 202 else 0)


async def test_static_token_is_compared_whole_never_by_prefix(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))
    near_misses = [WEBHOOK_TOKEN + "x", WEBHOOK_TOKEN * 2, WEBHOOK_TOKEN[:-1], WEBHOOK_TOKEN[:1]]

    for near in near_misses:
        assert await webhook_status(client, {"Authorization": f"Bearer {near}"}) == 401, near
        assert await webhook_status(client, {"Authorization": near}) == 401, near
    assert stored_webhooks(client) == 0


async def test_static_token_in_a_custom_header(aiohttp_client, make_settings):
    client = await aiohttp_client(
        create_app(make_settings(bringg_token_header="application-key"), run_worker=False)
    )

    assert await webhook_status(client, {"application-key": WEBHOOK_TOKEN}) == 202
    assert await webhook_status(client, {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}) == 401


# Tokens are made when each test runs: made at collection, the valid ones would expire in a slow run.
@pytest.mark.parametrize(
    ("make_token", "status"),
    [
        (lambda: bringg_jwt(), 202),
        (lambda: f"Bearer {bringg_jwt()}", 202),
        (lambda: bringg_jwt(ttl=-60), 401),  # expired
        (lambda: bringg_jwt("someone-elses-secret-that-is-long-enough"), 401),  # forged
        (
            lambda: jwt.encode(
                {"sub": "bringg-event", "iss": ISSUER, "exp": int(time.time()) + 60}, None, "none"
            ),
            401,
        ),
        (lambda: jwt.encode({"sub": "bringg-event", "iss": ISSUER}, JWT_SECRET, "HS256"), 401),  # no exp
        (lambda: bringg_jwt(iss="https://evil.example"), 401),
        (lambda: bringg_jwt(secret=JWT_SECRET, ttl=300)[:-4] + "AAAA", 401),  # tampered signature
        (lambda: "not.a.jwt", 401),
        (lambda: bringg_jwt(ttl=23 * 3600), 202),  # within the 24 h a token may live
        (lambda: bringg_jwt(ttl=25 * 3600), 401),
        (lambda: bringg_jwt(ttl=30 * 365 * 86400), 401),  # decades away: minted to be replayed
        (lambda: bringg_jwt(exp=str(int(time.time()) + 300)), 401),  # a time as a string
        (lambda: bringg_jwt(iat="yesterday"), 401),
        (lambda: bringg_jwt(nbf=[0]), 401),
    ],
)
async def test_jwt(aiohttp_client, make_settings, make_token, status):
    settings = make_settings(
        bringg_webhook_token=None, bringg_jwt_secret=JWT_SECRET, bringg_jwt_issuer=ISSUER
    )
    client = await aiohttp_client(create_app(settings, run_worker=False))

    assert await webhook_status(client, {"Authorization": make_token()}) == status
    assert stored_webhooks(client) == (1 if status == 202 else 0)


async def test_jwt_signed_with_another_algorithm_is_refused(aiohttp_client, make_settings):
    settings = make_settings(bringg_webhook_token=None, bringg_jwt_secret=JWT_SECRET * 2)
    client = await aiohttp_client(create_app(settings, run_worker=False))
    hs512 = jwt.encode({"exp": int(time.time()) + 60}, JWT_SECRET * 2, "HS512")

    assert await webhook_status(client, {"Authorization": hs512}) == 401


@pytest.fixture
async def oauth_relay(aiohttp_client, make_settings):
    settings = make_settings(
        bringg_webhook_token=None,
        bringg_oauth_client_id=CLIENT_ID,
        bringg_oauth_client_secret=CLIENT_SECRET,
        bringg_oauth_token_ttl_s=120,
    )
    return await aiohttp_client(create_app(settings, run_worker=False))


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@pytest.mark.parametrize("style", ["form", "json", "basic"])
async def test_oauth_client_credentials_then_webhook(oauth_relay, style):
    grant = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    if style == "form":
        response = await oauth_relay.post("/oauth/token", data=grant)
    elif style == "json":
        response = await oauth_relay.post("/oauth/token", json=grant)
    else:
        response = await oauth_relay.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(CLIENT_ID, CLIENT_SECRET)
        )
    answer = await response.json()

    assert response.status == 200
    assert (answer["token_type"], answer["expires_in"]) == ("Bearer", 120)
    assert response.headers["Cache-Control"] == "no-store"
    headers = {"Authorization": f"Bearer {answer['access_token']}"}
    assert await webhook_status(oauth_relay, headers) == 202


async def test_oauth_refuses_bad_clients_and_grants(oauth_relay):
    wrong_secret = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "nope"}
    wrong_grant = {"grant_type": "password", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    refused = await oauth_relay.post("/oauth/token", data=wrong_secret)
    bad_basic = await oauth_relay.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic("other", CLIENT_SECRET)
    )
    unsupported = await oauth_relay.post("/oauth/token", data=wrong_grant)

    assert (refused.status, (await refused.json())["error"]) == (401, "invalid_client")
    assert bad_basic.status == 401
    assert (unsupported.status, (await unsupported.json())["error"]) == (400, "unsupported_grant_type")


@pytest.mark.parametrize(
    "in_url",
    [
        {"client_secret": CLIENT_SECRET},
        {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        {"client_id": CLIENT_ID},
    ],
    ids=["secret", "both", "id"],
)
async def test_client_credentials_in_the_url_are_refused_and_never_logged(oauth_relay, in_url):
    grant = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    with capture_logs() as logs:
        # Refused even beside good credentials in the body: the URL already went through the proxies' logs.
        response = await oauth_relay.post("/oauth/token", params=in_url, data=grant)
    answer = await response.json()

    assert (response.status, answer["error"]) == (400, "invalid_request")
    assert "access_token" not in answer
    assert [(line["event"], line["reason"]) for line in logs] == [
        ("oauth.token_refused", "client credentials in the URL")
    ]
    assert CLIENT_SECRET not in repr(logs)


async def test_a_token_request_whose_body_stalls_gets_408(aiohttp_client, make_settings):
    settings = make_settings(
        bringg_oauth_client_id=CLIENT_ID, bringg_oauth_client_secret=CLIENT_SECRET, relay_body_timeout_s=0.2
    )
    client = await aiohttp_client(create_app(settings, run_worker=False))
    form = f"grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}".encode()
    gave_up = asyncio.Event()

    def watch(logger: object, method: str, line: EventDict) -> EventDict:
        if line["event"] == "oauth.too_slow":
            gave_up.set()
        return line

    async def trickle() -> AsyncIterator[bytes]:
        yield form[:5]
        # The rest only once the relay gave up on it (or, without a deadline, after 10 s).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gave_up.wait(), 10)
        yield form[5:]

    with capture_logs(processors=[watch]) as logs:
        stalled = await client.post("/oauth/token", data=trickle(), headers=FORM)

    assert (stalled.status, stalled.content_type) == (408, "application/problem+json")
    [line] = [line for line in logs if line["event"] == "oauth.too_slow"]
    assert line["limit_s"] == 0.2
    assert (await client.post("/oauth/token", data=form, headers=FORM)).status == 200


async def test_webhook_refuses_tokens_the_relay_did_not_issue_or_that_expired(oauth_relay):
    foreign = jwt.encode({"aud": "relay-webhook", "exp": int(time.time()) + 60}, CLIENT_SECRET, "HS256")
    default = oauth_relay.app[TENANTS].registry.of_bare_url()
    assert default is not None
    expired = default.authenticator.issue_token(CLIENT_ID, CLIENT_SECRET, issued_at=time.time() - 200)

    for token in (foreign, expired):
        assert await webhook_status(oauth_relay, {"Authorization": f"Bearer {token}"}) == 401
    assert stored_webhooks(oauth_relay) == 0


async def test_oauth_endpoint_is_absent_when_oauth_is_not_configured(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))

    response = await client.post("/oauth/token", data={"grant_type": "client_credentials"})
    assert response.status == 404


async def test_any_configured_method_suffices(aiohttp_client, make_settings):
    settings = make_settings(bringg_jwt_secret=JWT_SECRET)
    client = await aiohttp_client(create_app(settings, run_worker=False))

    assert await webhook_status(client, {"Authorization": WEBHOOK_TOKEN}) == 202
    assert await webhook_status(client, {"Authorization": bringg_jwt()}) == 200  # same rating: duplicate
    assert await webhook_status(client, {"Authorization": "garbage"}) == 401


async def test_auth_none_accepts_anonymous_webhooks(aiohttp_client, make_settings):
    client = await aiohttp_client(
        create_app(make_settings(bringg_webhook_token=None, bringg_auth="none"), run_worker=False)
    )

    assert await webhook_status(client, {}) == 202


async def test_refusal_names_the_scheme_and_unknown_paths_answer_problem_json(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))

    refused = await client.post("/webhooks/bringg", data=BODY)
    unknown = await client.get("/no/such/path")
    wrong_method = await client.get("/webhooks/bringg")

    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="relay"'
    assert (unknown.status, unknown.content_type) == (404, "application/problem+json")
    assert (wrong_method.status, wrong_method.content_type) == (405, "application/problem+json")
    assert wrong_method.headers["Allow"] == "POST"
