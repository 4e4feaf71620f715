"""The OpenAPI document: well formed, true to the app's routes, and every real answer of the app fits it."""

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from aiohttp import ClientResponse, ClientSession, TCPConnector, encode_basic_auth, web
from aiohttp.test_utils import TestClient

# jsonschema ships no type information; Draft202012Validator is all this module takes from it.
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from relay.app import create_app
from relay.keys import STORE
from relay.ops.openapi import DOCUMENT
from relay.ops.openapi import routes as openapi_routes
from relay.pages import PREFIX as CONSOLE
from relay.settings import Settings
from relay.store.api import StoreUnavailable
from relay.throttle import FAILURES_ALLOWED
from tests.conftest import AUTH, WEBHOOK_TOKEN, fixture_bytes
from tests.forwarding import rating_webhook

SPEC: dict[str, Any] = json.loads(DOCUMENT)
BASE = "urn:relay:openapi"
REGISTRY: Registry[Any] = Registry().with_resource(BASE, DRAFT202012.create_resource(SPEC))
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

ADMIN_TOKEN = "admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLIENT_ID = "bringg-client"
CLIENT_SECRET = "bringg-client-secret-0123456789abcdef"
JWT_SECRET = "bringg-shared-jwt-secret-of-32-bytes!"
MAX_BODY = 2048
TOO_LARGE = b"x" * (MAX_BODY + 1)
FIXTURE = fixture_bytes("bringg/rating_submitted.json")
MISSING = 999_999

Answers = dict[tuple[str, str], set[int]]


# The document as JSON -----------------------------------------------------------------------------


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def node_at(pointer: str) -> Any:
    """The document's node at a JSON pointer such as `/components/schemas/Link`."""
    node: Any = SPEC
    for segment in pointer.split("/")[1:]:
        key = segment.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def resolved(pointer: str) -> tuple[dict[str, Any], str]:
    """A response, header or parameter object behind any Reference Objects, and where it really is."""
    node = node_at(pointer)
    while "$ref" in node:
        pointer = node["$ref"].removeprefix("#")
        node = node_at(pointer)
    return node, pointer


