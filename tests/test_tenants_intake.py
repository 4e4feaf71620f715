"""Tenants at the webhook's door, through HTTP: each tenant's URL, its own credentials, its own merchants."""

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from relay.app import create_app
from relay.keys import STORE, TENANTS
from relay.store.filters import DeliveryFilter, WebhookFilter
from relay.store.records import WebhookSummary
from relay.tenants.registry import load_tenants
from tests.conftest import AUTH, BACKENDS

pytestmark = pytest.mark.backends(*BACKENDS)
Client = TestClient[web.Request, web.Application]

ACME_TOKENS = ("acme-token-in-use-3f9c2a7e51d04b86", "acme-token-next-8d1e6b0c94a27f35")
ACME_JWT_SECRET = "acme-jwt-secret-6a0f3d9e2c7b4185"
GLOBEX_CLIENT_ID = "globex-bringg"
GLOBEX_CLIENT_SECRETS = ("globex-oauth-old-5c8e1a4f7b2d9036", "globex-oauth-new-0b7d4e9a3f6c2815")
GLOBEX_JWT_SECRET = "globex-jwt-secret-9e4b7c1d0a5f3826"
ACME_MERCHANT, GLOBEX_MERCHANT = 1001, 2001
FOREIGN_REASON = f"merchant {GLOBEX_MERCHANT} is not one of tenant acme's merchants"

TWO_TENANTS = f"""
[tenants.acme]
merchants = [{ACME_MERCHANT}]
[tenants.acme.bringg]
webhook_tokens = {json.dumps(list(ACME_TOKENS))}
jwt_secrets = ["{ACME_JWT_SECRET}"]

[tenants.globex]
merchants = [{GLOBEX_MERCHANT}]
[tenants.globex.bringg]
oauth_client_id = "{GLOBEX_CLIENT_ID}"
oauth_client_secrets = {json.dumps(list(GLOBEX_CLIENT_SECRETS))}
jwt_secrets = ["{GLOBEX_JWT_SECRET}"]
"""

DEFAULT_TENANT = """
[tenants.default]
merchants = [3001]
[tenants.default.bringg]
webhook_tokens = ["default-tenant-token-1c6f0e8a2d4b9753"]
"""


def rating_body(merchant_id: int, rating_id: int = 77) -> bytes:
    payload = {
        "webhook_type": "rating_submitted",
        "merchant_id": merchant_id,
        "rating": {
            "id": rating_id,
            "rating": 5,
            "created_at": "2026-11-30T10:00:00.000Z",
            "comment": "Left at the door",
            "task": {"id": 5, "status": 4, "title": "Groceries", "external_id": "ORD-1"},
        },
    }
    return json.dumps(payload).encode()


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def signed_jwt(secret: str) -> str:
    return jwt.encode({"sub": "bringg", "exp": int(time.time()) + 300}, secret, "HS256")


def tenants_file(tmp_path: Path, text: str) -> Path:
    """The file as an operator writes it: it holds secrets, so its owner alone may read it."""
    path = tmp_path / "tenants.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
async def relay(aiohttp_client, make_settings, tmp_path) -> Client:
    settings = make_settings(relay_tenants_file=tenants_file(tmp_path, TWO_TENANTS))
    return await aiohttp_client(create_app(settings, run_worker=False))


