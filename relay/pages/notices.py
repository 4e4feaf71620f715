"""One-line notices after an action: carried across the redirect in a short-lived cookie, shown once."""

import base64
import binascii

from aiohttp import web

COOKIE = "relay_console_notice"
# Long enough to follow the redirect, short enough that a notice never turns up later on another page.
_MAX_AGE_S = 60
# A notice is one line; the cookie stays far under browsers' limits.
_MAX_CHARS = 300


def see_other(location: str, notice: str) -> web.HTTPSeeOther:
    """The 303 to raise after a POST: the browser GETs `location`, which shows `notice` once."""
    redirect = web.HTTPSeeOther(location)
    encoded = base64.urlsafe_b64encode(notice[:_MAX_CHARS].encode()).decode()
    redirect.set_cookie(
        COOKIE, encoded, max_age=_MAX_AGE_S, path="/console", httponly=True, samesite="Strict"
    )
    return redirect


def pending_notice(request: web.Request) -> str | None:
    """The notice waiting for this request's page, if any (None for one that cannot be read)."""
    encoded = request.cookies.get(COOKIE)
    if not encoded:
        return None
    try:
        return base64.urlsafe_b64decode(encoded.encode()).decode()[:_MAX_CHARS]
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def clear_notice(response: web.StreamResponse) -> None:
    """The notice has been shown: the browser forgets it."""
    response.del_cookie(COOKIE, path="/console")
