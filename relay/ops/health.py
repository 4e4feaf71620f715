"""`/healthz` says the process serves; `/readyz` says whether it can do its job now, and if not, why."""

from aiohttp import web

from relay.keys import READINESS_CHECKS

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    problems: list[str] = []
    for check in request.app[READINESS_CHECKS]:
        problems += await check()
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})