def schema_errors(instance: Any, pointer: str) -> list[str]:
    """Why `instance` fails the schema at `pointer`; its $refs resolve within the document."""
    validator = Draft202012Validator({"$ref": f"{BASE}#{quote(pointer, safe='/~')}"}, registry=REGISTRY)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def walk(node: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    yield pointer, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{pointer}/{escape(key)}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{pointer}/{index}")


def media_type(value: str) -> tuple[str, dict[str, str]]:
    mime, *parameters = value.split(";")
    pairs = (part.split("=", 1) for part in parameters if "=" in part)
    return mime.strip().lower(), {name.strip().lower(): given.strip() for name, given in pairs}


def path_template(raw_path: str) -> str:
    """The document's path that a request path matches; a literal segment wins over a template."""
    segments = raw_path.split("/")

    def matches(template: str) -> bool:
        parts = template.split("/")
        return len(parts) == len(segments) and all(
            part == segment or (part.startswith("{") and segment != "")
            for part, segment in zip(parts, segments, strict=True)
        )

    candidates = [template for template in SPEC["paths"] if matches(template)]
    assert candidates, f"{raw_path} matches no path of the document"
    return min(candidates, key=lambda template: template.count("{"))


class Contract:
    """Checks real answers against the document, and remembers which operation answered which status."""

    def __init__(self) -> None:
        self.seen: Answers = {}

    async def check(self, response: ClientResponse) -> Any:
        """The answer's body (parsed JSON, text, or None when it has none), once it fits the document."""
        method, path = response.method.lower(), path_template(response.url.raw_path)
        operation = SPEC["paths"][path].get(method)
        assert operation is not None, f"{method.upper()} {path} is not in the document"
        status = str(response.status)
        assert status in operation["responses"], f"{method.upper()} {path} answered {status}, not documented"
        answer, where = resolved(f"/paths/{escape(path)}/{method}/responses/{status}")
        for name in answer.get("headers", {}):
            header, header_at = resolved(f"{where}/headers/{escape(name)}")
            value = response.headers.get(name)
            assert value is not None or not header.get("required"), f"{path} {status}: no {name} header"
            if value is not None:
                typed = int(value) if header["schema"].get("type") == "integer" else value
                assert schema_errors(typed, f"{header_at}/schema") == [], f"{path} {status}: {name}"
        body = await response.read()
        if "content" not in answer:
            assert body == b"", f"{path} {status} documents no body"
            data = None
        else:
            data = self._body(answer, where, response, body)
        self.seen.setdefault((method, path), set()).add(response.status)
        return data

    def _body(self, answer: dict[str, Any], where: str, response: ClientResponse, body: bytes) -> Any:
        mime, parameters = media_type(response.headers.get("Content-Type", ""))
        documented = [
            key
            for key in answer["content"]
            if media_type(key)[0] == mime and media_type(key)[1].items() <= parameters.items()
        ]
        assert documented, f"{response.url.path} {response.status}: {mime} is not documented"
        data: Any = json.loads(body) if mime.endswith("json") else body.decode()
        errors = schema_errors(data, f"{where}/content/{escape(documented[0])}/schema")
        assert errors == [], f"{response.url.path} {response.status}: {errors}"
        if mime == "application/problem+json":
            assert data["status"] == response.status
        return data


# The app ------------------------------------------------------------------------------------------


def relay_app(make_settings: Callable[..., Settings], **overrides: Any) -> web.Application:
    """The relay with every optional part on: admin API, all three webhook methods, a small body limit."""
    settings: dict[str, Any] = {
        "relay_admin_token": ADMIN_TOKEN,
        "bringg_oauth_client_id": CLIENT_ID,
        "bringg_oauth_client_secret": CLIENT_SECRET,
        "bringg_jwt_secret": JWT_SECRET,
        "relay_max_body_bytes": MAX_BODY,
        "relay_body_timeout_s": 0.3,
        **overrides,
    }
    app = create_app(make_settings(**settings), run_worker=False)
    # Until relay.app mounts the document itself; afterwards adding it again would be refused.
    if not any(resource.canonical == "/openapi.json" for resource in app.router.resources()):
        app.router.add_routes(openapi_routes)
    return app


@pytest.fixture
async def relay(aiohttp_client, make_settings) -> TestClient[web.Request, web.Application]:
    client: TestClient[web.Request, web.Application] = await aiohttp_client(relay_app(make_settings))
    return client


def app_operations(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, path template) the app routes, sub-applications included."""
    found: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        info = resource.get_info()
        if "app" in info:
            # The console's pages are HTML for people (docs/operations.md section 10), not this API.
            if info["prefix"] != CONSOLE:
                # A mounted sub-application's routes already carry its prefix (/admin).
                found |= app_operations(info["app"])
            continue
        for route in resource:
            # aiohttp adds a HEAD beside every GET; the document describes the GET.
            if route.method != "HEAD":
                found.add((route.method.lower(), resource.canonical))
    return found


async def stored(relay, body: bytes, headers: dict[str, str] = AUTH) -> Any:
    """Post a webhook for the scenario's sake (its own answers are checked in the webhook scenario)."""
    response = await relay.post("/webhooks/bringg", data=body, headers=headers)
    assert response.status in (200, 202)
    return await response.json()


# The document itself ------------------------------------------------------------------------------


def test_document_is_openapi_3_1_with_valid_schemas_and_every_ref_resolving():
    assert SPEC["openapi"] == "3.1.0"
    assert SPEC["info"]["title"] and SPEC["info"]["version"]
    schemes = SPEC["components"]["securitySchemes"]
    operation_ids = []
    for method, path, operation in operations():
        assert operation["responses"], f"{method} {path} has no responses"
        assert all(re.fullmatch(r"[1-5]\d\d", status) for status in operation["responses"])
        operation_ids.append(operation["operationId"])
        parameters = [
            resolved(f"/paths/{escape(path)}/{where}parameters/{index}")[0]
            for where, declared in (("", SPEC["paths"][path]), (f"{method}/", operation))
            for index in range(len(declared.get("parameters", [])))
        ]
        in_path = {parameter["name"] for parameter in parameters if parameter["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", path)), f"{method} {path}: path parameters"
        for requirement in operation.get("security", []):
            assert set(requirement) <= set(schemes), f"{method} {path}: unknown security scheme"
    assert len(operation_ids) == len(set(operation_ids))
    refs = [
        node["$ref"] for _, node in walk(SPEC) if isinstance(node, dict) and isinstance(node.get("$ref"), str)
    ]
    mappings = [
        target
        for _, node in walk(SPEC)
        if isinstance(node, dict) and isinstance(node.get("discriminator"), dict)
        for target in node["discriminator"].get("mapping", {}).values()
    ]
    for ref in refs + mappings:
        assert ref.startswith("#/"), ref
        node_at(ref.removeprefix("#"))  # raises KeyError when the target is missing
    schemas = [*SPEC["components"]["schemas"].values()]
    schemas += [
        node["schema"] for _, node in walk(SPEC["paths"]) if isinstance(node, dict) and "schema" in node
    ]
    for schema in schemas:
        Draft202012Validator.check_schema(schema)


def test_webhook_takes_any_of_three_schemes_and_the_admin_api_a_bearer_token():
    schemes = SPEC["components"]["securitySchemes"]

    assert SPEC["paths"]["/webhooks/bringg"]["post"]["security"] == [
        {"bringgToken": []},
        {"bringgJwt": []},
        {"bringgOAuth": []},
    ]
    assert (schemes["bringgToken"]["type"], schemes["bringgToken"]["in"]) == ("apiKey", "header")
    assert (schemes["bringgJwt"]["scheme"], schemes["bringgJwt"]["bearerFormat"]) == ("bearer", "JWT")
    assert schemes["bringgOAuth"]["flows"] == {
        "clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {}}
    }
    assert (schemes["adminToken"]["type"], schemes["adminToken"]["scheme"]) == ("http", "bearer")
    for method, path, operation in operations():
        expected: list[dict[str, list[str]]] | None = (
            [{"adminToken": []}] if path.startswith("/admin/") else None
        )
        if path not in ("/webhooks/bringg", "/webhooks/bringg/{tenant}", "/oauth/token"):
            assert operation.get("security") == expected, f"{method} {path}"


def test_every_route_of_the_app_is_documented_and_every_documented_one_exists(make_settings):
    app = relay_app(make_settings)

    documented = {(method, path) for method, path, _ in operations()}

    assert app_operations(app) == documented


# Real answers -------------------------------------------------------------------------------------


async def trickle(body: bytes) -> AsyncIterator[bytes]:
    """A body that stalls past the relay's body timeout."""
    yield body[:10]
    await asyncio.sleep(0.8)
    yield body[10:]


WEBHOOK_ANSWERS: Answers = {("post", "/webhooks/bringg"): {200, 202, 401, 408, 413, 503}}


async def test_webhook_answers_fit_the_document(relay, monkeypatch):
    contract = Contract()
    signed = jwt.encode({"sub": "bringg", "exp": int(time.time()) + 300}, JWT_SECRET, algorithm="HS256")

    accepted = await contract.check(await relay.post("/webhooks/bringg", data=FIXTURE, headers=AUTH))
    duplicate = await contract.check(await relay.post("/webhooks/bringg", data=FIXTURE, headers=AUTH))
    by_jwt = await contract.check(
        await relay.post(
            "/webhooks/bringg", data=rating_webhook(8, "ORD-8"), headers={"Authorization": f"Bearer {signed}"}
        )
    )
    other = b'{"webhook_type": "order_done", "merchant_id": 4}'
    ignored = await contract.check(await relay.post("/webhooks/bringg", data=other, headers=AUTH))
    unusable = await contract.check(await relay.post("/webhooks/bringg", data=b"not json", headers=AUTH))
    newer, older = (rating_webhook(10, "ORD-10", updated_at=f"2026-11-0{day}T08:00:00Z") for day in (3, 2))
    await contract.check(await relay.post("/webhooks/bringg", data=newer, headers=AUTH))
    outranked = await contract.check(await relay.post("/webhooks/bringg", data=older, headers=AUTH))
    await contract.check(await relay.post("/webhooks/bringg", data=FIXTURE))
    await contract.check(await relay.post("/webhooks/bringg", data=TOO_LARGE, headers=AUTH))
    await contract.check(await relay.post("/webhooks/bringg", data=trickle(FIXTURE), headers=AUTH))

    async def refuse(inbound: object, *, recheck_before: object) -> None:
        raise StoreUnavailable("database or disk is full")

    monkeypatch.setattr(relay.app[STORE], "record_webhook", refuse)
    unstored = await relay.post("/webhooks/bringg", data=rating_webhook(9, "ORD-9"), headers=AUTH)
    await contract.check(unstored)

    assert [answer["status"] for answer in (accepted, duplicate, by_jwt, ignored, unusable, outranked)] == [
        "accepted",
        "duplicate",
        "accepted",
        "ignored",
        "quarantined",
        "superseded",
    ]
    assert unstored.status == 503
    assert contract.seen == WEBHOOK_ANSWERS


TENANT_WEBHOOK_ANSWERS: Answers = {
    ("post", "/webhooks/bringg/{tenant}"): {200, 202, 401, 404, 408, 413, 503},
    ("post", "/webhooks/bringg"): {404},
}


async def test_tenant_webhook_answers_fit_the_document(aiohttp_client, make_settings, tmp_path, monkeypatch):
    tenants = tmp_path / "tenants.toml"
    tenants.write_text(
        f'[tenants.acme]\nmerchants = [1]\n[tenants.acme.bringg]\nwebhook_tokens = ["{WEBHOOK_TOKEN}"]\n'
    )
    tenants.chmod(0o600)
    relay = await aiohttp_client(relay_app(make_settings, relay_tenants_file=tenants))
    contract = Contract()

    accepted = await contract.check(await relay.post("/webhooks/bringg/acme", data=FIXTURE, headers=AUTH))
    duplicate = await contract.check(await relay.post("/webhooks/bringg/acme", data=FIXTURE, headers=AUTH))
    await contract.check(await relay.post("/webhooks/bringg/acme", data=FIXTURE))
    unknown = await contract.check(await relay.post("/webhooks/bringg/initech", data=FIXTURE, headers=AUTH))
    bare = await contract.check(await relay.post("/webhooks/bringg", data=FIXTURE, headers=AUTH))
    await contract.check(await relay.post("/webhooks/bringg/acme", data=TOO_LARGE, headers=AUTH))
    await contract.check(await relay.post("/webhooks/bringg/acme", data=trickle(FIXTURE), headers=AUTH))

    async def refuse(inbound: object, *, recheck_before: object) -> None:
        raise StoreUnavailable("database or disk is full")

    monkeypatch.setattr(relay.app[STORE], "record_webhook", refuse)
    await contract.check(
        await relay.post("/webhooks/bringg/acme", data=rating_webhook(9, "ORD-9"), headers=AUTH)
    )

    assert [accepted["status"], duplicate["status"]] == ["accepted", "duplicate"]
    assert unknown == {"error": "unknown tenant"}
    assert "/webhooks/bringg/{tenant}" in bare["detail"]
    assert contract.seen == TENANT_WEBHOOK_ANSWERS


OAUTH_ANSWERS: Answers = {
    ("post", "/oauth/token"): {200, 400, 401, 404, 408, 413, 429},
    ("post", "/webhooks/bringg"): {202},
}


async def test_oauth_token_answers_fit_the_document_and_the_token_opens_the_webhook(
    relay, aiohttp_client, make_settings
):
    contract = Contract()
    credentials = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    form = {"grant_type": "client_credentials", **credentials}

    by_form = await contract.check(await relay.post("/oauth/token", data=form))
    await contract.check(await relay.post("/oauth/token", json=form))
    await contract.check(
        await relay.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": encode_basic_auth(CLIENT_ID, CLIENT_SECRET)},
        )
    )
    wrong_grant = await contract.check(
        await relay.post("/oauth/token", data={**credentials, "grant_type": "password"})
    )
    wrong_client = await contract.check(
        await relay.post("/oauth/token", data={**form, "client_secret": "not-the-secret"})
    )
    await contract.check(await relay.post("/oauth/token", data={**form, "padding": TOO_LARGE.decode()}))
    in_url = await contract.check(await relay.post("/oauth/token", params=credentials, data=form))
    wrong = {**form, "client_secret": "still-not-the-secret"}
    guesses = [
        await contract.check(await relay.post("/oauth/token", data=wrong)) for _ in range(FAILURES_ALLOWED)
    ]
    form_bytes = "&".join(f"{name}={value}" for name, value in form.items()).encode()
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    await contract.check(await relay.post("/oauth/token", data=trickle(form_bytes), headers=form_type))
    token = {"Authorization": f"Bearer {by_form['access_token']}"}
    webhook = await contract.check(await relay.post("/webhooks/bringg", data=FIXTURE, headers=token))
    without_oauth = await aiohttp_client(
        relay_app(make_settings, bringg_oauth_client_id=None, bringg_oauth_client_secret=None)
    )
    await contract.check(await without_oauth.post("/oauth/token", data=form))

    assert (wrong_grant, wrong_client) == ({"error": "unsupported_grant_type"}, {"error": "invalid_client"})
    assert in_url["error"] == "invalid_request"
    assert guesses[-1]["status"] == 429  # the wrong secret above and these: one past the limit
    assert webhook["status"] == "accepted"
    assert contract.seen == OAUTH_ANSWERS


