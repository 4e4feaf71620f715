"""The composition root: builds the aiohttp application from settings and wires every part once."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from relay.bringg.auth import Authenticator
from relay.bringg.routes import routes as bringg_routes
from relay.http import guard_malformed_requests, request_context
from relay.keys import AUTHENTICATOR, NEW_DELIVERY, READINESS_CHECKS, SETTINGS, STORE, WORKER
from relay.ops.admin import create_admin_app
from relay.ops.health import READINESS, Readiness
from relay.ops.health import routes as health_routes
from relay.ops.health import worker_routes as worker_health_routes
from relay.ops.metrics import METRICS, RelayMetrics
from relay.ops.metrics import routes as metrics_routes
from relay.ops.openapi import routes as openapi_routes
from relay.quivo.client import QuivoClient
from relay.settings import Settings
from relay.store import create_store
from relay.store.api import Store
from relay.worker import Worker


def create_app(settings: Settings, *, run_worker: bool) -> web.Application:
    """The relay: webhook intake, OAuth token endpoint and health, plus the delivery worker when asked."""
    app = _relay_process(settings, run_worker=run_worker)
    app[AUTHENTICATOR] = Authenticator(settings)
    app.add_routes(bringg_routes)
    app.add_routes(health_routes)
    app.add_routes(openapi_routes)
    if settings.relay_admin_token is not None:
        app.add_subapp("/admin", create_admin_app(settings.relay_admin_token.get_secret_value()))
    return app


def create_worker_app(settings: Settings) -> web.Application:
    """`relay worker`: the delivery worker, and what probes and scrapers ask of it (no webhooks, no admin)."""
    app = _relay_process(settings, run_worker=True)
    app.add_routes(worker_health_routes)
    return app


def _relay_process(settings: Settings, *, run_worker: bool) -> web.Application:
    """What every relay process holds: settings, metrics, the database, the worker if asked, /metrics."""
    guard_malformed_requests()
    app = web.Application(client_max_size=settings.relay_max_body_bytes, middlewares=[request_context])
    app[SETTINGS] = settings
    app[NEW_DELIVERY] = asyncio.Event()
    app[READINESS_CHECKS] = []
    app[METRICS] = RelayMetrics()
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
    """The Quivo session and the delivery loop; they stop before the database closes (reverse order)."""
    settings = app[SETTINGS]
    timeout = aiohttp.ClientTimeout(
        total=settings.quivo_timeout_s, connect=min(5.0, settings.quivo_timeout_s)
    )
    connector = aiohttp.TCPConnector(limit=settings.quivo_max_concurrency + 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = QuivoClient(
            session,
            base_url=settings.quivo_base_url.rstrip("/"),
            api_key=_secret(settings.quivo_api_key),
            username=settings.quivo_username or "",
            password=_secret(settings.quivo_password),
            auth_prefix=settings.quivo_auth_prefix,
            token_ttl_s=settings.quivo_token_ttl_s,
            observe=app[METRICS].quivo_request,
        )
        worker = Worker(settings, app[STORE], client, app[METRICS], wake=app[NEW_DELIVERY])
        app[WORKER] = worker
        worker.start()
        yield
        await worker.stop()


def _secret(value: object) -> str:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get else ""
