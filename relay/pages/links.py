"""The console's links: search, add, change and delete one, upload a CSV, download the CSV."""

from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiMapping
from pydantic import ValidationError
from yarl import URL

from relay.domain.ids import MAX_ID
from relay.keys import NEW_DELIVERY, STORE, TENANTS
from relay.linkfile import Link, LinkCheck, external_id_problem, links_to_csv
from relay.ops import link_actions
from relay.pages.notices import see_other
from relay.store.api import Store
from relay.tenants.registry import TenantRegistry

routes = web.RouteTableDef()

PAGE_SIZE = 100
LIST = "/console/links"
# As `relay links export` reads them: a page of the table at a time.
EXPORT_BATCH = 5000
_SEARCH_FIELDS = ("merchant_id", "external_id", "tenant")


@routes.get(LIST, name="links")
@aiohttp_jinja2.template("links.html")
async def links_page(request: web.Request) -> dict[str, Any]:
    form = {name: request.query.get(name, "").strip() for name in _SEARCH_FIELDS}
    registry = _registry(request)
    searched = {name: value for name, value in form.items() if value}
    export = URL(f"{LIST}/export.csv").with_query({"tenant": form["tenant"]} if form["tenant"] else {})
    context: dict[str, Any] = {
        "form": form,
        "tenants": sorted(running.name for running in registry),
        "searched": bool(searched),
        "export": str(export),
        "links": [],
        "problem": None,
        "next_page": None,
        "first_page": None,
    }
    merchant_id = _whole(form["merchant_id"])
    if form["merchant_id"] and merchant_id is None:
        return {**context, "problem": "A merchant id is a whole number."}
    if form["external_id"] and (problem := external_id_problem(form["external_id"])):
        return {**context, "problem": f"No link has that order id: {problem}."}
    merchants = _merchants(registry, form["tenant"] or None, merchant_id)
    after_merchant = _whole(request.query.get("after_merchant", ""))
    after = None if after_merchant is None else (after_merchant, request.query.get("after_order", ""))
    found = await link_actions.tenant_links(
        _store(request), merchants, after=after, limit=PAGE_SIZE + 1, external_id=form["external_id"] or None
    )
    shown = found[:PAGE_SIZE]
    if len(found) > PAGE_SIZE:
        page = {"after_merchant": str(shown[-1].merchant_id), "after_order": shown[-1].external_id}
        context["next_page"] = str(URL(LIST).with_query({**searched, **page}))
    if after is not None:
        context["first_page"] = str(URL(LIST).with_query(searched))
    return {**context, "links": shown}


@routes.get(f"{LIST}/edit", name="link_edit")
@aiohttp_jinja2.template("link_edit.html")
async def edit_page(request: web.Request) -> dict[str, Any]:
    """The form to add a link, or (given its merchant and order id) to change one."""
    merchant_id = _whole(request.query.get("merchant_id", ""))
    external_id = request.query.get("external_id", "")
    current = None
    if merchant_id is not None and external_id:
        found = await _store(request).list_links(merchant_id=merchant_id, external_id=external_id, limit=1)
        current = found[0] if found else None
    return {"link": current, "tenants": sorted(running.name for running in _registry(request))}


@routes.post(f"{LIST}/save")
async def save(request: web.Request) -> web.Response:
    form = await request.post()
    given = {name: _text(form, name) for name in ("merchant_id", "external_id", "inquiry_id")}
    try:
        # Lax: a form's fields are text; the ids are still whole numbers in range, the order id trimmed.
        link = link_actions.LinkInput.model_validate(given, strict=False).link()
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        problem = f"{first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}"
        back = URL(f"{LIST}/edit").with_query(
            {name: given[name] for name in ("merchant_id", "external_id") if given[name]}
        )
        raise see_other(str(back), f"Not saved: {problem}.") from None
    try:
        saved = await link_actions.save_link(
            _store(request),
            link,
            check=_check(request, _text(form, "tenant") or None),
            now=_now(),
            new_delivery=request.config_dict[NEW_DELIVERY],
        )
    except link_actions.LinkRefused as refused:
        raise see_other(LIST, f"Not saved: {refused.detail}.") from None
    found = URL(LIST).with_query(merchant_id=link.merchant_id, external_id=link.external_id)
    woke = f"; it woke {len(saved.woken)} unmatched deliveries" if saved.woken else ""
    raise see_other(str(found), f"Saved: {_named(link)} belongs to inquiry {link.inquiry_id}{woke}.")