async def test_a_form_part_with_a_malformed_header_carries_no_credentials_and_is_no_server_error(relay):
    # Found by the contract fuzzer: a control character in a part's name made aiohttp raise, and a 500.
    boundary = "b0undary"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="\x01"\r\n\r\nx\r\n--{boundary}--\r\n'

    response = await relay.post(
        "/oauth/token",
        data=body.encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )

    assert (response.status, await response.json()) == (400, {"error": "unsupported_grant_type"})


OPS_ANSWERS: Answers = {
    ("get", "/healthz"): {200},
    ("get", "/readyz"): {200, 400, 503},
    ("get", "/metrics"): {200},
    ("get", "/openapi.json"): {200},
}


async def test_health_readiness_metrics_and_the_document_itself_fit_the_document(relay):
    contract = Contract()

    await contract.check(await relay.get("/healthz"))
    intake = await contract.check(await relay.get("/readyz", params={"scope": "intake"}))
    # No worker runs in this test, so the full check finds none that ever beat.
    unready = await contract.check(await relay.get("/readyz"))
    # A mistyped scope is neither the intake check nor the full one.
    mistyped = await contract.check(await relay.get("/readyz", params={"scope": "AAA"}))
    metrics = await contract.check(await relay.get("/metrics"))
    served = await contract.check(await relay.get("/openapi.json"))

    assert intake == {"status": "ready"}
    assert any("worker" in problem for problem in unready["problems"])
    assert mistyped["field"] == "scope"
    assert 'relay_webhooks_received_total{outcome="accepted",tenant="default"}' in metrics
    assert served == SPEC
    assert contract.seen == OPS_ANSWERS


