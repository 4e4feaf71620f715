"""Console sessions: a signed cookie keyed from the admin token, and the CSRF token a session implies."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

SESSION_COOKIE = "relay_console"
LIFETIME = timedelta(hours=8)
_ALGORITHM = "HS256"
# Fixed labels: the key changes with the token (rotating it signs everyone out), and is never the token.
_KEY_LABEL = b"relay console session key"
_CSRF_LABEL = b"relay console csrf:"


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its session's random id and when it ends."""

    jti: str
    expires: datetime


def signing_key(admin_token: str) -> bytes:
    """The key sessions are signed with, derived from the admin token."""
    return hmac.new(admin_token.encode(), _KEY_LABEL, hashlib.sha256).digest()


def issue_session(key: bytes, *, now: datetime) -> tuple[str, Session]:
    """A new session from `now`, and the cookie value that carries it."""
    session = Session(jti=secrets.token_urlsafe(16), expires=now + LIFETIME)
    claims = {"iat": now, "exp": session.expires, "jti": session.jti}
    return jwt.encode(claims, key, algorithm=_ALGORITHM), session


def read_session(key: bytes, cookie: str | None) -> Session | None:
    """The session a cookie carries; None when there is none, or it is forged, expired or malformed."""
    if not cookie:
        return None
    try:
        claims = jwt.decode(cookie, key, algorithms=[_ALGORITHM], options={"require": ["exp", "iat", "jti"]})
    except jwt.InvalidTokenError:
        return None
    jti, exp = claims["jti"], claims["exp"]
    if not isinstance(jti, str) or not isinstance(exp, int):
        return None
    return Session(jti=jti, expires=datetime.fromtimestamp(exp, UTC))


def csrf_token(key: bytes, session: Session) -> str:
    """The token every form of this session carries: only a page of the console can know it."""
    return hmac.new(key, _CSRF_LABEL + session.jti.encode(), hashlib.sha256).hexdigest()


def csrf_matches(key: bytes, session: Session, offered: str) -> bool:
    """Whether a posted form's token is this session's."""
    return hmac.compare_digest(csrf_token(key, session).encode(), offered.encode("utf-8", "surrogateescape"))
