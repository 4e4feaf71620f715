"""The console's deliveries: the filtered list, one delivery in full, and replay, bulk replay and cancel."""

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiMapping
from pydantic import ValidationError
from yarl import URL

from relay.domain.delivery import DELIVERY_STATES
from relay.domain.ids import MAX_ID
from relay.domain.message import quivo_rating, render_message
from relay.domain.rating import Rating
from relay.keys import NEW_DELIVERY, STORE, TENANTS
from relay.ops import actions
from relay.pages.notices import see_other
from relay.store.api import Store
from relay.store.filters import CANCELLABLE_STATES, REPLAYABLE_STATES, DeliveryFilter, Id, ReplayFilter
from relay.store.records import DeliveryDetail, DeliverySummary, StateChange

routes = web.RouteTableDef()

PAGE_SIZE = 50
LIST = "/console/deliveries"
# The list's form fields that are a filter's (the rest of a query, `before`, is the page).
FILTER_FIELDS = ("search", "state", "tenant", "merchant_id", "since", "until")


class ListingQuery(DeliveryFilter):
    """The list's query string: a filter, and the page (deliveries older than the id `before`)."""

    before: Id | None = None


@routes.get(LIST, name="deliveries")
async def delivery_list(request: web.Request) -> web.Response:
    given = _given(request.query)
    try:
        listing = ListingQuery.model_validate(given)
    except ValidationError as error:
        context = _list_context(request, given, [], None, problem=_first_problem(error))
        return aiohttp_jinja2.render_template("deliveries.html", request, context, status=400)
    store = _store(request)
    found = await store.list_deliveries(listing, after=listing.before, limit=PAGE_SIZE + 1)
    shown = found[:PAGE_SIZE]
    older = _list_url(given, before=shown[-1].id) if len(found) > PAGE_SIZE else None
    context = _list_context(request, given, shown, older, replayable=_replayable(listing, shown))
    context["comments"] = await store.delivery_comments([delivery.id for delivery in shown])
    return aiohttp_jinja2.render_template("deliveries.html", request, context)


@routes.get(r"/console/deliveries/{delivery_id:\d+}", name="delivery")
@aiohttp_jinja2.template("delivery.html")
async def delivery_page(request: web.Request) -> dict[str, Any]:
    delivery_id = _delivery_id(request)
    store = _store(request)
    detail = await store.get_delivery(delivery_id)
    if detail is None:
        raise web.HTTPNotFound(text=f"There is no delivery {delivery_id}.")
    webhook = None if detail.webhook is None else await store.get_webhook(detail.webhook.id)
    return {
        "detail": detail,
        "record": detail.delivery,
        "webhook_body": None if webhook is None else readable_body(webhook.body),
        "webhook_content_type": None if webhook is None else webhook.content_type,
        "message": _message(request, detail),
        "can_replay": detail.delivery.state in REPLAYABLE_STATES,
        "can_cancel": detail.delivery.state in CANCELLABLE_STATES,
    }


@routes.post(r"/console/deliveries/{delivery_id:\d+}/replay")
async def replay(request: web.Request) -> web.Response:
    delivery_id = _delivery_id(request)
    change = await actions.replay_delivery(
        _store(request), delivery_id, now=_now(), new_delivery=request.config_dict[NEW_DELIVERY]
    )
    raise _after_change(delivery_id, change, "replayed: it is pending, and a worker sends it shortly")


@routes.post(r"/console/deliveries/{delivery_id:\d+}/cancel")
async def cancel(request: web.Request) -> web.Response:
    delivery_id = _delivery_id(request)
    change = await actions.cancel_delivery(_store(request), delivery_id, now=_now())
    raise _after_change(delivery_id, change, "cancelled: it is dead and will not be sent")


@routes.post(f"{LIST}/replay")
async def bulk_replay(request: web.Request) -> web.Response:
    """The list's filter, posted: first a page stating how many it matches, then (confirmed) the replay."""
    form = await request.post()
    given = _given(form, FILTER_FIELDS)
    try:
        where = ReplayFilter.model_validate(given)
    except ValidationError as error:
        raise web.HTTPBadRequest(text=f"This filter cannot be replayed: {_first_problem(error)}.") from None
    if form.get("confirm") != "yes":
        count = await _store(request).count_deliveries(where)
        # The instants as counted, so a duration such as `2h` means the same when the replay is confirmed.
        fixed = where.model_dump(mode="json", exclude_none=True, include=set(FILTER_FIELDS))
        fixed["state"] = ",".join(where.state)
        context = {"count": count, "where": fixed, "back": _list_url(given)}
        return aiohttp_jinja2.render_template("deliveries_replay.html", request, context)
    done = await actions.replay_deliveries(
        _store(request), where, now=_now(), new_delivery=request.config_dict[NEW_DELIVERY]
    )
    notice = f"Replayed {_deliveries(done.replayed)}; a worker sends them shortly."
    if done.skipped:
        first = done.skipped[0]
        notice += f" Left {len(done.skipped)} as they were (delivery {first.delivery_id}: {first.reason})."
    raise see_other(_list_url(given), notice)