DELIVERY_ANSWERS: Answers = {
    ("get", "/admin/deliveries"): {200, 400},
    ("get", "/admin/deliveries/{delivery_id}"): {200, 404},
    ("post", "/admin/deliveries/{delivery_id}/replay"): {200, 404, 409},
    ("post", "/admin/deliveries/{delivery_id}/cancel"): {200, 404, 409},
    ("post", "/admin/deliveries/replay"): {200, 400, 413},
}


async def test_admin_delivery_answers_fit_the_document(relay):
    contract = Contract()
    first = await stored(relay, rating_webhook(1, "ORD-1"))
    older = await stored(relay, rating_webhook(2, "ORD-2", updated_at="2026-11-20T10:00:00Z"))
    await stored(relay, rating_webhook(2, "ORD-2", updated_at="2026-11-20T11:00:00Z"))
    pending, superseded = first["delivery_id"], older["delivery_id"]

    async def admin(method: str, path: str, **kwargs: Any) -> Any:
        return await contract.check(await relay.request(method, path, headers=ADMIN, **kwargs))

    page = await admin("GET", "/admin/deliveries", params={"limit": 1})
    rest = await admin("GET", "/admin/deliveries", params={"limit": 1, "cursor": page["next_cursor"]})
    await admin("GET", "/admin/deliveries", params={"state": "lost"})
    detail = await admin("GET", f"/admin/deliveries/{pending}")
    await admin("GET", f"/admin/deliveries/{MISSING}")
    cancelled = await admin("POST", f"/admin/deliveries/{pending}/cancel")
    replayed = await admin("POST", f"/admin/deliveries/{pending}/replay")
    not_replayable = await admin("POST", f"/admin/deliveries/{pending}/replay")
    not_cancellable = await admin("POST", f"/admin/deliveries/{superseded}/cancel")
    await admin("POST", f"/admin/deliveries/{MISSING}/replay")
    await admin("POST", f"/admin/deliveries/{MISSING}/cancel")
    await admin("POST", f"/admin/deliveries/{pending}/cancel")
    by_query = await admin("POST", "/admin/deliveries/replay", params={"state": "dead"})
    by_body = await admin(
        "POST", "/admin/deliveries/replay", json={"state": ["dead", "unmatched"], "merchant_id": 1}
    )
    await admin("POST", "/admin/deliveries/replay", json={"state": "pending"})
    await admin("POST", "/admin/deliveries/replay", data=TOO_LARGE)

    assert page["next_cursor"] is not None and rest["items"] != page["items"]
    assert detail["webhook"]["id"] == first["id"]
    assert (cancelled["delivery"]["state"], replayed["delivery"]["state"]) == ("dead", "pending")
    assert (not_replayable["state"], not_cancellable["state"]) == ("pending", "superseded")
    assert (by_query["replayed"], by_body["replayed"]) == (1, 0)
    assert contract.seen == DELIVERY_ANSWERS


