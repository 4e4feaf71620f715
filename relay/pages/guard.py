"""What stands before every console page: the session, the CSRF check, error pages and security headers."""

import re
import warnings
from typing import Any

import aiohttp_jinja2
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_exceptions import NotAppKeyWarning
from markupsafe import Markup

from relay.http import Handler
from relay.pages.notices import clear_notice, pending_notice
from relay.pages.sessions import SESSION_COOKIE, Session, csrf_matches, csrf_token, read_session

log = structlog.get_logger("relay.console")

SESSION = web.RequestKey("console_session", Session)
KEY = web.AppKey("console_key", bytes)

SIGN_IN = "/console/sign-in"
_OPEN_PATHS = (SIGN_IN, "/console/static/")
# A path under /console, optionally with a query: all `?next=` may send a browser to after signing in.
_NEXT = re.compile(r"/console(?:[/?][!-~]*)?")

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def safe_next(offered: str | None) -> str:
    """Where to go after signing in: the page asked for when it is the console's, else the overview."""
    if offered and _NEXT.fullmatch(offered) and "\\" not in offered:
        return offered
    return "/console"


def console_guard() -> Middleware:
    """The middleware of the console's application."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await _checked(request, handler)
        except web.HTTPException as error:
            if error.status < 400:
                _finish(request, error)
                raise
            response = error_page(request, error.status, error.reason, error.text or error.reason)
        _finish(request, response)
        return response

    return guard


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.app[KEY]
    session = read_session(key, request.cookies.get(SESSION_COOKIE))
    if session is not None:
        request[SESSION] = session
    _bind_page_context(request, session)
    if request.path.startswith(_OPEN_PATHS):
        return await handler(request)
    if session is None:
        if request.method == "POST":
            raise web.HTTPSeeOther(SIGN_IN)
        raise web.HTTPSeeOther(request.app.router["sign_in"].url_for().with_query(next=request.path_qs))
    if request.method == "POST":
        form = await request.post()
        offered = form.get("csrf_token")
        if not isinstance(offered, str) or not csrf_matches(key, session, offered):
            log.warning("console.csrf_refused", path=request.path, token_given=isinstance(offered, str))
            return error_page(
                request,
                403,
                "Forbidden",
                "This form was not sent by a page of this console (its CSRF token is missing or wrong). "
                "Reload the page and try again.",
            )
    return await handler(request)


def error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    """A console page telling what went wrong, with the status it went wrong with."""
    return aiohttp_jinja2.render_template(
        "error.html", request, {"status": status, "title": title, "message": message}, status=status
    )


def _bind_page_context(request: web.Request, session: Session | None) -> None:
    """What base.html needs on every page, for whichever template the page renders: the notice, whether
    anyone is signed in, `csrf_field()` for forms, and the path (the nav marks the current page)."""

    def csrf_field() -> Markup:
        if session is None:
            return Markup("")
        token = csrf_token(request.app[KEY], session)
        return Markup('<input type="hidden" name="csrf_token" value="{}">').format(token)

    context: dict[str, Any] = {
        "signed_in": session is not None,
        "notice": pending_notice(request),
        "csrf_field": csrf_field,
        "path": request.path,
    }
    # aiohttp_jinja2 merges this into every template's context; its key is a string, which aiohttp would
    # warn about once on stderr.
    with warnings.catch_warnings(action="ignore", category=NotAppKeyWarning):
        request[aiohttp_jinja2.REQUEST_CONTEXT_KEY] = context


def _finish(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(HEADERS)
    if request.secure:
        for morsel in response.cookies.values():
            morsel["secure"] = True
    if (
        request.method == "GET"
        and response.status == 200
        and response.content_type == "text/html"
        and pending_notice(request) is not None
    ):
        clear_notice(response)
