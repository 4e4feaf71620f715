"""What operators do to the order-to-inquiry links, the same from the admin API, the CLI and the console."""

import asyncio
from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

import structlog
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from relay.domain.ids import MAX_ID
from relay.linkfile import (
    HeaderProblem,
    Link,
    LinkCheck,
    LinkFileProblem,
    external_id_problem,
    parse_links_csv,
)
from relay.store.api import Store
from relay.store.filters import TenantName, whole_number
from relay.store.operations import LinkImport
from relay.store.records import LinkUpsert
from relay.tenants.links import link_refusal
from relay.tenants.tenant import Tenant

# The admin API's logger: a change is the same `admin.*` line whether the API, the console or the CLI asked.
log = structlog.get_logger("relay.admin")

# Strict, so neither `"7"` nor `true` passes for an id; but JSON's `7.0` does.
LinkId = Annotated[int, BeforeValidator(whole_number), Field(ge=1, le=MAX_ID)]


class LinkRefused(Exception):
    """Why a link action was not done: `status` is the HTTP status the admin API answers, `field` the part
    of the request at fault when the request is (400)."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


def _usable_external_id(external_id: str) -> str:
    problem = external_id_problem(external_id)
    if problem:
        raise ValueError(problem.removeprefix("external_id "))
    return external_id


class LinkInput(BaseModel):
    """One link as an operator sends it; strict, so neither `"7"` nor `true` passes for an id."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    merchant_id: LinkId
    external_id: Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_usable_external_id)]
    inquiry_id: LinkId
    tenant: TenantName | None = None

    def link(self) -> Link:
        return Link(self.merchant_id, self.external_id, self.inquiry_id)


async def tenant_links(
    store: Store,
    merchants: frozenset[int] | None,
    *,
    after: tuple[int, str] | None,
    limit: int,
    external_id: str | None = None,
) -> list[Link]:
    """Up to `limit` links of these merchants (None: of any) in key order, starting past the key `after`;
    with an `external_id`, that order's only."""
    if merchants is None:
        return await store.list_links(after=after, limit=limit, external_id=external_id)
    found: list[Link] = []
    for merchant_id in sorted(merchants):
        if len(found) == limit:
            break
        if after is None or merchant_id >= after[0]:
            found += await store.list_links(
                merchant_id=merchant_id, after=after, limit=limit - len(found), external_id=external_id
            )
    return found


def link_check(tenants: Iterable[Tenant], named: str | None) -> LinkCheck:
    """What refuses a link whose merchant is not the tenant's that the request (`named`) or the link names,
    or is no running tenant's at all."""
    known = list(tenants)
    return lambda merchant_id, row: link_refusal(known, merchant_id, row, named)


async def save_link(
    store: Store, link: Link, *, check: LinkCheck, now: datetime, new_delivery: asyncio.Event | None = None
) -> LinkUpsert:
    """Save one link, waking its unmatched deliveries; LinkRefused (409) when `check` refuses its merchant."""
    if refusal := check(link.merchant_id, None):
        raise LinkRefused(409, refusal)
    saved = await store.save_links([link], now=now)
    _woke(saved.woken, new_delivery)
    log.info("admin.link_saved", **asdict(link), woken=len(saved.woken))
    return saved


async def delete_link(store: Store, merchant_id: int, external_id: str) -> None:
    """Remove one link, its order id trimmed; LinkRefused: 400 for an id no link can have, 404 for none."""
    external_id = external_id.strip()
    if problem := external_id_problem(external_id):
        raise LinkRefused(400, problem.removeprefix("external_id "), field="external_id")
    if not await store.delete_link(merchant_id, external_id):
        raise LinkRefused(404, f"no link for merchant {merchant_id}'s order {external_id!r}")
    log.info("admin.link_deleted", merchant_id=merchant_id, external_id=external_id)


async def import_csv(
    store: Store, text: str, *, check: LinkCheck, now: datetime, new_delivery: asyncio.Event | None = None
) -> LinkImport:
    """Save the good rows of a links CSV (as `relay links import` reads a file); each bad row is a problem.

    LinkRefused (400) when the header cannot be read: then no row can be, and nothing is saved.
    """
    links, problems = parse_links_csv(text, check)
    if problems and isinstance(problems[0], HeaderProblem):
        raise LinkRefused(400, f"line {problems[0].line}: {problems[0].reason}", field="body")
    return await import_links(store, links, problems, now=now, new_delivery=new_delivery)


async def import_links(
    store: Store,
    links: list[Link],
    problems: list[LinkFileProblem],
    *,
    now: datetime,
    new_delivery: asyncio.Event | None = None,
) -> LinkImport:
    """Save links already read (one commit), with the problems of the rows that were not links."""
    saved = await store.save_links(links, now=now)
    _woke(saved.woken, new_delivery)
    return imported(LinkImport(saved.saved, len(saved.woken), problems))


def imported(done: LinkImport) -> LinkImport:
    """Log an import as done: `relay links import` saves a large file in batches (relay.store.operations)
    behind a progress line, and logs once that line has ended."""
    log.info("admin.links_imported", saved=done.saved, woken=done.woken, problems=len(done.problems))
    return done


def _woke(woken: list[int], new_delivery: asyncio.Event | None) -> None:
    if woken and new_delivery is not None:
        new_delivery.set()