STORED_WEBHOOK_ANSWERS: Answers = {
    ("get", "/admin/webhooks"): {200, 400},
    ("get", "/admin/webhooks/{webhook_id}"): {200, 404},
    ("post", "/admin/webhooks/{webhook_id}/reprocess"): {200, 404, 409},
}


async def test_admin_webhook_answers_fit_the_document(relay):
    contract = Contract()
    accepted = await stored(relay, FIXTURE)
    binary = await stored(relay, b"\xff\xfe not utf-8")
    await stored(relay, b'{"webhook_type": "order_done", "merchant_id": 4}')

    async def admin(method: str, path: str, **kwargs: Any) -> Any:
        return await contract.check(await relay.request(method, path, headers=ADMIN, **kwargs))

    listed = await admin("GET", "/admin/webhooks")
    quarantined = await admin("GET", "/admin/webhooks", params={"status": "quarantined"})
    await admin("GET", "/admin/webhooks", params={"status": "lost"})
    text = await admin("GET", f"/admin/webhooks/{accepted['id']}")
    raw = await admin("GET", f"/admin/webhooks/{binary['id']}")
    await admin("GET", f"/admin/webhooks/{MISSING}")
    again = await admin("POST", f"/admin/webhooks/{binary['id']}/reprocess")
    refused = await admin("POST", f"/admin/webhooks/{accepted['id']}/reprocess")
    await admin("POST", f"/admin/webhooks/{MISSING}/reprocess")

    assert len(listed["items"]) == 3
    assert [item["id"] for item in quarantined["items"]] == [binary["id"]]
    assert (text["body_encoding"], raw["body_encoding"]) == ("utf-8", "base64")
    assert (again["status"], refused["webhook_status"]) == ("quarantined", "accepted")
    assert contract.seen == STORED_WEBHOOK_ANSWERS


