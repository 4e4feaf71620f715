"""How Bringg proves itself: a static token, an HS256 JWT, or an OAuth 2.0 client-credentials token."""

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
from multidict import istr
from pydantic import SecretStr

from relay.tenants.tenant import BringgAuth

# Tokens the relay issues at /oauth/token carry this audience, so no other JWT passes for one.
OAUTH_AUDIENCE = "relay-webhook"
# No token needs to live longer than a day (the relay's own are capped so by BRINGG_OAUTH_TOKEN_TTL_S): one
# that claims more was minted to be replayed. Bounded from now, as Bringg documents no `iat`.
MAX_TOKEN_LIFETIME_S = 24 * 3600
# PyJWT reads these with int(), so "9999999999" would pass for a time: a time must be a JSON number.
TIME_CLAIMS = ("exp", "iat", "nbf")


@dataclass(frozen=True)
class Verdict:
    """Whether a request is authenticated, by which method, or why not (never the credential itself)."""

    ok: bool
    method: str | None = None
    reason: str | None = None


# A success says no more than its method: one of each, made once, answers every request it admits.
OPEN, BY_TOKEN, BY_JWT, BY_OAUTH = (Verdict(True, method) for method in ("none", "token", "jwt", "oauth"))


class Authenticator:
    """Checks a webhook's credential against every method one tenant configured; any one secret suffices."""

    def __init__(self, auth: BringgAuth) -> None:
        # An istr, as aiohttp's own header names: a look-up need not spell it in lower case again.
        self.header = istr(auth.token_header)
        self.open = auth.open
        self._tokens = tuple(token.encode() for token in _values(auth.webhook_tokens))
        self._jwt_secrets = _values(auth.jwt_secrets)
        self._jwt_issuer = auth.jwt_issuer
        self.oauth_client_id = auth.oauth_client_id
        self.oauth_token_ttl_s = auth.oauth_token_ttl_s
        # One key per client secret, derived from it: every relay process and restart accepts the same
        # tokens, and a token dies with the secret it was issued for (removed once rotated out).
        self._oauth_keys = (
            tuple(_oauth_key(secret) for secret in _values(auth.oauth_client_secrets))
            if auth.oauth_client_id is not None
            else ()
        )
        self._oauth_secrets = _values(auth.oauth_client_secrets) if self._oauth_keys else ()

    @property
    def oauth_enabled(self) -> bool:
        return bool(self._oauth_keys)

    def check(self, headers: Mapping[str, str]) -> Verdict:
        """Judge the credential in the configured header."""
        if self.open:
            return OPEN
        raw = headers.get(self.header)
        if not raw:
            return Verdict(False, reason=f"missing {self.header} header")
        presented = _strip_bearer(raw)
        reasons = []
        if self._tokens:
            # Every token compared, whichever matches: the time taken does not tell which one did.
            bearer = _header_bytes(presented)
            matched = False
            for token in self._tokens:
                matched |= _equal(bearer, token) or _equal(_header_bytes(raw.strip()), token)
            if matched:
                return BY_TOKEN
            reasons.append("token does not match")
        if self._jwt_secrets:
            problems = [_jwt_problem(presented, key, issuer=self._jwt_issuer) for key in self._jwt_secrets]
            if None in problems:
                return BY_JWT
            reasons.append(f"jwt {_telling(problems)}")
        if self._oauth_keys:
            problems = [_jwt_problem(presented, key, audience=OAUTH_AUDIENCE) for key in self._oauth_keys]
            if None in problems:
                return BY_OAUTH
            reasons.append(f"oauth token {_telling(problems)}")
        return Verdict(False, reason="; ".join(reasons))

    def issue_token(
        self, client_id: str, client_secret: str, *, issued_at: float | None = None
    ) -> str | None:
        """A short-lived access token for these client credentials, signed with the key of the secret given;
        None when they are not this tenant's (compared in constant time)."""
        id_ok = self.oauth_client_id is not None and _same(client_id, self.oauth_client_id)
        matches = [_same(client_secret, secret) for secret in self._oauth_secrets]
        if not (id_ok and any(matches)):
            return None
        now = int(time.time() if issued_at is None else issued_at)
        claims = {"sub": client_id, "aud": OAUTH_AUDIENCE, "iat": now, "exp": now + self.oauth_token_ttl_s}
        return jwt.encode(claims, self._oauth_keys[matches.index(True)], algorithm="HS256")


def _values(secrets: tuple[SecretStr, ...]) -> tuple[str, ...]:
    return tuple(secret.get_secret_value() for secret in secrets)


def _oauth_key(client_secret: str) -> bytes:
    return hmac.new(client_secret.encode(), b"relay oauth access token", hashlib.sha256).digest()


def _telling(problems: list[str | None]) -> str | None:
    """Of the reasons each secret gave, one that says more than a signature made with another secret."""
    return next((problem for problem in problems if problem != "signature invalid"), problems[0])


def _strip_bearer(value: str) -> str:
    scheme, _, rest = value.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest else value.strip()


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(_header_bytes(presented), expected.encode())


def _header_bytes(presented: str) -> bytes:
    # surrogateescape: a header's bytes that are not UTF-8 reach here as lone surrogates; compare the bytes.
    return presented.encode("utf-8", "surrogateescape")


# Constant time: how long a comparison takes does not tell how much of a token was right.
_equal = hmac.compare_digest


def _jwt_problem(
    token: str, key: str | bytes, *, issuer: str | None = None, audience: str | None = None
) -> str | None:
    """None when the token is valid; else a short reason fit for a log line."""
    if not token.isascii():
        return "malformed"  # a JWT is base64url and dots; PyJWT cannot even encode some other text
    try:
        # The algorithm is pinned: a token's own `alg` header (none, RS256, ...) is never trusted.
        claims = jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            issuer=issuer,
            audience=audience,
            options={"require": ["exp"], "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError:
        return "expired"
    except jwt.InvalidSignatureError:
        return "signature invalid"
    except jwt.InvalidAlgorithmError:
        return "algorithm not allowed"
    except jwt.InvalidIssuerError:
        return "issuer mismatch"
    except jwt.InvalidAudienceError:
        return "audience mismatch"
    except jwt.MissingRequiredClaimError as error:
        return f"missing claim {error.claim}"
    except jwt.InvalidTokenError:
        return "malformed"
    for name in TIME_CLAIMS:
        if name in claims and not _is_number(claims[name]):
            return f"claim {name} not a number"
    if claims["exp"] - time.time() > MAX_TOKEN_LIFETIME_S:
        return "expiry more than 24 h ahead"
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
