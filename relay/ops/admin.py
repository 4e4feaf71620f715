"""The operators' admin API under /admin: deliveries, webhooks, links and stats, behind a bearer token."""

import base64
import hmac
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
)

from relay.domain.ids import MAX_ID
from relay.http import Handler, problem
from relay.keys import NEW_DELIVERY, SETTINGS, STORE, TENANTS
from relay.linkfile import LinkCheck
from relay.ops import actions, link_actions, webhook_actions
from relay.ops.answers import json_response
from relay.store.api import Store
from relay.store.filters import DeliveryFilter, Id, ReplayFilter, TenantName, WebhookFilter
from relay.store.records import BulkReplay, StateChange, WebhookDetail
from relay.throttle import FailureThrottle

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = structlog.get_logger("relay.admin")

DEFAULT_PAGE = 50
MAX_PAGE = 500
# Enough to fix a bad list of links in one go, few enough to read.
MAX_REPORTED = 20

M = TypeVar("M")
B = TypeVar("B", bound=BaseModel)
D = TypeVar("D", bound="DataclassInstance")

routes = web.RouteTableDef()


def create_admin_app(token: str) -> web.Application:
    """The admin API as a sub-application to mount at /admin; every request must carry `token`."""
    if not token:
        raise ValueError("an empty admin token would let anyone in")
    admin = web.Application(middlewares=[_bearer_token(token)])
    admin.add_routes(routes)
    return admin