DISMISS_ANSWERS: Answers = {
    ("post", "/admin/webhooks/{webhook_id}/dismiss"): {200, 400, 404, 409, 413},
    ("get", "/admin/webhooks"): {200},
    ("get", "/admin/webhooks/{webhook_id}"): {200},
    ("post", "/admin/webhooks/{webhook_id}/reprocess"): {409},
    ("get", "/admin/stats"): {200},
}


async def test_dismiss_answers_fit_the_document(relay):
    contract = Contract()
    accepted = await stored(relay, FIXTURE)
    held = await stored(relay, b"\xff\xfe not utf-8")

    async def admin(method: str, path: str, **kwargs: Any) -> Any:
        return await contract.check(await relay.request(method, path, headers=ADMIN, **kwargs))

    dismissed = await admin("POST", f"/admin/webhooks/{held['id']}/dismiss", json={"reason": "spam"})
    await admin("POST", f"/admin/webhooks/{held['id']}/dismiss", json={"reason": ""})
    await admin("POST", f"/admin/webhooks/{held['id']}/dismiss", data=TOO_LARGE)
    again = await admin("POST", f"/admin/webhooks/{held['id']}/dismiss", json={"reason": "spam"})
    refused = await admin("POST", f"/admin/webhooks/{accepted['id']}/dismiss", json={"reason": "spam"})
    await admin("POST", f"/admin/webhooks/{MISSING}/dismiss", json={"reason": "spam"})
    listed = await admin("GET", "/admin/webhooks", params={"status": "dismissed"})
    shown = await admin("GET", f"/admin/webhooks/{held['id']}")
    not_reprocessed = await admin("POST", f"/admin/webhooks/{held['id']}/reprocess")
    stats = await admin("GET", "/admin/stats")

    assert (dismissed["status"], dismissed["dismissed_reason"]) == ("dismissed", "spam")
    assert (again["webhook_status"], refused["webhook_status"]) == ("dismissed", "accepted")
    assert [item["id"] for item in listed["items"]] == [held["id"]] and shown["status"] == "dismissed"
    assert not_reprocessed["webhook_status"] == "dismissed"
    assert (stats["webhooks"]["quarantined"], stats["webhooks"]["dismissed"]) == (0, 1)
    assert contract.seen == DISMISS_ANSWERS


