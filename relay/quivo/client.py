"""The Quivo API client: one shared login, token renewal, and answers classified for exactly-once sends."""

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from json.encoder import encode_basestring_ascii

import aiohttp
import structlog
from aiohttp.payload import BytesPayload, JsonPayload
from multidict import CIMultiDict
from pydantic import TypeAdapter, ValidationError
from yarl import URL

from relay.quivo.models import CustomerInquiry, RatedInquiry
from relay.quivo.redact import Redactor

log = structlog.get_logger(__name__)

BODY_EXCERPT_CHARS = 500
# A delivered send's current rating, read into a dict: as RatedInquiry reads it, without making a model.
_RATED = TypeAdapter(RatedInquiry)
_RENEW_MARGIN_MAX_S = 300.0
_RENEW_MARGIN_SHARE = 0.1

# Raised before a single byte of the request is written: Quivo cannot have seen it.
_NOT_SENT = (
    aiohttp.ClientConnectorError,  # refused, DNS, TLS handshake, proxy connect
    aiohttp.ConnectionTimeoutError,  # ClientTimeout.connect / sock_connect, pool wait included
    aiohttp.ServerFingerprintMismatch,  # checked right after the TLS handshake
    aiohttp.InvalidURL,
    aiohttp.NonHttpUrlClientError,
)
# Anything else may strike after the request went out. OSError covers TimeoutError (ClientTimeout.total).
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError)


class QuivoError(Exception):
    """A Quivo call gave no answer to act on; `sent` says whether Quivo may have acted on the request."""

    sent: bool


class QuivoUnreachable(QuivoError):
    """The request certainly did not reach Quivo, so it is safe to send again."""

    sent = False


class QuivoNoAnswer(QuivoError):
    """The request may have reached Quivo but no complete answer came back: check before sending again."""

    sent = True


class LoginFailed(QuivoError):
    """Quivo refused the login (or answered it without a token); nothing else was sent."""

    sent = False

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


# Not frozen: one is made for every call, and a frozen dataclass costs several times as much to make.
@dataclass
class QuivoAnswer:
    """What Quivo answered to one call, kept small enough to store with the delivery attempt."""

    status: int
    retry_after: str | None
    body: bytes = field(repr=False)
    redactor: Redactor = field(repr=False, compare=False)

    @cached_property
    def body_excerpt(self) -> str:
        """The start of the body with our secrets masked, made when first asked for (a 2xx rarely is)."""
        return self.redactor.excerpt(self.body, BODY_EXCERPT_CHARS)

    @cached_property
    def inquiry(self) -> CustomerInquiry | None:
        """The answer as a customer inquiry, parsed when first asked for; None unless a 2xx that parses."""
        # Parsed on demand: a delivered send needs only the current rating, not every message of the inquiry.
        return _inquiry_from(self.body) if 200 <= self.status < 300 else None

    @cached_property
    def current_rating(self) -> float | None:
        """The inquiry's `currentRating` in a 2xx answer, read without building its messages."""
        if not 200 <= self.status < 300:
            return None
        try:
            return _RATED.validate_json(self.body).get("current_rating")
        except ValidationError:
            return None


