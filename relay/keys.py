"""Typed keys for what the application shares between its parts (aiohttp AppKeys, not string keys)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from relay.settings import Settings
from relay.store.api import Store
from relay.throttle import FailureThrottle

if TYPE_CHECKING:
    # Typed only: the registry's Authenticators import what imports these keys.
    from relay.tenants.registry import RunningTenants

ReadinessCheck = Callable[[], Awaitable[list[str]]]


class RunningWorker(Protocol):
    """What the application's parts may read of its delivery worker (typed here, so keys never import it)."""

    @property
    def paused_reason(self) -> str | None: ...

    @property
    def last_heartbeat(self) -> float | None: ...


SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
# The tenants in force: read at each request, since a reload replaces them.
TENANTS: web.AppKey["RunningTenants"] = web.AppKey("tenants")
# Wrong client credentials at /oauth/token, per caller's address, whichever tenant's client they named.
OAUTH_FAILURES = web.AppKey("oauth_failures", FailureThrottle)
# Set when a webhook stores a new delivery, so the worker starts on it at once instead of at its next sweep.
NEW_DELIVERY = web.AppKey("new_delivery", asyncio.Event)
READINESS_CHECKS = web.AppKey("readiness_checks", list[ReadinessCheck])
WORKER = web.AppKey("worker", RunningWorker)
