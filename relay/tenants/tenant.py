"""One tenant as the relay uses it: its merchants, Bringg authentication, Quivo account and own settings."""

import re
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from pydantic import SecretStr

from relay.console import printable
from relay.settings import Settings

# Without RELAY_TENANTS_FILE the relay is this one tenant, configured from the environment.
IMPLICIT_TENANT = "default"


@dataclass(frozen=True)
class BringgAuth:
    """How a tenant's Bringg proves itself (relay/bringg/auth.py); one or two secrets of a kind (rotation)."""

    open: bool
    token_header: str
    webhook_tokens: tuple[SecretStr, ...]
    jwt_secrets: tuple[SecretStr, ...]
    jwt_issuer: str | None
    oauth_client_id: str | None
    oauth_client_secrets: tuple[SecretStr, ...]
    oauth_token_ttl_s: int

    @property
    def methods(self) -> list[str]:
        """The methods configured, by name, as Settings.auth_methods names them."""
        methods = []
        if self.webhook_tokens:
            methods.append("token")
        if self.jwt_secrets:
            methods.append("jwt")
        if self.oauth_client_id is not None and self.oauth_client_secrets:
            methods.append("oauth")
        return methods


@dataclass(frozen=True)
class QuivoAccount:
    """The Quivo account a tenant's ratings go to, and how hard the relay may call it."""

    base_url: str
    api_key: SecretStr | None
    username: str | None
    password: SecretStr | None
    max_concurrency: int
    max_rps: float
    rating_min: float
    rating_max: float


@dataclass(frozen=True)
class Tenant:
    """A Bringg merchant's (or several's) own webhook credentials, Quivo account and matching."""

    name: str
    # None: any merchant (the implicit tenant, as the relay has always been).
    merchants: frozenset[int] | None
    bringg: BringgAuth
    quivo: QuivoAccount
    inquiry_id_pattern: re.Pattern[str] | None
    message_template: str
    unmatched_ttl: timedelta

    def sends_for(self, merchant_id: int) -> bool:
        """Whether Bringg may send this merchant's ratings to this tenant."""
        return self.merchants is None or merchant_id in self.merchants

    def summary(self) -> str:
        """One line for an operator: name, merchants, auth methods and Quivo base URL; never a secret."""
        merchants = "any" if self.merchants is None else ", ".join(map(str, sorted(self.merchants)))
        bringg = self.bringg
        counts = {
            "token": len(bringg.webhook_tokens),
            "jwt": len(bringg.jwt_secrets),
            "oauth": len(bringg.oauth_client_secrets),
        }
        methods = [
            f"{method} ({counts[method]} secrets)" if counts[method] > 1 else method
            for method in bringg.methods
        ]
        auth = ", ".join(methods) or ("none" if bringg.open else "-")
        # A URL may carry user:password@; the host says which account without it.
        url = urlsplit(self.quivo.base_url)
        host = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()
        return printable(f"{self.name}: merchants {merchants}; bringg auth {auth}; quivo {host}")


def implicit_tenant(settings: Settings) -> Tenant:
    """The one tenant of a relay without RELAY_TENANTS_FILE: the environment, exactly as it configures it."""
    return Tenant(
        name=IMPLICIT_TENANT,
        merchants=None,
        bringg=BringgAuth(
            open=settings.bringg_auth == "none",
            token_header=settings.bringg_token_header,
            webhook_tokens=_one(settings.bringg_webhook_token),
            jwt_secrets=_one(settings.bringg_jwt_secret),
            jwt_issuer=settings.bringg_jwt_issuer,
            oauth_client_id=settings.bringg_oauth_client_id,
            oauth_client_secrets=_one(settings.bringg_oauth_client_secret),
            oauth_token_ttl_s=settings.bringg_oauth_token_ttl_s,
        ),
        quivo=QuivoAccount(
            base_url=settings.quivo_base_url,
            api_key=settings.quivo_api_key,
            username=settings.quivo_username,
            password=settings.quivo_password,
            max_concurrency=settings.quivo_max_concurrency,
            max_rps=settings.quivo_max_rps,
            rating_min=settings.quivo_rating_min,
            rating_max=settings.quivo_rating_max,
        ),
        inquiry_id_pattern=settings.relay_inquiry_id_pattern,
        message_template=settings.relay_message_template,
        unmatched_ttl=settings.relay_unmatched_ttl,
    )


def _one(secret: SecretStr | None) -> tuple[SecretStr, ...]:
    return () if secret is None else (secret,)
