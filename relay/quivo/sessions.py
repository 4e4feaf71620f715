"""A tenant's Quivo session: an HTTP session and the client on it, open while its delivery loop runs."""

import contextlib
from collections.abc import AsyncIterator

import aiohttp

from relay.ops.metrics import RelayMetrics
from relay.quivo.client import QuivoClient
from relay.settings import Settings
from relay.tenants.tenant import Tenant


@contextlib.asynccontextmanager
async def quivo_session(
    settings: Settings, tenant: Tenant, metrics: RelayMetrics
) -> AsyncIterator[QuivoClient]:
    """The tenant's client on a session of its own: its connections, its token, its calls counted."""
    account = tenant.quivo
    timeout = aiohttp.ClientTimeout(
        total=settings.quivo_timeout_s, connect=min(5.0, settings.quivo_timeout_s)
    )
    connector = aiohttp.TCPConnector(limit=account.max_concurrency + 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        yield QuivoClient(
            session,
            base_url=account.base_url.rstrip("/"),
            api_key=_secret(account.api_key),
            username=account.username or "",
            password=_secret(account.password),
            auth_prefix=settings.quivo_auth_prefix,
            token_ttl_s=settings.quivo_token_ttl_s,
            observe=metrics.quivo_requests_of(tenant.name),
        )


def _secret(value: object) -> str:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get else ""
