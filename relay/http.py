"""HTTP plumbing shared by every route: request ids, problem answers, and the last-resort error guard."""

import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest
from multidict import istr

from relay.logs import bind_request_id, get_logger

log = get_logger(__name__)

# An istr: a case-insensitive look-up spells it in lower case once, not at every request.
REQUEST_ID_HEADER = istr("X-Request-ID")
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# llhttp's account of a malformation opens the parser's message, before the bytes it quotes.
_PARSER_REASON = re.compile(r"([A-Za-z][A-Za-z -]{0,79}):\n\n")

REQUEST_ID = web.RequestKey("request_id", str)
# perf_counter_ns() when the request reached the relay.
STARTED = web.RequestKey("started", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Request ids are drawn from the system's randomness this many at once: one read serves as many requests.
IDS_PER_DRAW = 256
_drawn_ids: list[str] = []
# A forked process (`relay serve --processes`) draws its own: never the ids its parent had drawn.
os.register_at_fork(after_in_child=_drawn_ids.clear)


def new_request_id() -> str:
    """32 random hex digits, as uuid4().hex spelled them, without building a UUID at every request."""
    if not _drawn_ids:
        drawn = secrets.token_hex(16 * IDS_PER_DRAW)
        _drawn_ids.extend(drawn[start : start + 32] for start in range(0, len(drawn), 32))
    return _drawn_ids.pop()


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> web.Response:
    """An RFC 9457 problem answer."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    response = web.json_response(body, status=status)
    response.content_type = "application/problem+json"
    return response


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id (the caller's X-Request-ID when sane) to every log line; echo it back."""
    offered = request.headers.get(REQUEST_ID_HEADER)
    if offered is not None and _SAFE_REQUEST_ID.fullmatch(offered):
        request_id = offered
    else:
        # One drawn already, without a call (new_request_id draws the next ones).
        request_id = _drawn_ids.pop() if _drawn_ids else new_request_id()
    bind_request_id(request_id)
    request[REQUEST_ID] = request_id
    request[STARTED] = time.perf_counter_ns()
    try:
        response = await handler(request)
    except web.RequestPayloadError as error:
        # aiohttp could not read the body (undecodable Content-Encoding, broken chunks): a malformed request.
        response = problem(400, "Bad Request", f"the request body could not be read: {error}")
    except web.HTTPException as error:
        if error.status < 400 or error.content_type != "text/plain":
            error.headers[REQUEST_ID_HEADER] = request_id
            raise
        # aiohttp's own refusals (404, 405, 413, ...) answer as problem+json like every other error.
        response = problem(error.status, error.reason, error.text or error.reason)
        for name in ("Allow", "Retry-After", "WWW-Authenticate"):
            if name in error.headers:
                response.headers[name] = error.headers[name]
    except Exception as error:
        if isinstance(error, ConnectionResetError) and _client_gone(request):
            # The client hung up mid-request: no one hears an answer, and it is no bug to alert anyone about.
            response = problem(
                400, "Bad Request", "the client closed the connection before the request ended"
            )
        else:
            log.exception("http.unhandled_error", method=request.method, path=request.path)
            response = problem(500, "Internal Server Error", "the error is logged under this request id")
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def header_text(value: str | None) -> str | None:
    """A header value as text SQLite and JSON can hold: bytes that are not UTF-8 are spelled `\\xNN`."""
    # aiohttp decodes header bytes as UTF-8 with surrogateescape; those surrogates cannot be encoded again.
    # ASCII text (a header's usual value) holds none of them and comes back as it went.
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def elapsed_ms(request: web.Request) -> float:
    """Milliseconds since the request reached the relay, to the hundredth."""
    # Whole nanoseconds rounded half up: round(seconds * 1000, 2) on a float costs twice as much.
    return (time.perf_counter_ns() - request[STARTED] + 5_000) // 10_000 / 100


def guard_malformed_requests() -> None:
    """Answer a request aiohttp cannot parse with a 400 that repeats none of it, logged as a warning."""
    # aiohttp offers no hook for this answer (aio-libs/aiohttp#3287): middlewares and signals never see
    # the request, and run_app cannot be given another protocol class, so its error method is replaced.
    web.RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]
    # After answering, aiohttp reads and drops an unread body to keep the connection; a body it cannot
    # decode (bad gzip, broken chunks) fails there and would be logged as an error with a traceback.
    web.RequestHandler.log_exception = _log_exception  # type: ignore[method-assign]


_AIOHTTP_HANDLE_ERROR = web.RequestHandler.handle_error
_AIOHTTP_LOG_EXCEPTION = web.RequestHandler.log_exception


def _handle_error(
    self: web.RequestHandler,
    request: BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    if status != 400 or not isinstance(exc, HttpProcessingError):
        return _AIOHTTP_HANDLE_ERROR(self, request, status, exc, message)
    # aiohttp would log the raw bytes at error level with a traceback and send them back, credentials
    # included; a malformed request is the sender's mistake and pages nobody.
    kind = malformation(exc)
    log.warning("http.malformed_request", kind=kind, error=type(exc).__name__, remote=request.remote)
    response = problem(400, "Bad Request", f"the request is not valid HTTP ({kind})")
    response.force_close()
    return response


def _log_exception(self: web.RequestHandler, *args: Any, **kw: Any) -> None:
    error = kw.get("exc_info")
    if not isinstance(error, web.RequestPayloadError | HttpProcessingError):
        _AIOHTTP_LOG_EXCEPTION(self, *args, **kw)
        return
    # The connection is closed after this; the body's bytes, the sender's mistake, page nobody.
    cause = error if isinstance(error, HttpProcessingError) else error.__cause__
    kind = malformation(cause) if isinstance(cause, HttpProcessingError) else type(error).__name__
    peer = self.transport.get_extra_info("peername") if self.transport is not None else None
    log.warning(
        "http.malformed_request", kind=kind, error=type(error).__name__, remote=peer[0] if peer else None
    )


def malformation(error: HttpProcessingError) -> str:
    """What was wrong with a request, never its bytes: the parser's reason, or else the error's class."""
    reason = _PARSER_REASON.match(error.message)
    return reason[1] if reason else type(error).__name__
