"""The console's quarantine: webhooks waiting for an operator with their reasons, reprocess and dismiss."""

from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from pydantic import ValidationError
from yarl import URL

from relay.domain.ids import MAX_ID
from relay.keys import NEW_DELIVERY, SETTINGS, STORE, TENANTS
from relay.ops import webhook_actions
from relay.pages.deliveries import readable_body
from relay.pages.notices import see_other
from relay.store.api import Store
from relay.store.filters import WebhookFilter
from relay.store.records import WebhookStatus

routes = web.RouteTableDef()

PAGE_SIZE = 50
LIST = "/console/quarantine"
# What the list shows: those waiting (the default), or those an operator dismissed.
SHOWN: dict[str, WebhookStatus] = {"waiting": "quarantined", "dismissed": "dismissed"}


@routes.get(LIST, name="quarantine")
@aiohttp_jinja2.template("quarantine.html")
async def quarantine_list(request: web.Request) -> dict[str, Any]:
    shown = request.query.get("show", "waiting")
    tenant = request.query.get("tenant", "").strip() or None
    before = _id_or_none(request.query.get("before", ""))
    if shown not in SHOWN:
        raise web.HTTPBadRequest(text="The list shows waiting or dismissed webhooks.")
    tenants = sorted(running.name for running in request.config_dict[TENANTS].registry)
    try:
        where = WebhookFilter(status=(SHOWN[shown],), tenant=tenant)
    except ValidationError:
        raise web.HTTPBadRequest(text="That is not a tenant's name.") from None
    found = await _store(request).list_webhooks(where, after=before, limit=PAGE_SIZE + 1)
    webhooks = found[:PAGE_SIZE]
    query = {"show": shown, **({"tenant": tenant} if tenant else {})}
    older = (
        str(URL(LIST).with_query({**query, "before": webhooks[-1].id})) if len(found) > PAGE_SIZE else None
    )
    if tenant is not None and tenant not in tenants:
        tenants.append(tenant)  # a removed tenant's webhooks are still found by its name
    return {
        "webhooks": webhooks,
        "shown": shown,
        "tenant": tenant,
        "tenants": tenants,
        "older": older,
        "newest": str(URL(LIST).with_query(query)) if before is not None else None,
    }


@routes.get(r"/console/quarantine/{webhook_id:\d+}", name="webhook")
@aiohttp_jinja2.template("webhook.html")
async def webhook_page(request: web.Request) -> dict[str, Any]:
    webhook_id = _webhook_id(request)
    webhook = await _store(request).get_webhook(webhook_id)
    if webhook is None:
        raise web.HTTPNotFound(text=f"There is no webhook {webhook_id}.")
    return {
        "webhook": webhook,
        "body": readable_body(webhook.body),
        "max_reason": webhook_actions.MAX_REASON_CHARS,
    }


@routes.post(r"/console/quarantine/{webhook_id:\d+}/reprocess")
async def reprocess(request: web.Request) -> web.Response:
    webhook_id = _webhook_id(request)
    registry = request.config_dict[TENANTS].registry
    try:
        done = await webhook_actions.reprocess(
            _store(request),
            webhook_id,
            tenant_named=lambda name: None if (running := registry.named(name)) is None else running.tenant,
            retention_days=request.config_dict[SETTINGS].relay_retention_days,
            now=datetime.now(UTC),
            new_delivery=request.config_dict[NEW_DELIVERY],
        )
    except webhook_actions.WebhookRefused as refused:
        raise _refused(webhook_id, refused) from None
    if done.status == "quarantined":
        notice = f"Webhook {webhook_id} is still quarantined: {'; '.join(done.errors)}."
    elif done.delivery_id is not None:
        notice = f"Webhook {webhook_id} reprocessed: {done.status}, delivery {done.delivery_id}."
    else:
        notice = f"Webhook {webhook_id} reprocessed: {done.status}."
    raise see_other(f"{LIST}/{webhook_id}", notice)


@routes.post(r"/console/quarantine/{webhook_id:\d+}/dismiss")
async def dismiss(request: web.Request) -> web.Response:
    webhook_id = _webhook_id(request)
    form = await request.post()
    given = form.get("reason")
    try:
        dismissal = webhook_actions.Dismissal(reason=given if isinstance(given, str) else "")
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise see_other(f"{LIST}/{webhook_id}", f"Not dismissed: the reason {problem}.") from None
    try:
        await webhook_actions.dismiss(_store(request), webhook_id, dismissal, now=datetime.now(UTC))
    except webhook_actions.WebhookRefused as refused:
        raise _refused(webhook_id, refused) from None
    raise see_other(f"{LIST}/{webhook_id}", f"Webhook {webhook_id} dismissed: {dismissal.reason}")


def _refused(webhook_id: int, refused: webhook_actions.WebhookRefused) -> web.HTTPException:
    if refused.status == 404:
        return web.HTTPNotFound(text=f"There is no webhook {webhook_id}.")
    return see_other(f"{LIST}/{webhook_id}", f"Nothing changed: {refused.detail}.")


def _webhook_id(request: web.Request) -> int:
    found = _id_or_none(request.match_info["webhook_id"])
    if found is None:
        raise web.HTTPNotFound(text="There is no webhook of that id.")
    return found


def _id_or_none(digits: str) -> int | None:
    # By length first: int() refuses very long digit strings; and ids are int64s.
    if not digits.isascii() or not digits.isdigit() or len(digits) > len(str(MAX_ID)) or int(digits) > MAX_ID:
        return None
    return int(digits)


def _store(request: web.Request) -> Store:
    return request.config_dict[STORE]
