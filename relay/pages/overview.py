"""The console's first page: how the relay is doing at a glance."""

from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from relay.keys import STORE

routes = web.RouteTableDef()


@routes.get("/console", name="overview")
@aiohttp_jinja2.template("overview.html")
async def overview(request: web.Request) -> dict[str, Any]:
    stats = await request.config_dict[STORE].stats(now=datetime.now(UTC))
    return {"deliveries": stats.deliveries}
