"""`GET /openapi.json`: the OpenAPI 3.1 document of every public endpoint, served as packaged."""

from importlib.resources import files

from aiohttp import web

# Read once at import: the document ships inside the package and cannot change while the process runs.
DOCUMENT = files("relay.ops").joinpath("openapi.json").read_bytes()

routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=DOCUMENT, content_type="application/json")
