"""The composition root: builds the aiohttp application from settings and wires every part once."""

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable

import structlog
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
from relay.ops.shared_metrics import SHARE_INTERVAL_S, shared_directory
from relay.pages import PREFIX as CONSOLE
from relay.pages import create_console_app
from relay.quivo.sessions import quivo_session
from relay.settings import Settings, SettingsError
from relay.store import create_store
from relay.store.api import Store
from relay.tenants.registry import RunningTenants
from relay.throttle import FailureThrottle
from relay.worker import Worker

log = structlog.get_logger("relay")
# The worker itself, for the reload; WORKER shows the other parts only what they may read of it.
DELIVERY_WORKER = web.AppKey("delivery_worker", Worker)


def create_app(settings: Settings, *, run_worker: bool) -> web.Application:
    """The relay: webhook intake, OAuth token endpoint and health, plus the delivery worker when asked."""
    app = _relay_process(settings, run_worker=run_worker, serves_webhooks=True)
    app[OAUTH_FAILURES] = FailureThrottle()
    app.add_routes(bringg_routes)
    app.add_routes(health_routes)
    app.add_routes(openapi_routes)
    if settings.relay_admin_token is not None:
        admin_token = settings.relay_admin_token.get_secret_value()
        app.add_subapp("/admin", create_admin_app(admin_token))
        console = create_console_app(admin_token, trust_forwarded_proto=settings.relay_trust_forwarded_proto)
        app.add_subapp(CONSOLE, console)
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
    # Made once here; a reload (SIGHUP) replaces them whole.
    app[TENANTS] = RunningTenants(settings, serves_webhooks=serves_webhooks, runs_worker=run_worker)
    app[NEW_DELIVERY] = asyncio.Event()
    app[READINESS_CHECKS] = []
    app[METRICS] = RelayMetrics(shared=shared_directory())
    app[METRICS].count_tenants(running.name for running in app[TENANTS].registry)
    if app[METRICS].shared is not None:
        # First in, so last out: its final share comes after the worker's last count.
        app.cleanup_ctx.append(_share_counts)
    app[READINESS] = Readiness()
    app.cleanup_ctx.append(_store(delivers=run_worker, serves_webhooks=serves_webhooks))
    if run_worker:
        app.cleanup_ctx.append(_worker)
    app.add_routes(metrics_routes)
    return app


def store_for(settings: Settings, *, serves_webhooks: bool = False) -> Store:
    """The store DATABASE_URL names, not open yet: the one place that sizes it from the settings."""
    return create_store(
        settings.database_url,
        timeout_s=settings.relay_store_timeout_s,
        pool_size=settings.relay_db_pool_size,
        serves_webhooks=serves_webhooks,
    )


def _store(*, delivers: bool, serves_webhooks: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """The store, open for the application's life; a delivering process holds its worker slot too."""

    async def opened(app: web.Application) -> AsyncIterator[None]:
        store = store_for(app[SETTINGS], serves_webhooks=serves_webhooks)
        # The slot before opening, so a refused worker (SQLite has one) leaves nothing half open behind it.
        with store.worker_slot() if delivers else contextlib.nullcontext():
            await store.open()
            app[STORE] = store
            app[READINESS_CHECKS].append(store.readiness_problems)
            yield
            await store.close()

    return opened


async def _share_counts(app: web.Application) -> AsyncIterator[None]:
    """This process's counts added to its shared files every SHARE_INTERVAL_S, and once more as it stops."""
    metrics = app[METRICS]

    async def every_interval() -> None:
        while True:
            await asyncio.sleep(SHARE_INTERVAL_S)
            metrics.share()

    sharing = asyncio.create_task(every_interval(), name="relay-share-metrics")
    yield
    sharing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sharing
    metrics.share()


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
    app[WORKER] = app[DELIVERY_WORKER] = worker
    worker.start()
    yield
    await worker.stop()


async def reload_tenants_on_sighup(app: web.Application) -> AsyncIterator[None]:
    """SIGHUP reloads the tenants file (reload_tenants), one reload after another, while the process runs.

    The process installs it (relay/cli.py) after its other contexts: the worker is running by then.
    """
    loop = asyncio.get_running_loop()
    one_at_a_time = asyncio.Lock()
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        async with one_at_a_time:
            await reload_tenants(app)

    def on_sighup() -> None:
        task = loop.create_task(reload(), name="relay-tenants-reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    yield
    loop.remove_signal_handler(signal.SIGHUP)
    # A reload under way finishes before the worker stops, so the worker stops the loops it started.
    await asyncio.gather(*reloads)


async def reload_tenants(app: web.Application) -> None:
    """RELAY_TENANTS_FILE again: if it validates, its tenants replace the running ones whole, at the door
    and in the worker's loops; if not, one line with its problems and the running tenants stay."""
    try:
        registry = app[TENANTS].reload()
    except SettingsError as error:
        log.error("tenants.reload_refused", problems=error.problems)
        return
    names = [running.name for running in registry]
    app[METRICS].count_tenants(names)
    if DELIVERY_WORKER in app:
        await app[DELIVERY_WORKER].reload([running.tenant for running in registry])
    log.info("tenants.reloaded", tenants=names)