def _bearer_token(token: str) -> Middleware:
    expected = token.encode()
    failures = FailureThrottle()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        given = offered.strip().encode("utf-8", "surrogateescape")
        # compare_digest: how long a refusal takes must not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            throttled = failures.record_failure(request.remote)
            if throttled is not None:
                if throttled.first_of_burst:
                    log.warning(
                        "admin.throttled", client=throttled.client, retry_after_s=throttled.retry_after_s
                    )
                return throttled.answer()
            log.warning(
                "admin.unauthorized", method=request.method, path=request.path, token_given=bool(given)
            )
            response = problem(401, "Unauthorized", "send Authorization: Bearer <RELAY_ADMIN_TOKEN>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="relay admin"'
            return response
        return await handler(request)

    return require_token


# Query and body models ----------------------------------------------------------------------------


def _page_size(size: int) -> int:
    if not 1 <= size <= MAX_PAGE:
        raise ValueError(f"must be between 1 and {MAX_PAGE}")
    return size


def _cursor_of(*shape: type) -> BeforeValidator:
    """Reads back a cursor made by `page_cursor` from a key of these types."""

    def read(value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            key = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        except (ValueError, RecursionError):  # RecursionError: thousands of nested `[`
            key = None
        if not (
            isinstance(key, list)
            and len(key) == len(shape)
            and all(_key_part(part, kind) for part, kind in zip(key, shape, strict=True))
        ):
            raise ValueError("not a cursor this API gave")
        return key[0] if len(shape) == 1 else tuple(key)

    return BeforeValidator(read)


def _key_part(part: object, kind: type) -> bool:
    """Whether `part` could be a key this API sorts by: an int64 id, or text SQLite can store."""
    if type(part) is not kind:
        return False
    if isinstance(part, int):
        return 0 <= part <= MAX_ID
    try:
        str(part).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which SQLite refuses
        return False
    return True


def page_cursor(key: Sequence[int | str]) -> str:
    """An opaque page cursor: the sort key of the last item shown."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


PageSize = Annotated[int, AfterValidator(_page_size)]
IdCursor = Annotated[int | None, _cursor_of(int)]


class DeliveryListing(DeliveryFilter):
    limit: PageSize = DEFAULT_PAGE
    cursor: IdCursor = None


class WebhookListing(WebhookFilter):
    limit: PageSize = DEFAULT_PAGE
    cursor: IdCursor = None


class LinkListing(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    merchant_id: Id | None = None
    tenant: TenantName | None = None
    limit: PageSize = DEFAULT_PAGE
    cursor: Annotated[tuple[int, str] | None, _cursor_of(int, str)] = None


class LinksFor(BaseModel):
    """The tenant a request's links are for (`?tenant=`): each link's merchant must be that tenant's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: TenantName | None = None


class LinkTarget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    inquiry_id: link_actions.LinkId


_LINK_LIST = TypeAdapter(list[link_actions.LinkInput])


# Deliveries ---------------------------------------------------------------------------------------


@routes.get("/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    listing = _validated(DeliveryListing, _query(request))
    found = await _store(request).list_deliveries(listing, after=listing.cursor, limit=listing.limit + 1)
    return _page(found, listing.limit, lambda delivery: [delivery.id])


@routes.get(r"/deliveries/{delivery_id:\d+}")
async def show_delivery(request: web.Request) -> web.Response:
    return await _delivery_answer(request, _path_id(request, "delivery_id"))


@routes.post(r"/deliveries/{delivery_id:\d+}/replay")
async def replay_delivery(request: web.Request) -> web.Response:
    delivery_id = _path_id(request, "delivery_id")
    change = await actions.replay_delivery(
        _store(request), delivery_id, now=_now(), new_delivery=request.config_dict[NEW_DELIVERY]
    )
    _require_moved(change, delivery_id)
    return await _delivery_answer(request, delivery_id)


@routes.post("/deliveries/replay")
async def replay_deliveries(request: web.Request) -> web.Response:
    body = await request.read()
    queried = _validated(ReplayFilter, _query(request))
    # Both given: a delivery must match both, so neither is silently ignored.
    where = queried.both(_validated_json(ReplayFilter, body)) if body.strip() else queried
    done = await actions.replay_deliveries(
        _store(request), where, now=_now(), new_delivery=request.config_dict[NEW_DELIVERY]
    )
    return json_response(replay_answer(done))


@routes.post(r"/deliveries/{delivery_id:\d+}/cancel")
async def cancel_delivery(request: web.Request) -> web.Response:
    delivery_id = _path_id(request, "delivery_id")
    change = await actions.cancel_delivery(_store(request), delivery_id, now=_now())
    _require_moved(change, delivery_id)
    return await _delivery_answer(request, delivery_id)


async def _delivery_answer(request: web.Request, delivery_id: int) -> web.Response:
    detail = await _store(request).get_delivery(delivery_id)
    if detail is None:
        raise _refusal(404, f"no delivery {delivery_id}")
    return json_response(detail)


def _require_moved(change: StateChange, delivery_id: int) -> None:
    if change.before is None:
        raise _refusal(404, f"no delivery {delivery_id}")
    if change.refusal is not None:
        raise _refusal(409, change.refusal, state=change.before)


# Webhooks -----------------------------------------------------------------------------------------


@routes.get("/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    listing = _validated(WebhookListing, _query(request))
    found = await _store(request).list_webhooks(listing, after=listing.cursor, limit=listing.limit + 1)
    return _page(found, listing.limit, lambda webhook: [webhook.id])


@routes.get(r"/webhooks/{webhook_id:\d+}")
async def show_webhook(request: web.Request) -> web.Response:
    webhook = await _webhook(request, _path_id(request, "webhook_id"))
    return json_response(webhook_actions.webhook_answer(webhook))


@routes.post(r"/webhooks/{webhook_id:\d+}/reprocess")
async def reprocess(request: web.Request) -> web.Response:
    registry = request.config_dict[TENANTS].registry
    with _refused_webhook():
        done = await webhook_actions.reprocess(
            _store(request),
            _path_id(request, "webhook_id"),
            tenant_named=lambda name: None if (running := registry.named(name)) is None else running.tenant,
            retention_days=request.config_dict[SETTINGS].relay_retention_days,
            now=_now(),
            new_delivery=request.config_dict[NEW_DELIVERY],
        )
    return json_response(done.answer())


@routes.post(r"/webhooks/{webhook_id:\d+}/dismiss")
async def dismiss(request: web.Request) -> web.Response:
    webhook_id = _path_id(request, "webhook_id")
    dismissal = _validated_json(webhook_actions.Dismissal, await request.read())
    with _refused_webhook():
        webhook = await webhook_actions.dismiss(_store(request), webhook_id, dismissal, now=_now())
    return json_response(webhook_actions.webhook_answer(webhook))


@contextmanager
def _refused_webhook() -> Iterator[None]:
    """A webhook action's refusal as the API's problem answer."""
    try:
        yield
    except webhook_actions.WebhookRefused as refused:
        raise _refusal(refused.status, refused.detail, **refused.extra) from None


async def _webhook(request: web.Request, webhook_id: int) -> WebhookDetail:
    webhook = await _store(request).get_webhook(webhook_id)
    if webhook is None:
        raise _refusal(404, f"no webhook {webhook_id}")
    return webhook


# Links --------------------------------------------------------------------------------------------


@routes.get("/links")
async def links_page(request: web.Request) -> web.Response:
    listing = _validated(LinkListing, _query(request))
    merchants = None if listing.merchant_id is None else frozenset({listing.merchant_id})
    if listing.tenant is not None:
        running = request.config_dict[TENANTS].registry.named(listing.tenant)
        if running is None:
            raise _refusal(404, f"no tenant {listing.tenant} is running")
        owned = running.tenant.merchants
        if owned is not None:
            merchants = owned if merchants is None else merchants & owned
    found = await link_actions.tenant_links(
        _store(request), merchants, after=listing.cursor, limit=listing.limit + 1
    )
    return _page(found, listing.limit, lambda link: [link.merchant_id, link.external_id])


def _link_check(request: web.Request) -> LinkCheck:
    """What refuses a link whose merchant is not the tenant's that the request (`?tenant=`) or the link
    names, or is no running tenant's at all."""
    named = _validated(LinksFor, _query(request)).tenant
    return link_actions.link_check(
        (running.tenant for running in request.config_dict[TENANTS].registry), named
    )


@routes.put(r"/links/{merchant_id:\d+}/{external_id}")
async def put_link(request: web.Request) -> web.Response:
    target = _validated_json(LinkTarget, await request.read())
    check = _link_check(request)
    given = {
        "merchant_id": _path_id(request, "merchant_id"),
        "external_id": request.match_info["external_id"],
        "inquiry_id": target.inquiry_id,
    }
    link = _validated(link_actions.LinkInput, given).link()
    with _refused_link():
        saved = await link_actions.save_link(
            _store(request), link, check=check, now=_now(), new_delivery=request.config_dict[NEW_DELIVERY]
        )
    return json_response({**asdict(link), "woken": saved.woken})


@routes.delete(r"/links/{merchant_id:\d+}/{external_id}")
async def remove_link(request: web.Request) -> web.Response:
    merchant_id = _path_id(request, "merchant_id")
    # Trimmed as PUT and the CSV import trim it, so a link saved through either can be deleted by its URL.
    with _refused_link():
        await link_actions.delete_link(_store(request), merchant_id, request.match_info["external_id"])
    return web.Response(status=204)


@routes.post("/links")
async def import_links(request: web.Request) -> web.Response:
    body = await request.read()
    check = _link_check(request)
    new_delivery = request.config_dict[NEW_DELIVERY]
    if request.content_type == "text/csv":
        # surrogateescape: bytes that are not UTF-8 become their row's problem, not the whole file's.
        text = body.decode("utf-8", errors="surrogateescape")
        with _refused_link():
            done = await link_actions.import_csv(
                _store(request), text, check=check, now=_now(), new_delivery=new_delivery
            )
    else:
        items = _checked(lambda: _LINK_LIST.validate_json(body))
        # All or nothing, as for a bad item: one link held to another tenant refuses them all.
        for index, item in enumerate(items):
            if refusal := check(item.merchant_id, item.tenant):
                raise _refusal(409, f"[{index}]: {refusal}")
        links = [item.link() for item in items]
        done = await link_actions.import_links(
            _store(request), links, [], now=_now(), new_delivery=new_delivery
        )
    answer = {"saved": done.saved, "woken": done.woken, "problems": [asdict(p) for p in done.problems]}
    return json_response(answer)


@contextmanager
def _refused_link() -> Iterator[None]:
    """A link action's refusal as the API's problem answer; a bad part of the request named as a field."""
    try:
        yield
    except link_actions.LinkRefused as refused:
        if refused.field is None:
            raise _refusal(refused.status, refused.detail) from None
        errors = [{"field": refused.field, "detail": refused.detail}]
        raise _refusal(
            refused.status, f"{refused.field}: {refused.detail}", field=refused.field, errors=errors
        ) from None


# Stats --------------------------------------------------------------------------------------------


@routes.get("/stats")
async def stats(request: web.Request) -> web.Response:
    stats = await _store(request).stats(now=_now())
    running = {tenant.name for tenant in request.config_dict[TENANTS].registry}
    return json_response({**asdict(stats), "tenants_not_configured": stats.waiting_unconfigured(running)})


# Plumbing -----------------------------------------------------------------------------------------


def replay_answer(done: BulkReplay) -> dict[str, Any]:
    """A bulk replay as the API answers it: how many replayed and skipped, and the first skipped, with why."""
    return {
        "replayed": done.replayed,
        "skipped": len(done.skipped),
        "skipped_deliveries": [asdict(skip) for skip in done.skipped[:MAX_REPORTED]],
    }


def _store(request: web.Request) -> Store:
    return request.config_dict[STORE]


def _now() -> datetime:
    return datetime.now(UTC)


def _query(request: web.Request) -> dict[str, str | list[str]]:
    """The query string as a model reads it: a repeated key as a list, an empty value as if absent."""
    values: dict[str, list[str]] = {}
    for key, value in request.query.items():
        if value.strip():
            values.setdefault(key, []).append(value)
    return {key: found[0] if len(found) == 1 else found for key, found in values.items()}


def _path_id(request: web.Request, name: str) -> int:
    digits = request.match_info[name]  # the route admits digits only
    # By length first: int() refuses very long digit strings; and ids are SQLite int64s.
    if len(digits) > len(str(MAX_ID)) or int(digits) > MAX_ID:
        # Not repeated: the path can hold any number of digits.
        raise _refusal(404, f"{name} of {len(digits)} digits is beyond the int64 range")
    return int(digits)


def _page(items: Sequence[D], limit: int, key: Callable[[D], Sequence[int | str]]) -> web.Response:
    """One page of a listing read one item too far: that item tells whether there is a next page."""
    shown = items[:limit]
    next_cursor = page_cursor(key(shown[-1])) if len(items) > limit else None
    return json_response({"items": [asdict(item) for item in shown], "next_cursor": next_cursor})


def _validated(kind: type[B], data: object) -> B:
    return _checked(lambda: kind.model_validate(data))


def _validated_json(kind: type[B], body: bytes) -> B:
    # Strict: in JSON an id is a number, not `"7"` nor `true` (query strings are read leniently).
    return _checked(lambda: kind.model_validate_json(body, strict=True))


def _checked(parse: Callable[[], M]) -> M:
    try:
        return parse()
    except ValidationError as error:
        raise _invalid(error) from None


def _invalid(error: ValidationError) -> web.HTTPException:
    """400 naming the first bad field (as `state`, `[3].inquiry_id` or `body`), and the others after it."""
    problems = [
        {"field": _field(item["loc"]), "detail": item["msg"].removeprefix("Value error, ")}
        for item in error.errors(include_url=False, include_input=False, include_context=False)
    ]
    first = problems[0]
    return _refusal(
        400, f"{first['field']}: {first['detail']}", field=first["field"], errors=problems[:MAX_REPORTED]
    )


def _field(location: tuple[int | str, ...]) -> str:
    name = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)
    return name.removeprefix(".") or "body"


_REFUSALS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
}


def _refusal(status: int, detail: str, **extra: Any) -> web.HTTPException:
    """A problem answer to raise, so a handler stops at the first thing wrong."""
    answer = problem(status, HTTPStatus(status).phrase, detail, **extra)
    return _REFUSALS[status](text=answer.text, content_type=answer.content_type)