async def post(client: Client, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    response = await client.post(path, data=body, headers=headers)
    return response.status, await response.json()


async def oauth_token(client: Client, client_id: str, client_secret: str) -> tuple[int, Any]:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
    response = await client.post("/oauth/token", data=form)
    return response.status, await response.json()


async def stored_webhooks(client: Client) -> list[WebhookSummary]:
    return await client.app[STORE].list_webhooks(WebhookFilter())


async def test_each_tenants_webhook_and_delivery_are_stored_under_that_tenant(relay):
    _, token = await oauth_token(relay, GLOBEX_CLIENT_ID, GLOBEX_CLIENT_SECRETS[0])

    with capture_logs() as logs:
        acme = await post(relay, "/webhooks/bringg/acme", bearer(ACME_TOKENS[0]), rating_body(ACME_MERCHANT))
        globex = await post(
            relay, "/webhooks/bringg/globex", bearer(token["access_token"]), rating_body(GLOBEX_MERCHANT)
        )

    assert (acme[0], acme[1]["status"], globex[0], globex[1]["status"]) == (202, "accepted", 202, "accepted")
    webhooks = {webhook.id: webhook.tenant for webhook in await stored_webhooks(relay)}
    assert webhooks == {acme[1]["id"]: "acme", globex[1]["id"]: "globex"}
    deliveries = await relay.app[STORE].list_deliveries(DeliveryFilter())
    assert {d.id: (d.tenant, d.merchant_id) for d in deliveries} == {
        acme[1]["delivery_id"]: ("acme", ACME_MERCHANT),
        globex[1]["delivery_id"]: ("globex", GLOBEX_MERCHANT),
    }
    accepted = [(line["tenant"], line["auth"]) for line in logs if line["event"] == "webhook.accepted"]
    assert accepted == [("acme", "token"), ("globex", "oauth")]
    metrics = await (await relay.get("/metrics")).text()
    for tenant in ("acme", "globex"):
        assert f'relay_webhooks_received_total{{outcome="accepted",tenant="{tenant}"}} 1.0' in metrics


async def test_a_credential_of_one_tenant_is_refused_on_anothers_url(relay):
    _, token = await oauth_token(relay, GLOBEX_CLIENT_ID, GLOBEX_CLIENT_SECRETS[0])
    crossings = [
        ("globex", bearer(ACME_TOKENS[0])),
        ("globex", bearer(ACME_TOKENS[1])),
        ("globex", bearer(signed_jwt(ACME_JWT_SECRET))),
        ("acme", bearer(signed_jwt(GLOBEX_JWT_SECRET))),
        ("acme", bearer(token["access_token"])),
    ]

    with capture_logs() as logs:
        statuses = [
            (
                await relay.post(
                    f"/webhooks/bringg/{tenant}", data=rating_body(ACME_MERCHANT), headers=headers
                )
            ).status
            for tenant, headers in crossings
        ]

    assert statuses == [401] * len(crossings)
    assert [line["tenant"] for line in logs if line["event"] == "webhook.unauthorized"] == [
        tenant for tenant, _ in crossings
    ]
    assert await stored_webhooks(relay) == []
    metrics = await (await relay.get("/metrics")).text()
    assert 'relay_webhooks_received_total{outcome="unauthorized",tenant="globex"} 3.0' in metrics


async def test_the_oauth_client_id_picks_the_tenant_and_its_token_opens_that_tenants_url_alone(relay):
    refused = [
        await oauth_token(relay, GLOBEX_CLIENT_ID, "globex-oauth-wrong-4e2a9c7d1b0f8365"),
        await oauth_token(relay, "acme-bringg", GLOBEX_CLIENT_SECRETS[0]),
    ]
    status, token = await oauth_token(relay, GLOBEX_CLIENT_ID, GLOBEX_CLIENT_SECRETS[1])

    assert refused == [(401, {"error": "invalid_client"})] * 2
    assert status == 200
    headers = bearer(token["access_token"])
    assert (
        await relay.post("/webhooks/bringg/globex", data=rating_body(GLOBEX_MERCHANT), headers=headers)
    ).status == 202
    assert (
        await relay.post("/webhooks/bringg/acme", data=rating_body(ACME_MERCHANT), headers=headers)
    ).status == 401


async def test_both_secrets_of_a_kind_are_accepted_while_one_is_rotated(relay):
    _, old = await oauth_token(relay, GLOBEX_CLIENT_ID, GLOBEX_CLIENT_SECRETS[0])
    _, new = await oauth_token(relay, GLOBEX_CLIENT_ID, GLOBEX_CLIENT_SECRETS[1])
    sent = [
        ("acme", bearer(ACME_TOKENS[0]), ACME_MERCHANT),
        ("acme", bearer(ACME_TOKENS[1]), ACME_MERCHANT),
        ("globex", bearer(old["access_token"]), GLOBEX_MERCHANT),
        ("globex", bearer(new["access_token"]), GLOBEX_MERCHANT),
    ]

    answers = [
        await post(relay, f"/webhooks/bringg/{tenant}", headers, rating_body(merchant, rating_id=n))
        for n, (tenant, headers, merchant) in enumerate(sent, start=1)
    ]

    assert [(status, answer["status"]) for status, answer in answers] == [(202, "accepted")] * 4


async def test_an_unknown_tenant_is_404_and_nothing_is_stored(relay):
    with capture_logs() as logs:
        status, answer = await post(
            relay, "/webhooks/bringg/initech", bearer(ACME_TOKENS[0]), rating_body(ACME_MERCHANT)
        )

    assert (status, answer) == (404, {"error": "unknown tenant"})
    assert [(line["event"], line["tenant"]) for line in logs] == [("webhook.unknown_tenant", "initech")]
    assert await stored_webhooks(relay) == []


async def test_a_merchant_not_of_the_tenant_is_quarantined_with_the_reason_and_never_forwarded(relay):
    status, answer = await post(
        relay, "/webhooks/bringg/acme", bearer(ACME_TOKENS[0]), rating_body(GLOBEX_MERCHANT)
    )

    assert (status, answer["status"], answer["errors"]) == (202, "quarantined", [FOREIGN_REASON])
    webhook = await relay.app[STORE].get_webhook(answer["id"])
    assert webhook is not None
    assert (webhook.tenant, webhook.merchant_id, webhook.errors) == (
        "acme",
        GLOBEX_MERCHANT,
        [FOREIGN_REASON],
    )
    assert await relay.app[STORE].list_deliveries(DeliveryFilter()) == []


async def test_reprocessing_keeps_a_foreign_merchants_webhook_quarantined(
    aiohttp_client, make_settings, tmp_path
):
    settings = make_settings(
        relay_tenants_file=tenants_file(tmp_path, TWO_TENANTS),
        relay_admin_token="admin-token-0123456789abcdef",
    )
    relay = await aiohttp_client(create_app(settings, run_worker=False))
    _, held = await post(relay, "/webhooks/bringg/acme", bearer(ACME_TOKENS[0]), rating_body(GLOBEX_MERCHANT))

    status, answer = await post(
        relay, f"/admin/webhooks/{held['id']}/reprocess", bearer("admin-token-0123456789abcdef"), b""
    )

    assert (status, answer) == (200, {"status": "quarantined", "errors": [FOREIGN_REASON]})
    assert await relay.app[STORE].list_deliveries(DeliveryFilter()) == []


async def test_the_bare_url_without_a_default_tenant_is_404_naming_the_per_tenant_form(relay):
    status, answer = await post(relay, "/webhooks/bringg", bearer(ACME_TOKENS[0]), rating_body(ACME_MERCHANT))

    assert status == 404
    assert answer["error"] == "unknown tenant"
    assert "/webhooks/bringg/{tenant}" in answer["detail"]
    assert await stored_webhooks(relay) == []


async def test_the_bare_url_is_the_files_tenant_named_default(aiohttp_client, make_settings, tmp_path):
    path = tenants_file(tmp_path, TWO_TENANTS + DEFAULT_TENANT)
    relay = await aiohttp_client(create_app(make_settings(relay_tenants_file=path), run_worker=False))
    own = bearer("default-tenant-token-1c6f0e8a2d4b9753")

    bare = await post(relay, "/webhooks/bringg", own, rating_body(3001, rating_id=1))
    named = await post(relay, "/webhooks/bringg/default", own, rating_body(3001, rating_id=2))
    environments = await relay.post("/webhooks/bringg", data=rating_body(3001, rating_id=3), headers=AUTH)
    acmes = await relay.post(
        "/webhooks/bringg", data=rating_body(3001, rating_id=4), headers=bearer(ACME_TOKENS[0])
    )

    assert [bare[1]["status"], named[1]["status"]] == ["accepted", "accepted"]
    # With a file, only the file's tenants exist: the environment's credential is no tenant's.
    assert (environments.status, acmes.status) == (401, 401)
    assert {webhook.tenant for webhook in await stored_webhooks(relay)} == {"default"}


async def test_without_a_file_the_implicit_tenant_answers_on_both_of_its_urls(aiohttp_client, make_settings):
    relay = await aiohttp_client(create_app(make_settings(), run_worker=False))

    bare = await post(relay, "/webhooks/bringg", AUTH, rating_body(ACME_MERCHANT, rating_id=1))
    named = await post(relay, "/webhooks/bringg/default", AUTH, rating_body(GLOBEX_MERCHANT, rating_id=2))
    other = await post(relay, "/webhooks/bringg/acme", AUTH, rating_body(ACME_MERCHANT, rating_id=3))

    # Any merchant, as the relay has always taken.
    assert [bare[1]["status"], named[1]["status"]] == ["accepted", "accepted"]
    assert other == (404, {"error": "unknown tenant"})
    assert {webhook.tenant for webhook in await stored_webhooks(relay)} == {"default"}


async def test_each_request_reads_the_tenants_in_force(relay, make_settings, tmp_path):
    # What a reload does: a new registry replaces the old whole, and the next request sees it.
    path = tenants_file(tmp_path, DEFAULT_TENANT)
    relay.app[TENANTS].replace(
        load_tenants(make_settings(relay_tenants_file=path), serves_webhooks=True, runs_worker=False)
    )

    gone = await relay.post(
        "/webhooks/bringg/acme", data=rating_body(ACME_MERCHANT), headers=bearer(ACME_TOKENS[0])
    )
    status, _ = await post(
        relay, "/webhooks/bringg", bearer("default-tenant-token-1c6f0e8a2d4b9753"), rating_body(3001)
    )

    assert (gone.status, status) == (404, 202)


async def test_an_oauth_token_lasts_as_long_as_the_client_secret_it_was_issued_for(
    relay, make_settings, tmp_path
):
    _, old = await oauth_token(relay, GLOBEX_CLIENT_ID, GLOBEX_CLIENT_SECRETS[0])
    _, new = await oauth_token(relay, GLOBEX_CLIENT_ID, GLOBEX_CLIENT_SECRETS[1])
    # The rotation's last step: the old secret leaves the file (and the relay reloads it).
    rotated = TWO_TENANTS.replace(
        json.dumps(list(GLOBEX_CLIENT_SECRETS)), json.dumps([GLOBEX_CLIENT_SECRETS[1]])
    )
    settings = make_settings(relay_tenants_file=tenants_file(tmp_path, rotated))
    relay.app[TENANTS].replace(load_tenants(settings, serves_webhooks=True, runs_worker=False))

    body = rating_body(GLOBEX_MERCHANT)
    gone = await relay.post("/webhooks/bringg/globex", data=body, headers=bearer(old["access_token"]))
    kept = await relay.post("/webhooks/bringg/globex", data=body, headers=bearer(new["access_token"]))

    assert (gone.status, kept.status) == (401, 202)
