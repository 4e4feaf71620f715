"""The composition root: builds the aiohttp application from settings and wires every part once."""

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from relay.bringg.auth import Authenticator
from relay.bringg.routes import routes as bringg_routes
from relay.http import request_context
from relay.keys import AUTHENTICATOR, DATABASE, NEW_DELIVERY, READINESS_CHECKS, SETTINGS
from relay.ops.health import routes as health_routes
from relay.settings import Settings
from relay.store.db import Database


def create_app(settings: Settings) -> web.Application:
    """The relay's web application: webhook intake, OAuth token endpoint, health."""
    app = web.Application(client_max_size=settings.relay_max_body_bytes, middlewares=[request_context])
    app[SETTINGS] = settings
    app[AUTHENTICATOR] = Authenticator(settings)
    app[NEW_DELIVERY] = asyncio.Event()
    app[READINESS_CHECKS] = []
    app.cleanup_ctx.append(_database)
    app.add_routes(bringg_routes)
    app.add_routes(health_routes)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    database = Database(app[SETTINGS].database_path, timeout_s=app[SETTINGS].relay_store_timeout_s)
    await database.open()
    app[DATABASE] = database
    app[READINESS_CHECKS].append(database.readiness_problems)
    yield
    await database.close()
