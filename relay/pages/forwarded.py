"""The scheme a request came over, as the proxy that ended TLS in front of the relay says it came."""

from aiohttp import web
from aiohttp.typedefs import Middleware

from relay.http import Handler


def forwarded_scheme() -> Middleware:
    """Each request as over the scheme the last X-Forwarded-Proto value names (http or https).

    The last: the value the proxy in front of the relay added (a client may send one of its own first).
    Only for a relay nothing reaches but through that proxy, which sets the header on every request.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        forwarded = request.headers.get("X-Forwarded-Proto")
        if forwarded is not None:
            scheme = forwarded.rsplit(",", 1)[-1].strip().lower()
            if scheme in ("http", "https") and scheme != request.scheme:
                request = request.clone(scheme=scheme)
        return await handler(request)

    return middleware
