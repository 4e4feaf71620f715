"""The inbound routes: `POST /webhooks/bringg/{tenant}`, the bare URL, and the OAuth token endpoint."""

import asyncio
import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import BasicAuth, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from relay.bringg.payload import judge
from relay.bringg.tenancy import judged_for
from relay.console import printable
from relay.domain.judgement import Judgement
from relay.http import REQUEST_ID, elapsed_ms, header_text, problem
from relay.jsonline import encode, quoted
from relay.keys import NEW_DELIVERY, OAUTH_FAILURES, SETTINGS, STORE, TENANTS
from relay.logs import get_logger, spelled_writer
from relay.ops.metrics import METRICS
from relay.settings import Settings
from relay.store.api import StoreUnavailable
from relay.store.records import InboundWebhook, StoredWebhook
from relay.tenants.registry import RunningTenant

log = get_logger("relay.webhook")

# Long enough for a locked or full disk to be noticed by someone, short enough for Bringg's few resends.
STORE_RETRY_AFTER_S = 30
# The parameters RFC 6749 §2.3.1 keeps out of the URL.
CLIENT_CREDENTIALS = frozenset({"client_id", "client_secret"})
# A tenant's name is at most 40 characters: a longer one in a URL is cut so in its log line.
MAX_LOGGED_NAME = 40
# An answer to a stored webhook: the Content-Type aiohttp gives JSON text (each answer copies these).
ANSWER_HEADERS = CIMultiDict({"Content-Type": "application/json; charset=utf-8"})

routes = web.RouteTableDef()


@routes.post("/webhooks/bringg")
async def receive_webhook(request: web.Request) -> web.Response:
    """The URL from before tenants: the tenant named `default` (without a tenants file, the only one)."""
    app = request.app
    running = app[TENANTS].registry.of_bare_url()
    if running is None:
        detail = "this relay has no tenant named default: send to POST /webhooks/bringg/{tenant}"
        return _unknown_tenant(request, "default", detail)
    return await _receive(request, app, running)


@routes.post("/webhooks/bringg/{tenant}")
async def receive_tenant_webhook(request: web.Request) -> web.Response:
    """One tenant's URL: only its credentials open it (a tenant unknown here has none to check)."""
    name = request.match_info["tenant"]
    app = request.app
    running = app[TENANTS].registry.named(name)
    if running is None:
        return _unknown_tenant(request, name)
    return await _receive(request, app, running)


async def _receive(request: web.Request, app: web.Application, running: RunningTenant) -> web.Response:
    """Authenticate, read within the size limit, commit the raw bytes (and delivery), then answer.

    `app` is request.app, looked up once (each look-up goes through two properties).
    """
    tenant = running.tenant.name
    headers = request.headers
    verdict = running.authenticator.check(headers)
    if not verdict.ok:
        return _unauthorized(request, tenant, verdict.reason)
    settings = app[SETTINGS]
    body = await _read_body(request, settings, tenant)
    if isinstance(body, web.Response):
        return body
    judgement = judged_for(running.tenant, judge(body))
    # By position, in the record's order: keywords cost a third of building it.
    inbound = InboundWebhook(
        request[REQUEST_ID],
        datetime.now(UTC),
        body,
        header_text(headers.get(hdrs.CONTENT_TYPE)),
        judgement,
        tenant,
    )
    fields: dict[str, Any] = {
        "tenant": tenant,
        "merchant_id": judgement.merchant_id,
        "rating_id": judgement.rating_id,
        "auth": verdict.method,
        "bytes": len(body),
    }
    try:
        # Past the retention window a delivered version may be gone from the database: check Quivo first.
        recheck_before = inbound.received_at - _retention(settings.relay_retention_days)
        stored = await app[STORE].record_webhook(inbound, recheck_before=recheck_before)
    except StoreUnavailable as error:
        return _store_failed(request, error, fields)
    _report_stored(request, app, judgement, stored, fields)
    return _answer(judgement, stored)


@functools.cache
def _retention(days: float) -> timedelta:
    # Made once: a timedelta from days costs about as much as the rest of storing's preparation.
    return timedelta(days=days)


def _unknown_tenant(request: web.Request, name: str, detail: str | None = None) -> web.Response:
    # Counted under no tenant: a label per name a stranger makes up would grow the metrics without bound.
    request.app[METRICS].webhook_received("unknown_tenant", tenant="")
    log.warning(
        "webhook.unknown_tenant",
        outcome="unknown_tenant",
        tenant=printable(name[:MAX_LOGGED_NAME]),
        duration_ms=elapsed_ms(request),
    )
    answer = {"error": "unknown tenant"} if detail is None else {"error": "unknown tenant", "detail": detail}
    return web.json_response(answer, status=404)


