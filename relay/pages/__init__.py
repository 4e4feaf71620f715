"""The operators' console at /console: server-rendered pages behind a sign-in with the admin token."""

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import aiohttp_jinja2
import jinja2
from aiohttp import web

from relay.console import duration, relative
from relay.pages import deliveries, links, overview, quarantine, sign_in
from relay.pages.forwarded import forwarded_scheme
from relay.pages.guard import KEY, console_guard
from relay.pages.sessions import signing_key
from relay.throttle import FailureThrottle

PREFIX = "/console"
# Each page module's `routes` (paths under /console/...): a new page adds its module here, one line.
PAGE_MODULES: list[ModuleType] = [
    sign_in,
    overview,
    deliveries,
    quarantine,
    links,
]

_HERE = Path(__file__).parent


def utc(instant: datetime) -> str:
    """An instant as pages show it: `2026-12-02 01:30:05 UTC`."""
    return f"{instant.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


# For every template: `{{ seconds|duration }}`, `{{ instant|relative(now) }}`, `{{ instant|utc }}`.
FILTERS: dict[str, Callable[..., str]] = {"duration": duration, "relative": relative, "utc": utc}


def create_console_app(admin_token: str, *, trust_forwarded_proto: bool = False) -> web.Application:
    """The console as a sub-application to mount at PREFIX; only the admin token signs anyone in. With
    `trust_forwarded_proto`, a request is as over the scheme its proxy's X-Forwarded-Proto names."""
    if not admin_token:
        raise ValueError("an empty admin token would let anyone in")
    guards = [console_guard()]
    if trust_forwarded_proto:
        # Outermost: the guard marks the session cookie Secure by the scheme this sets.
        guards.insert(0, forwarded_scheme())
    console = web.Application(middlewares=guards)
    console[KEY] = signing_key(admin_token)
    console[sign_in.ADMIN_TOKEN] = admin_token.encode()
    console[sign_in.SIGN_IN_FAILURES] = FailureThrottle()
    aiohttp_jinja2.setup(
        console,
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters=FILTERS,
    )
    for module in PAGE_MODULES:
        for route in module.routes:
            if not isinstance(route, web.RouteDef):
                raise TypeError(f"{module.__name__}: a console page is a route, not {route!r}")
            console.router.add_route(
                route.method, route.path.removeprefix(PREFIX), route.handler, **route.kwargs
            )
    console.router.add_static("/static", _HERE / "static", name="static")
    return console