LINK_ANSWERS: Answers = {
    ("get", "/admin/links"): {200, 400, 404},
    ("post", "/admin/links"): {200, 400, 409, 413},
    ("put", "/admin/links/{merchant_id}/{external_id}"): {200, 400, 404, 409, 413},
    ("delete", "/admin/links/{merchant_id}/{external_id}"): {204, 400, 404},
}


async def test_admin_link_answers_fit_the_document(relay):
    contract = Contract()
    csv = {**ADMIN, "Content-Type": "text/csv"}

    async def admin(method: str, path: str, headers: dict[str, str] = ADMIN, **kwargs: Any) -> Any:
        return await contract.check(await relay.request(method, path, headers=headers, **kwargs))

    saved = await admin("PUT", "/admin/links/3/ORD%207%2FA", json={"inquiry_id": 901})
    await admin("PUT", "/admin/links/3/ORD-1", json={"inquiry_id": "901"})
    await admin("PUT", "/admin/links/99999999999999999999/ORD-1", json={"inquiry_id": 901})
    await admin("PUT", "/admin/links/3/ORD-1", data=TOO_LARGE)
    imported = await admin(
        "POST", "/admin/links", json=[{"merchant_id": 3, "external_id": "ORD-2", "inquiry_id": 902}]
    )
    from_csv = await admin(
        "POST",
        "/admin/links",
        headers=csv,
        data=b"merchant_id,external_id,inquiry_id\n3,ORD-3,903\n3,ORD-4,x\n",
    )
    await admin(
        "POST", "/admin/links", json=[{"merchant_id": "3", "external_id": "ORD-5", "inquiry_id": 905}]
    )
    await admin("POST", "/admin/links", headers=csv, data=TOO_LARGE)
    headerless = await admin("POST", "/admin/links", headers=csv, data=b"3,ORD-6,906\n")
    page = await admin("GET", "/admin/links", params={"limit": 1})
    await admin("GET", "/admin/links", params={"cursor": "not-a-cursor"})
    # Without a tenants file the one tenant is `default`: a link held to another is refused.
    await admin("GET", "/admin/links", params={"tenant": "acme"})
    await admin("PUT", "/admin/links/3/ORD-1", params={"tenant": "acme"}, json={"inquiry_id": 901})
    await admin(
        "POST",
        "/admin/links",
        json=[{"merchant_id": 3, "external_id": "ORD-2", "inquiry_id": 9, "tenant": "acme"}],
    )
    await admin("DELETE", "/admin/links/3/ORD-2")
    await admin("DELETE", "/admin/links/3/ORD-2")
    await admin("DELETE", "/admin/links/3/ORD%001")

    assert (saved["external_id"], saved["woken"]) == ("ORD 7/A", [])
    assert (imported["saved"], from_csv["saved"], [p["line"] for p in from_csv["problems"]]) == (1, 1, [3])
    assert page["items"] == [{"merchant_id": 3, "external_id": "ORD 7/A", "inquiry_id": 901}]
    assert (headerless["field"], headerless["detail"]) == (
        "body",
        "body: line 1: missing column merchant_id, external_id, inquiry_id: "
        "expected columns merchant_id,external_id,inquiry_id",
    )
    assert contract.seen == LINK_ANSWERS