@routes.post(f"{LIST}/delete")
async def delete(request: web.Request) -> web.Response:
    form = await request.post()
    merchant_id = _whole(_text(form, "merchant_id"))
    external_id = _text(form, "external_id")
    if merchant_id is None:
        raise see_other(LIST, "Nothing deleted: a merchant id is a whole number.")
    try:
        await link_actions.delete_link(_store(request), merchant_id, external_id)
    except link_actions.LinkRefused as refused:
        raise see_other(LIST, f"Nothing deleted: {refused.detail}.") from None
    link = f"merchant {merchant_id}'s order {external_id.strip()}"
    raise see_other(str(URL(LIST).with_query(merchant_id=merchant_id)), f"Deleted the link of {link}.")


@routes.post(f"{LIST}/import")
async def upload(request: web.Request) -> web.Response:
    """A links CSV uploaded, saved as `relay links import` saves a file; the result, each bad line named."""
    form = await request.post()
    upload = form.get("file")
    tenant = _text(form, "tenant") or None
    context: dict[str, Any] = {"tenant": tenant, "done": None, "problem": None}
    if not isinstance(upload, web.FileField):
        context["problem"] = "Choose a CSV file to upload."
        return aiohttp_jinja2.render_template("links_imported.html", request, context, status=400)
    context["filename"] = upload.filename
    # surrogateescape: bytes that are not UTF-8 become their row's problem, not the whole file's.
    text = upload.file.read().decode("utf-8", errors="surrogateescape")
    try:
        context["done"] = await link_actions.import_csv(
            _store(request),
            text,
            check=_check(request, tenant),
            now=_now(),
            new_delivery=request.config_dict[NEW_DELIVERY],
        )
    except link_actions.LinkRefused as refused:
        context["problem"] = refused.detail
        return aiohttp_jinja2.render_template("links_imported.html", request, context, status=400)
    return aiohttp_jinja2.render_template("links_imported.html", request, context)


@routes.get(f"{LIST}/export.csv", name="links_export")
async def download(request: web.Request) -> web.StreamResponse:
    """Every link (of one tenant's merchants, with its column) as `relay links export` writes them."""
    tenant = request.query.get("tenant", "").strip() or None
    merchants = _merchants(_registry(request), tenant, None)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{f"links-{tenant}" if tenant else "links"}.csv"',
        }
    )
    await response.prepare(request)
    after: tuple[int, str] | None = None
    header = True
    while page := await link_actions.tenant_links(
        _store(request), merchants, after=after, limit=EXPORT_BATCH
    ):
        text = links_to_csv(page, tenant)
        await response.write((text if header else text.split("\n", 1)[1]).encode())
        header = False
        after = (page[-1].merchant_id, page[-1].external_id)
    if header:
        await response.write(links_to_csv([], tenant).encode())
    await response.write_eof()
    return response


def _merchants(
    registry: TenantRegistry, tenant: str | None, merchant_id: int | None
) -> frozenset[int] | None:
    """The merchants whose links to list: the tenant's (None: any), narrowed to `merchant_id` if given."""
    merchants = None if merchant_id is None else frozenset({merchant_id})
    if tenant is None:
        return merchants
    running = registry.named(tenant)
    if running is None:
        raise web.HTTPNotFound(text=f"No tenant {tenant} is running.")
    owned = running.tenant.merchants
    if owned is None:
        return merchants
    return owned if merchants is None else merchants & owned


def _check(request: web.Request, tenant: str | None) -> LinkCheck:
    return link_actions.link_check((running.tenant for running in _registry(request)), tenant)


def _named(link: Link) -> str:
    return f"merchant {link.merchant_id}'s order {link.external_id}"


def _text(form: MultiMapping[Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _whole(digits: str) -> int | None:
    digits = digits.strip()
    # By length first: int() refuses very long digit strings; and ids are int64s.
    if not digits.isascii() or not digits.isdigit() or len(digits) > len(str(MAX_ID)) or int(digits) > MAX_ID:
        return None
    return int(digits)


def _registry(request: web.Request) -> TenantRegistry:
    return request.config_dict[TENANTS].registry


def _store(request: web.Request) -> Store:
    return request.config_dict[STORE]


def _now() -> datetime:
    return datetime.now(UTC)
