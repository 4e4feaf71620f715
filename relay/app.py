"""The composition root: builds the aiohttp application from settings and wires every part once."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from relay.bringg.routes import routes as bringg_routes
from relay.http import guard_malformed_requests, request_context
from relay.keys import (
    NEW_DELIVERY,
    OAUTH_FAILURES,
    READINESS_CHECKS,
    SETTINGS,
    STORE,
    TENANTS,
    WORKER,
)
from relay.ops.admin import create_admin_app
from relay.ops.health import READINESS, Readiness
from relay.ops.health import routes as health_routes
from relay.ops.health import worker_routes as worker_health_routes
from relay.ops.metrics import METRICS, RelayMetrics
from relay.ops.metrics import routes as metrics_routes
from relay.ops.openapi import routes as openapi_routes
from relay.quivo.sessions import quivo_session
from relay.settings import Settings
from relay.store import create_store
from relay.store.api import Store
from relay.tenants.registry import RunningTenants, load_tenants
from relay.throttle import FailureThrottle
from relay.worker import Worker


def create_app(settings: Settings, *, run_worker: bool) -> web.Application:
    """The relay: webhook intake, OAuth token endpoint and health, plus the delivery worker when asked."""
    app = _relay_process(settings, run_worker=run_worker, serves_webhooks=True)
    app[OAUTH_FAILURES] = FailureThrottle()
    app.add_routes(bringg_routes)
    app.add_routes(health_routes)
    app.add_routes(openapi_routes)
    if settings.relay_admin_token is not None:
        app.add_subapp("/admin", create_admin_app(settings.relay_admin_token.get_secret_value()))
    return app


def create_worker_app(settings: Settings) -> web.Application:
    """`relay worker`: the delivery worker, and what probes and scrapers ask of it (no webhooks, no admin)."""
    app = _relay_process(settings, run_worker=True, serves_webhooks=False)
    app.add_routes(worker_health_routes)
    return app


def _relay_process(settings: Settings, *, run_worker: bool, serves_webhooks: bool) -> web.Application:
    """What every relay process holds: settings, tenants, metrics, the database, the worker if asked, and
    /metrics."""
    guard_malformed_requests()
    app = web.Application(client_max_size=settings.relay_max_body_bytes, middlewares=[request_context])
    app[SETTINGS] = settings
    # Made once here (the start refused a file that does not validate); a reload replaces them whole.
    registry = load_tenants(settings, serves_webhooks=serves_webhooks, runs_worker=run_worker)
    app[TENANTS] = RunningTenants(registry)
    app[NEW_DELIVERY] = asyncio.Event()
    app[READINESS_CHECKS] = []
    app[METRICS] = RelayMetrics()
    app[METRICS].count_tenants(running.name for running in registry)
    app[READINESS] = Readiness()
    app.cleanup_ctx.append(_store(delivers=run_worker))
    if run_worker:
        app.cleanup_ctx.append(_worker)
    app.add_routes(metrics_routes)
    return app


def store_for(settings: Settings) -> Store:
    """The store DATABASE_URL names, not open yet: the one place that sizes it from the settings."""
    return create_store(
        settings.database_url, timeout_s=settings.relay_store_timeout_s, pool_size=settings.relay_db_pool_size
    )


def _store(*, delivers: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """The store, open for the application's life; a delivering process holds its worker slot too."""

    async def opened(app: web.Application) -> AsyncIterator[None]:
        store = store_for(app[SETTINGS])
        # The slot before opening, so a refused worker (SQLite has one) leaves nothing half open behind it.
        with store.worker_slot() if delivers else contextlib.nullcontext():
            await store.open()
            app[STORE] = store
            app[READINESS_CHECKS].append(store.readiness_problems)
            yield
            await store.close()

    return opened


async def _worker(app: web.Application) -> AsyncIterator[None]:
    """The delivery loops, a Quivo session each; they stop before the database closes (reverse order)."""
    settings, metrics = app[SETTINGS], app[METRICS]
    worker = Worker(
        settings,
        app[STORE],
        metrics,
        [running.tenant for running in app[TENANTS].registry],
        lambda tenant: quivo_session(settings, tenant, metrics),
        wake=app[NEW_DELIVERY],
    )
    app[WORKER] = worker
    worker.start()
    yield
    await worker.stop()