def _unauthorized(request: web.Request, tenant: str, reason: str | None) -> web.Response:
    request.app[METRICS].webhook_received("unauthorized", tenant=tenant)
    log.warning(
        "webhook.unauthorized",
        outcome="unauthorized",
        tenant=tenant,
        reason=reason,
        duration_ms=elapsed_ms(request),
    )
    # The reason is for the operator's log: it would tell a stranger which methods are configured.
    refused = problem(401, "Unauthorized", "missing or invalid credentials")
    refused.headers["WWW-Authenticate"] = 'Bearer realm="relay"'
    return refused


async def _read_body(request: web.Request, settings: Settings, tenant: str) -> bytes | web.Response:
    """The body, or the refusal when it is over the size limit or slower than the deadline."""
    limit, deadline = settings.relay_max_body_bytes, settings.relay_body_timeout_s
    try:
        # Read once: aiohttp parses the header again at every read of content_length.
        if (declared := request.content_length) is not None and declared > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
        if request.content.is_eof():
            # The whole body came with the headers (a webhook's usually does): taken as it lies, with no wait
            # and no copy, and so measured here (a chunked one declares no length).
            body = request.content.read_nowait()
            if len(body) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
            return body
        # aiohttp puts no limit on how long a body may take: a trickling client would hold its slot forever.
        async with asyncio.timeout(deadline):
            return await request.read()
    except TimeoutError:
        request.app[METRICS].webhook_received("too_slow", tenant=tenant)
        log.warning(
            "webhook.too_slow",
            outcome="too_slow",
            tenant=tenant,
            limit_s=deadline,
            duration_ms=elapsed_ms(request),
        )
        return problem(408, "Request Timeout", f"the body took over {deadline:g} s to arrive; send it again")
    except web.HTTPRequestEntityTooLarge:
        request.app[METRICS].webhook_received("too_large", tenant=tenant)
        log.warning(
            "webhook.too_large",
            outcome="too_large",
            tenant=tenant,
            limit=limit,
            content_length=request.content_length,
            duration_ms=elapsed_ms(request),
        )
        return problem(413, "Payload Too Large", f"the body is larger than {limit} bytes")


def _store_failed(request: web.Request, error: StoreUnavailable, fields: dict[str, Any]) -> web.Response:
    request.app[METRICS].webhook_received("store_failed", tenant=fields["tenant"])
    log.error(
        "webhook.store_failed",
        outcome="store_failed",
        error=str(error),
        duration_ms=elapsed_ms(request),
        **fields,
    )
    response = problem(503, "Service Unavailable", "the webhook could not be stored; send it again")
    response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
    return response


def _report_stored(
    request: web.Request,
    app: web.Application,
    judgement: Judgement,
    stored: StoredWebhook,
    fields: dict[str, Any],
) -> None:
    """Count and log what storing did, and wake the worker for a new delivery."""
    app[METRICS].webhook_received(stored.status, tenant=fields["tenant"])
    if stored.status == "accepted":
        app[NEW_DELIVERY].set()
    for delivery_id in stored.superseded:
        app[METRICS].delivery_finished("superseded", tenant=fields["tenant"])
        log.info("delivery.superseded", delivery_id=delivery_id, by=stored.delivery_id, **fields)
    quarantined = stored.status == "quarantined"
    duration_ms = elapsed_ms(request)
    write = spelled_writer(log, "warning" if quarantined else "info")
    if write is not None:
        # The line every webhook writes, spelled here for two thirds of the cost of the call below, which
        # would write it alike (tests/test_webhook_lines.py).
        write(f"webhook.{stored.status}", webhook_members(stored, judgement, fields, duration_ms))
        return
    emit = log.warning if quarantined else log.info
    emit(
        f"webhook.{stored.status}",
        webhook_id=stored.webhook_id,
        delivery_id=stored.delivery_id,
        webhook_type=judgement.webhook_type,
        errors=list(judgement.errors) or None,
        outcome=stored.status,
        duration_ms=duration_ms,
        **fields,
    )


def webhook_members(
    stored: StoredWebhook, judgement: Judgement, fields: dict[str, Any], duration_ms: float
) -> str:
    """The canonical line's keys and values, as JSON members in the order of _report_stored's call, spelled
    as jsonline.encode spells them (ids are ints or None, the duration a finite float)."""
    delivery_id, merchant_id, rating_id = stored.delivery_id, fields["merchant_id"], fields["rating_id"]
    webhook_type, auth, errors = judgement.webhook_type, fields["auth"], judgement.errors
    # Ids and sizes are ints: spelled by str, as `:d` would (a format spec costs a parse at each value).
    return (
        f'"webhook_id": {stored.webhook_id}, '
        f'"delivery_id": {"null" if delivery_id is None else delivery_id}, '
        f'"webhook_type": {"null" if webhook_type is None else quoted(webhook_type)}, '
        f'"errors": {encode(list(errors)) if errors else "null"}, '
        f'"outcome": "{stored.status}", "duration_ms": {duration_ms!r}, '
        f'"tenant": {quoted(fields["tenant"])}, '
        f'"merchant_id": {"null" if merchant_id is None else merchant_id}, '
        f'"rating_id": {"null" if rating_id is None else rating_id}, '
        f'"auth": {"null" if auth is None else quoted(auth)}, "bytes": {fields["bytes"]}'
    )


