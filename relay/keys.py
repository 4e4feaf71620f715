"""Typed keys for what the application shares between its parts (aiohttp AppKeys, not string keys)."""

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from relay.bringg.auth import Authenticator
from relay.ops.metrics import METRICS
from relay.settings import Settings
from relay.store.db import Database
from relay.worker import Worker

ReadinessCheck = Callable[[], Awaitable[list[str]]]

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
# Set when a webhook stores a new delivery, so the worker starts on it at once instead of at its next sweep.
NEW_DELIVERY = web.AppKey("new_delivery", asyncio.Event)
READINESS_CHECKS = web.AppKey("readiness_checks", list[ReadinessCheck])
WORKER = web.AppKey("worker", Worker)

__all__ = ["AUTHENTICATOR", "DATABASE", "METRICS", "NEW_DELIVERY", "READINESS_CHECKS", "SETTINGS", "WORKER"]
