"""What operators do to a quarantined webhook, the same from the admin API, the CLI and the console."""

import asyncio
import base64
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict

from relay.bringg.payload import judge
from relay.bringg.tenancy import judged_for
from relay.store.api import Store
from relay.store.records import StoredStatus, WebhookDetail
from relay.tenants.tenant import Tenant

log = structlog.get_logger("relay.admin")

# Enough to say why in a sentence or two; an operator's note, not a document.
MAX_REASON_CHARS = 500


class WebhookRefused(Exception):
    """Why an action on a webhook was not done; `status` is the HTTP status the admin API answers."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def _readable_reason(given: str) -> str:
    reason = given.strip()
    if not reason:
        raise ValueError("say why the webhook is dismissed")
    if len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"has {len(reason)} characters, at most {MAX_REASON_CHARS}")
    # A line for a log field, a terminal and a page; a lone surrogate is no text at all.
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in reason):
        raise ValueError("holds control characters")
    return reason


class Dismissal(BaseModel):
    """Why an operator dismisses a webhook: one line of text, trimmed."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    reason: Annotated[str, AfterValidator(_readable_reason)]


@dataclass(frozen=True)
class Reprocessed:
    """What judging a quarantined webhook again made of it."""

    status: StoredStatus
    delivery_id: int | None = None
    errors: list[str] = field(default_factory=list)

    def answer(self) -> dict[str, Any]:
        """As the admin API answers it: the delivery and the errors only when there are some."""
        answer: dict[str, Any] = {"status": self.status}
        if self.delivery_id is not None:
            answer["delivery_id"] = self.delivery_id
        if self.errors:
            answer["errors"] = self.errors
        return answer


async def reprocess(
    store: Store,
    webhook_id: int,
    *,
    tenant_named: Callable[[str], Tenant | None],
    retention_days: float,
    now: datetime,
    new_delivery: asyncio.Event | None = None,
) -> Reprocessed:
    """Judge a quarantined webhook's body again as if it arrived `now`, for the tenant it came in for.

    Raises WebhookRefused: 404 when there is no such webhook, 409 when it is not quarantined (a dismissed
    one included) or its tenant is not running. `new_delivery` is set (waking this process's worker) when
    a delivery became due.
    """
    webhook = await _webhook(store, webhook_id)
    if webhook.status != "quarantined":
        detail = f"webhook {webhook_id} is {webhook.status}: only quarantined ones are reprocessed"
        raise WebhookRefused(409, detail, webhook_status=webhook.status)
    # Judged for its tenant as at its arrival: a merchant not of the tenant's stays quarantined.
    tenant = tenant_named(webhook.tenant)
    if tenant is None:
        raise WebhookRefused(
            409, f"webhook {webhook_id} came for tenant {webhook.tenant}, which is not running"
        )
    judgement = judged_for(tenant, judge(webhook.body))
    # As for a new arrival: past the retention window a delivered version may be gone, so check Quivo first.
    recheck_before = now - timedelta(days=retention_days)
    stored = await store.reprocess_webhook(webhook_id, judgement, now=now, recheck_before=recheck_before)
    if stored is None:
        raise WebhookRefused(409, f"webhook {webhook_id} is no longer quarantined")
    if stored.status == "accepted" and new_delivery is not None:
        new_delivery.set()
    log.info(
        "admin.webhook_reprocessed",
        webhook_id=webhook_id,
        outcome=stored.status,
        delivery_id=stored.delivery_id,
        superseded=stored.superseded or None,
        errors=list(judgement.errors) or None,
    )
    return Reprocessed(stored.status, stored.delivery_id, list(judgement.errors))


async def dismiss(store: Store, webhook_id: int, dismissal: Dismissal, *, now: datetime) -> WebhookDetail:
    """Close a quarantined webhook without delivering it; the webhook as it is now.

    Raises WebhookRefused: 404 when there is no such webhook, 409 when it is not quarantined.
    """
    before = await store.dismiss_webhook(webhook_id, dismissal.reason, now=now)
    if before is None:
        raise WebhookRefused(404, f"no webhook {webhook_id}")
    if before != "quarantined":
        detail = f"webhook {webhook_id} is {before}: only quarantined ones are dismissed"
        raise WebhookRefused(409, detail, webhook_status=before)
    webhook = await _webhook(store, webhook_id)
    log.info("admin.webhook_dismissed", webhook_id=webhook_id, tenant=webhook.tenant, reason=dismissal.reason)
    return webhook


def webhook_answer(webhook: WebhookDetail) -> dict[str, Any]:
    """A stored webhook as the admin API answers it: its body as UTF-8 text, or base64 when it is not."""
    try:
        body = {"body": webhook.body.decode("utf-8"), "body_encoding": "utf-8"}
    except UnicodeDecodeError:
        body = {"body": base64.b64encode(webhook.body).decode("ascii"), "body_encoding": "base64"}
    return {**asdict(webhook), **body}


async def _webhook(store: Store, webhook_id: int) -> WebhookDetail:
    webhook = await store.get_webhook(webhook_id)
    if webhook is None:
        raise WebhookRefused(404, f"no webhook {webhook_id}")
    return webhook