def _answer(judgement: Judgement, stored: StoredWebhook) -> web.Response:
    # Spelled as json.dumps spells it (a status word and integer ids need no escaping) at a third of the
    # cost of json_response; the reasons alone go through json.dumps, which escapes them (ASCII only).
    text = f'{{"status": "{stored.status}", "id": {stored.webhook_id:d}'
    if stored.delivery_id is not None:
        text += f', "delivery_id": {stored.delivery_id:d}'
    if judgement.errors:
        text += f', "errors": {json.dumps(list(judgement.errors))}'
    status = 200 if stored.status == "duplicate" else 202
    return web.Response(body=(text + "}").encode(), status=status, headers=ANSWER_HEADERS)


@routes.post("/oauth/token")
async def issue_token(request: web.Request) -> web.Response:
    """OAuth 2.0 client credentials (RFC 6749 §4.4); credentials by Basic auth, or in a form or JSON body.

    The client id picks the tenant; the token is keyed by that tenant's client secret, so it opens only that
    tenant's URL.
    """
    registry = request.app[TENANTS].registry
    if not registry.oauth_enabled:
        raise web.HTTPNotFound()
    if not CLIENT_CREDENTIALS.isdisjoint(request.query):
        # RFC 6749 §2.3.1: never in the URL, which proxies and access logs keep.
        log.warning("oauth.token_refused", reason="client credentials in the URL")
        return _oauth_error(400, "invalid_request", "send client credentials by HTTP Basic or in the body")
    deadline = request.app[SETTINGS].relay_body_timeout_s
    try:
        # As at the webhook: aiohttp sets no deadline, and a trickling stranger would hold the connection.
        async with asyncio.timeout(deadline):
            params = await _token_params(request)
    except TimeoutError:
        log.warning("oauth.too_slow", limit_s=deadline, duration_ms=elapsed_ms(request))
        return problem(408, "Request Timeout", f"the body took over {deadline:g} s to arrive; send it again")
    if params.get("grant_type") != "client_credentials":
        log.warning("oauth.token_refused", reason="unsupported grant_type")
        return _oauth_error(400, "unsupported_grant_type")
    client_id, client_secret = _client_credentials(request, params)
    running = registry.by_client_id(client_id)
    token = None if running is None else running.authenticator.issue_token(client_id, client_secret)
    if running is None or token is None:
        throttled = request.app[OAUTH_FAILURES].record_failure(request.remote)
        if throttled is not None:
            if throttled.first_of_burst:
                log.warning("oauth.throttled", client=throttled.client, retry_after_s=throttled.retry_after_s)
            return throttled.answer()
        log.warning("oauth.token_refused", reason="invalid client credentials")
        refused = _oauth_error(401, "invalid_client")
        # RFC 6749 §5.2: a client that tried HTTP Basic is told which scheme to use.
        refused.headers["WWW-Authenticate"] = 'Basic realm="relay"'
        return refused
    expires_in = running.authenticator.oauth_token_ttl_s
    log.info("oauth.token_issued", tenant=running.name, expires_in=expires_in)
    return web.json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": expires_in},
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


async def _token_params(request: web.Request) -> dict[str, str]:
    params = {key: value for key, value in request.query.items()}
    if request.content_type == "application/json":
        try:
            body = json.loads(await request.read() or b"{}")
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested deeper than json can follow
            body = {}
        if isinstance(body, dict):
            params.update({key: value for key, value in body.items() if isinstance(value, str)})
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.post()
        except (ValueError, HttpProcessingError):  # HttpProcessingError: a part's header is malformed
            # A form that does not parse (no boundary, bytes outside its charset) carries no credentials.
            return params
        params.update({key: value for key, value in form.items() if isinstance(value, str)})
    return params


def _client_credentials(request: web.Request, params: dict[str, str]) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            basic = BasicAuth.decode(header)
        except ValueError:
            return "", ""
        return basic.login, basic.password
    return params.get("client_id", ""), params.get("client_secret", "")


def _oauth_error(status: int, error: str, description: str | None = None) -> web.Response:
    # RFC 6749 §5.2 answers errors as plain JSON with an `error` code.
    answer = {"error": error} if description is None else {"error": error, "error_description": description}
    return web.json_response(answer, status=status, headers={"Cache-Control": "no-store"})
