"""How Bringg proves itself: a static token, an HS256 JWT, or an OAuth 2.0 client-credentials token."""

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from relay.settings import Settings
from relay.throttle import FailureThrottle

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


class Authenticator:
    """Checks the webhook's credential against every configured method; any one suffices."""

    def __init__(self, settings: Settings) -> None:
        self.header = settings.bringg_token_header
        self.open = settings.bringg_auth == "none"
        self._token = (
            settings.bringg_webhook_token.get_secret_value() if settings.bringg_webhook_token else None
        )
        self._jwt_secret = (
            settings.bringg_jwt_secret.get_secret_value() if settings.bringg_jwt_secret else None
        )
        self._jwt_issuer = settings.bringg_jwt_issuer
        self.oauth_client_id = settings.bringg_oauth_client_id
        secret = settings.bringg_oauth_client_secret
        self._oauth_secret = secret.get_secret_value() if secret else None
        self.oauth_token_ttl_s = settings.bringg_oauth_token_ttl_s
        # Wrong client credentials at /oauth/token, per caller's address.
        self.client_failures = FailureThrottle()
        # Derived from the client secret: every relay process and restart accepts the same tokens.
        self._oauth_key = (
            hmac.new(self._oauth_secret.encode(), b"relay oauth access token", hashlib.sha256).digest()
            if self._oauth_secret
            else None
        )

    @property
    def oauth_enabled(self) -> bool:
        return self._oauth_key is not None

    def check(self, headers: Mapping[str, str]) -> Verdict:
        """Judge the credential in the configured header."""
        if self.open:
            return Verdict(True, "none")
        raw = headers.get(self.header)
        if not raw:
            return Verdict(False, reason=f"missing {self.header} header")
        presented = _strip_bearer(raw)
        reasons = []
        if self._token is not None:
            if _same(presented, self._token) or _same(raw.strip(), self._token):
                return Verdict(True, "token")
            reasons.append("token does not match")
        if self._jwt_secret is not None:
            reason = _jwt_problem(presented, self._jwt_secret, issuer=self._jwt_issuer)
            if reason is None:
                return Verdict(True, "jwt")
            reasons.append(f"jwt {reason}")
        if self._oauth_key is not None:
            reason = _jwt_problem(presented, self._oauth_key, audience=OAUTH_AUDIENCE)
            if reason is None:
                return Verdict(True, "oauth")
            reasons.append(f"oauth token {reason}")
        return Verdict(False, reason="; ".join(reasons))

    def client_matches(self, client_id: str, client_secret: str) -> bool:
        """Whether OAuth client credentials are the configured ones (constant time)."""
        if self.oauth_client_id is None or self._oauth_secret is None:
            return False
        id_ok = _same(client_id, self.oauth_client_id)
        secret_ok = _same(client_secret, self._oauth_secret)
        return id_ok and secret_ok

    def issue_token(self, client_id: str, *, issued_at: float | None = None) -> str:
        """A short-lived access token for the webhook, signed with the key derived from the client secret."""
        assert self._oauth_key is not None
        now = int(time.time() if issued_at is None else issued_at)
        claims = {"sub": client_id, "aud": OAUTH_AUDIENCE, "iat": now, "exp": now + self.oauth_token_ttl_s}
        return jwt.encode(claims, self._oauth_key, algorithm="HS256")


def _strip_bearer(value: str) -> str:
    scheme, _, rest = value.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest else value.strip()


def _same(presented: str, expected: str) -> bool:
    # surrogateescape: a header's bytes that are not UTF-8 reach here as lone surrogates; compare the bytes.
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode())


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