# Reading the request --------------------------------------------------------------------------------


def _given(values: MultiMapping[Any], names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The non-empty text values of a query or form (of `names` only, if given), a repeated one as a list."""
    given: dict[str, list[str]] = {}
    for name, value in values.items():
        if isinstance(value, str) and value.strip() and (names is None or name in names):
            given.setdefault(name, []).append(value)
    return {name: found[0] if len(found) == 1 else found for name, found in given.items()}


def _first_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False, include_context=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "filter"
    return f"{field}: {first['msg'].removeprefix('Value error, ')}"


def _delivery_id(request: web.Request) -> int:
    digits = request.match_info["delivery_id"]  # the route admits digits only
    # By length first: int() refuses very long digit strings; and ids are int64s.
    if len(digits) > len(str(MAX_ID)) or int(digits) > MAX_ID:
        raise web.HTTPNotFound(text="There is no delivery of that id.")
    return int(digits)


def _store(request: web.Request) -> Store:
    return request.config_dict[STORE]


def _now() -> datetime:
    return datetime.now(UTC)


# Building the pages -----------------------------------------------------------------------------------


def _list_url(given: Mapping[str, Any], **extra: Any) -> str:
    """The list's URL for this filter (and `extra`, such as the page)."""
    return str(URL(LIST).with_query(_pairs(given) + [(name, str(value)) for name, value in extra.items()]))


def _pairs(given: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The filter's fields among `given` as (name, value) pairs, a repeated one once per value."""
    pairs: list[tuple[str, str]] = []
    for name in FILTER_FIELDS:
        value = given.get(name)
        pairs += [(name, str(item)) for item in (value if isinstance(value, list) else [value]) if item]
    return pairs


def _list_context(
    request: web.Request,
    given: Mapping[str, Any],
    shown: list[Any],
    older: str | None,
    *,
    replayable: bool = False,
    problem: str | None = None,
) -> dict[str, Any]:
    states = given.get("state", [])
    chosen = {
        part.strip()
        for item in (states if isinstance(states, list) else [states])
        for part in str(item).split(",")
    }
    tenants = sorted(running.name for running in request.config_dict[TENANTS].registry)
    tenant = given.get("tenant")
    if isinstance(tenant, str) and tenant not in tenants:
        tenants.append(tenant)  # a removed tenant's deliveries are still found by its name
    return {
        "deliveries": shown,
        "comments": {},
        "states": DELIVERY_STATES,
        "chosen_states": chosen,
        "tenants": tenants,
        "form": {name: value for name, value in given.items() if isinstance(value, str)},
        "filter_fields": _pairs(given),
        "filtered": any(name in given for name in FILTER_FIELDS),
        "older": older,
        "newest": _list_url(given) if "before" in given else None,
        "replayable": replayable,
        "problem": problem,
    }


def _replayable(where: DeliveryFilter, shown: list[DeliverySummary]) -> bool:
    """Whether to offer a bulk replay of this filter: it names only states that replay, or it names none
    and the page shows a delivery that would replay."""
    if where.state:
        return all(state in REPLAYABLE_STATES for state in where.state)
    return any(delivery.state in REPLAYABLE_STATES for delivery in shown)


def readable_body(body: bytes) -> str:
    """A webhook's body for a person: JSON indented, other text as it came, bytes that are not text named."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"({len(body)} bytes that are not UTF-8 text)"
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def _message(request: web.Request, detail: DeliveryDetail) -> dict[str, Any] | None:
    """The rating and message text the tenant's settings make of this rating (what a send posts)."""
    running = request.config_dict[TENANTS].registry.named(detail.delivery.tenant)
    if running is None:
        return None
    tenant = running.tenant
    rating = Rating.model_validate(detail.delivery.rating)
    return {
        "text": render_message(rating, tenant.message_template),
        "value": quivo_rating(rating.stars, tenant.quivo.rating_min, tenant.quivo.rating_max),
    }


def _after_change(delivery_id: int, change: StateChange, done: str) -> web.HTTPException:
    if change.before is None:
        return web.HTTPNotFound(text=f"There is no delivery {delivery_id}.")
    page = f"{LIST}/{delivery_id}"
    if change.refusal is not None:
        return see_other(page, f"Nothing changed: {change.refusal}.")
    return see_other(page, f"Delivery {delivery_id} (was {change.before}) {done}.")


def _deliveries(count: int) -> str:
    return f"{count} delivery" if count == 1 else f"{count} deliveries"