ADMIN_OPERATIONS = [(method, path) for method, path, _ in operations() if path.startswith("/admin/")]
REFUSAL_ANSWERS: Answers = {
    **{operation: {401, 429} for operation in ADMIN_OPERATIONS},
    ("get", "/admin/stats"): {200, 401, 429, 500},
}


async def test_admin_stats_refusals_and_the_error_guard_fit_the_document(relay, monkeypatch):
    contract = Contract()
    examples = {"{delivery_id}": "1", "{webhook_id}": "1", "{merchant_id}": "1", "{external_id}": "ORD-1"}

    wrong = {"Authorization": "Bearer wrong"}
    urls = [
        (method.upper(), re.sub(r"{\w+}", lambda name: examples[name[0]], path))
        for method, path in ADMIN_OPERATIONS
    ]

    stats = await contract.check(await relay.get("/admin/stats", headers=ADMIN))
    for index, (method, url) in enumerate(urls):
        # Each from its own loopback address, so that none is past the limit of failures yet: 401.
        async with ClientSession(connector=TCPConnector(local_addr=(f"127.0.1.{index + 1}", 0))) as session:
            await contract.check(await session.request(method, relay.make_url(url), headers=wrong))
    for _ in range(FAILURES_ALLOWED):
        await relay.get("/admin/stats", headers=wrong)
    for method, url in urls:
        await contract.check(await relay.request(method, url, headers=wrong))  # past the limit: 429

    async def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(relay.app[STORE], "stats", fail)
    failed = await contract.check(await relay.get("/admin/stats", headers=ADMIN))

    assert stats["deliveries"]["pending"] == 0
    assert "request id" in failed["detail"]
    assert contract.seen == REFUSAL_ANSWERS


def test_the_scenarios_produce_every_documented_answer_but_the_error_guard_elsewhere():
    exercised: Answers = {}
    for answers in (
        WEBHOOK_ANSWERS,
        TENANT_WEBHOOK_ANSWERS,
        OAUTH_ANSWERS,
        OPS_ANSWERS,
        DELIVERY_ANSWERS,
        STORED_WEBHOOK_ANSWERS,
        DISMISS_ANSWERS,
        LINK_ANSWERS,
        REFUSAL_ANSWERS,
    ):
        for operation, statuses in answers.items():
            exercised.setdefault(operation, set()).update(statuses)
    documented = {(method, path): {int(s) for s in op["responses"]} for method, path, op in operations()}

    untried = {
        operation: statuses - exercised.get(operation, set()) for operation, statuses in documented.items()
    }

    assert all(statuses <= documented[operation] for operation, statuses in exercised.items())
    # relay.http answers every unexpected error alike, so one route (stats) proves the 500's shape.
    assert {operation: left for operation, left in untried.items() if left} == {
        operation: {500} for operation in documented if operation != ("get", "/admin/stats")
    }
