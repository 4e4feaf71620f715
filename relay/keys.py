"""Typed keys for what the application shares between its parts (aiohttp AppKeys, not string keys)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from relay.bringg.auth import Authenticator
from relay.settings import Settings
from relay.store.api import Store

ReadinessCheck = Callable[[], Awaitable[list[str]]]


class RunningWorker(Protocol):
    """What the application's parts may read of its delivery worker (typed here, so keys never import it)."""

    @property
    def paused_reason(self) -> str | None: ...

    @property
    def last_heartbeat(self) -> float | None: ...


SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
# Set when a webhook stores a new delivery, so the worker starts on it at once instead of at its next sweep.
NEW_DELIVERY = web.AppKey("new_delivery", asyncio.Event)
READINESS_CHECKS = web.AppKey("readiness_checks", list[ReadinessCheck])
WORKER = web.AppKey("worker", RunningWorker)
