"""Signing in with the admin token, and signing out."""

import hmac
from datetime import UTC, datetime

import aiohttp_jinja2
import structlog
from aiohttp import web
from yarl import URL

from relay.pages.guard import KEY, SESSION, SIGN_IN, error_page, safe_next
from relay.pages.notices import see_other
from relay.pages.sessions import LIFETIME, SESSION_COOKIE, issue_session
from relay.throttle import FailureThrottle

log = structlog.get_logger("relay.console")

ADMIN_TOKEN = web.AppKey("console_admin_token", bytes)
SIGN_IN_FAILURES = web.AppKey("console_sign_in_failures", FailureThrottle)
WRONG_TOKEN = "That token is not the admin token."
TOO_MANY = "Too many wrong tokens from this address: wait a minute."

routes = web.RouteTableDef()


@routes.get(SIGN_IN, name="sign_in")
async def sign_in_form(request: web.Request) -> web.StreamResponse:
    destination = safe_next(request.query.get("next"))
    if SESSION in request:
        raise web.HTTPSeeOther(destination)
    return _form(request, destination)


@routes.post(SIGN_IN)
async def sign_in(request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        # Without a session there is no CSRF token yet: a browser's Origin tells a foreign page's post.
        log.warning("console.csrf_refused", path=request.path, token_given=False)
        return error_page(request, 403, "Forbidden", "This sign-in was not sent by this console's page.")
    form = await request.post()
    destination = safe_next(_text(form.get("next")))
    offered = _text(form.get("token")).strip().encode("utf-8", "surrogateescape")
    # compare_digest: how long a refusal takes must not tell how much of a guess was right.
    if not hmac.compare_digest(offered, request.app[ADMIN_TOKEN]):
        throttled = request.app[SIGN_IN_FAILURES].record_failure(request.remote)
        if throttled is not None:
            if throttled.first_of_burst:
                log.warning(
                    "console.sign_in_throttled",
                    client=throttled.client,
                    retry_after_s=throttled.retry_after_s,
                )
            response = _form(request, destination, status=429, problem=TOO_MANY)
            response.headers["Retry-After"] = str(throttled.retry_after_s)
            return response
        log.warning("console.sign_in_refused", client=request.remote, token_given=bool(offered))
        return _form(request, destination, status=401, problem=WRONG_TOKEN)
    cookie, _ = issue_session(request.app[KEY], now=datetime.now(UTC))
    log.info("console.signed_in", client=request.remote)
    redirect = web.HTTPSeeOther(destination)
    redirect.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(LIFETIME.total_seconds()),
        path="/console",
        httponly=True,
        samesite="Strict",
    )
    raise redirect


@routes.post("/console/sign-out", name="sign_out")
async def sign_out(request: web.Request) -> web.StreamResponse:
    log.info("console.signed_out", client=request.remote)
    redirect = see_other(str(request.app.router["sign_in"].url_for()), "Signed out.")
    redirect.del_cookie(SESSION_COOKIE, path="/console")
    raise redirect


def _form(
    request: web.Request, destination: str, *, status: int = 200, problem: str | None = None
) -> web.Response:
    context = {"next": destination, "problem": problem}
    return aiohttp_jinja2.render_template("sign_in.html", request, context, status=status)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    # No Origin: not a browser's cross-site form (browsers send it on every POST); "null": sandboxed/opaque.
    if origin is None:
        return True
    return origin != "null" and URL(origin).host_port_subcomponent == request.url.host_port_subcomponent


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
