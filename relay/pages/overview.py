"""The console's overview: deliveries by state, the backlog, activity, workers, pauses and quarantine."""

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from relay.domain.delivery import DELIVERY_STATES
from relay.keys import STORE, TENANTS
from relay.ops.health import worker_beats
from relay.pages.chart import activity_chart
from relay.store.filters import WebhookFilter
from relay.store.records import UNFINISHED_STATES

# "The last hours": enough to see a morning's trend, few enough points (one a minute) to read.
CHART_SPAN = timedelta(hours=3)
# The newest quarantined webhooks the overview names; the quarantine page lists them all.
QUARANTINE_SHOWN = 5

routes = web.RouteTableDef()


@routes.get("/console", name="overview")
@aiohttp_jinja2.template("overview.html")
async def overview(request: web.Request) -> dict[str, Any]:
    store = request.config_dict[STORE]
    now = datetime.now(UTC)
    stats = await store.stats(now=now)
    running = frozenset(tenant.name for tenant in request.config_dict[TENANTS].registry)
    newest_beat, workers = await worker_beats(store, now=now)
    return {
        "now": now,
        "states": DELIVERY_STATES,
        "stats": stats,
        # A table per tenant only says more than the totals when there are several.
        "tenants": stats.tenants if len(stats.tenants) > 1 else {},
        "unconfigured": {
            name: sum(stats.tenants[name][state] for state in UNFINISHED_STATES)
            for name in stats.waiting_unconfigured(running)
        },
        "chart": activity_chart(await store.activity(since=now - CHART_SPAN, now=now)),
        "chart_hours": int(CHART_SPAN.total_seconds() // 3600),
        "newest_beat": newest_beat,
        "workers": workers,
        "pauses": await store.account_pauses(now=now),
        "quarantined": await store.list_webhooks(
            WebhookFilter(status=("quarantined",)), limit=QUARANTINE_SHOWN
        ),
    }