class QuivoClient:
    """Calls Quivo with a session token shared by all callers, renewed before expiry and after a 401."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        username: str,
        password: str,
        auth_prefix: str = "",
        token_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[str, int | None], None] | None = None,
    ) -> None:
        self._session = session
        # Told of every call (login, post_rating, get_inquiry) and its status, None when no answer came.
        self._observe = observe or (lambda action, status: None)
        # Parsed once: each call's URL is this one with its path, not a string parsed and encoded again.
        self._base_url = URL(base_url.rstrip("/"))
        self._base_path = self._base_url.raw_path.rstrip("/")
        self._api_key = api_key
        self._username = username
        self._password = password
        self._auth_prefix = auth_prefix
        self._token_ttl_s = token_ttl_s
        self._renew_margin_s = min(_RENEW_MARGIN_MAX_S, _RENEW_MARGIN_SHARE * token_ttl_s)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        # What every call but a login sends, made once per token.
        self._headers: CIMultiDict[str] = CIMultiDict()
        # Masks our secrets in every excerpt of Quivo's text; the session tokens join it as they come.
        self._redactor = Redactor((api_key, password))
        self._token_issued_at = 0.0
        # Counts finished login attempts, so a caller that waited for the lock knows someone else tried.
        self._login_attempts = 0
        self._login_error: QuivoError | None = None
        self.credentials_ok: bool | None = None
        self.last_login_error: str | None = None

    async def post_rating(self, inquiry_id: int, rating: float, message: str) -> QuivoAnswer:
        """Rate an inquiry. Quivo has no idempotency key: resending after QuivoNoAnswer may rate twice."""
        return await self._call(
            "POST", f"/customerInquiries/{inquiry_id}/ratings", _rating_body(rating, message)
        )

    async def get_inquiry(self, inquiry_id: int) -> QuivoAnswer:
        """Read a customer inquiry back, with its current rating and rating messages."""
        return await self._call("GET", f"/customerInquiries/{inquiry_id}", None)

    async def ensure_login(self) -> None:
        """Log in unless a fresh token is at hand; raises LoginFailed or QuivoUnreachable."""
        if not self._token_is_fresh():
            await self._login_unless_tried_since(self._login_attempts)

    async def login_again(self) -> None:
        """Log in now, even with a fresh token at hand: whether Quivo takes the credentials today."""
        await self._login_unless_tried_since(self._login_attempts)

    async def _call(self, method: str, path: str, body: bytes | None) -> QuivoAnswer:
        # As ensure_login, without a coroutine of its own at every call.
        if not self._token_is_fresh():
            await self._login_unless_tried_since(self._login_attempts)
        attempts_seen = self._login_attempts
        answer = await self._request(method, path, body)
        if answer.status != HTTPStatus.UNAUTHORIZED:
            return answer
        # The token was refused before expiry: renew it (once for all callers) and repeat this call once.
        await self._login_unless_tried_since(attempts_seen)
        return await self._request(method, path, body)

    def _token_is_fresh(self) -> bool:
        if self._token is None:
            return False
        return self._clock() < self._token_issued_at + self._token_ttl_s - self._renew_margin_s

    async def _login_unless_tried_since(self, attempts_seen: int) -> None:
        async with self._lock:
            if self._login_attempts == attempts_seen:
                await self._login()
            elif self._login_error is not None:
                # Someone else's login failed while we waited: share its outcome rather than hammer /login.
                error = self._login_error
                raise type(error)(*error.args) from error

    async def _login(self) -> None:
        issued_at = self._clock()
        started = time.monotonic()
        try:
            response, body = await self._exchange(
                "POST",
                "/login",
                {"X-Api-Key": self._api_key},
                JsonPayload({"username": self._username, "password": self._password}),
            )
        except _TRANSPORT_ERRORS as exc:
            # Whatever the phase, the call this login serves was not sent; credentials are not judged.
            unreachable = QuivoUnreachable(self._redactor.text(f"login: {_describe(exc)}"))
            self._end_login(None, unreachable)
            raise unreachable from exc
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        status = response.status
        token = _token_from(body) if 200 <= status < 300 else None
        if token is None:
            # What Quivo said to a login is not ours to repeat, not even masked: it may echo the password in
            # spellings no redactor can chase. The error says what is wrong; the log line the answer's shape.
            # Quivo down or throttling did not judge the credentials: they are not called bad then.
            refused = not _is_unavailable(status)
            error: QuivoError = (
                LoginFailed(status, _login_refusal(status))
                if refused
                else QuivoUnreachable(f"login: Quivo answered {status}")
            )
            log.warning(
                "quivo.login_failed",
                status=status,
                credentials_refused=refused,
                reason=str(error),
                content_type=self._redactor.text(response.content_type),
                body_bytes=len(body),
                duration_ms=duration_ms,
            )
            if isinstance(error, LoginFailed):
                self.credentials_ok = False
                self.last_login_error = error.reason
            self._end_login(None, error)
            raise error
        self.credentials_ok = True
        self.last_login_error = None
        self._token_issued_at = issued_at
        log.info("quivo.login", status=status, duration_ms=duration_ms)
        self._end_login(token, None)

    def _end_login(self, token: str | None, error: QuivoError | None) -> None:
        if token is not None:
            # The token before this one may still come back in an answer to a call made with it.
            self._redactor = Redactor((self._api_key, self._password, self._token or "", token))
        self._token = token
        if token is not None:
            # As aiohttp keeps headers: a dict would be copied into one at every call.
            self._headers = CIMultiDict(
                {"X-Api-Key": self._api_key, "Authorization": f"{self._auth_prefix}{token}"}
            )
        self._login_error = error
        self._login_attempts += 1

    async def _request(self, method: str, path: str, body: bytes | None) -> QuivoAnswer:
        # ensure_login, or a login this call waited for, left a token (a failed login raises instead).
        assert self._token is not None
        # As json= would send it: the same bytes, the same Content-Type, in the same place among the headers.
        data = None if body is None else BytesPayload(body, content_type="application/json", encoding="utf-8")
        try:
            response, answer = await self._exchange(method, path, self._headers, data)
        except _TRANSPORT_ERRORS as exc:
            what = self._redactor.text(f"{method} {path}: {_describe(exc)}")
            if isinstance(exc, _NOT_SENT):
                raise QuivoUnreachable(what) from exc
            raise QuivoNoAnswer(what) from exc
        return QuivoAnswer(
            status=response.status,
            retry_after=response.headers.get("Retry-After"),
            body=answer,
            redactor=self._redactor,
        )

    async def _exchange(
        self, method: str, path: str, headers: Mapping[str, str], data: BytesPayload | None
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        # raise_for_status and redirects are switched off per call: the session is the caller's, and a
        # redirect would carry our credentials elsewhere or turn a POST into a GET.
        action = "login" if path == "/login" else "post_rating" if method == "POST" else "get_inquiry"
        try:
            async with self._session.request(
                method,
                self._base_url.with_path(self._base_path + path, encoded=True),
                headers=headers,
                data=data,
                raise_for_status=False,
                allow_redirects=False,
            ) as response:
                body = await response.read()
        except BaseException:
            self._observe(action, None)
            raise
        self._observe(action, response.status)
        return response, body


def _rating_body(rating: float, message: str) -> bytes:
    """json.dumps({"rating": rating, "ratingMessage": message}), encoded: the same bytes, no encoder built."""
    # json writes a finite number as its repr, and NaN or an infinity in its own spelling.
    number = repr(rating) if math.isfinite(rating) else json.dumps(rating)
    return f'{{"rating": {number}, "ratingMessage": {encode_basestring_ascii(message)}}}'.encode()


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _login_refusal(status: int) -> str:
    if 200 <= status < 300:
        return f"Quivo answered the login {status} without a token"
    return f"Quivo refused the credentials, {status}"


def _token_from(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    token = document.get("token") if isinstance(document, dict) else None
    return token if isinstance(token, str) and token else None


def _inquiry_from(body: bytes) -> CustomerInquiry | None:
    try:
        return CustomerInquiry.model_validate_json(body)
    except ValidationError:
        return None


def _is_unavailable(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500
