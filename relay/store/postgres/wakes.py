"""Wakes for workers: LISTEN on a connection of its own, reconnecting when the server goes away."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import structlog

from relay.store.postgres.connection import WORK_CHANNEL

log = structlog.get_logger(__name__)


async def listen_for_work(dsn: str, *, timeout_s: float, retry_s: float) -> AsyncIterator[None]:
    """Yields on each notification; after a reconnection yields once, since a wake may have been missed."""
    woken = asyncio.Event()
    lost = asyncio.Event()
    first = True
    while True:
        try:
            conn = await asyncpg.connect(
                dsn, timeout=timeout_s, server_settings={"application_name": "relay-listen"}
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("store.listen_failed", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(retry_s)
            continue
        lost.clear()
        try:

            def on_lost(_: object) -> None:
                lost.set()
                woken.set()

            conn.add_termination_listener(on_lost)
            await conn.add_listener(WORK_CHANNEL, lambda *_: woken.set())
            if not first:
                yield
            first = False
            while True:
                await woken.wait()
                woken.clear()
                if lost.is_set():
                    break
                yield
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("store.listen_failed", error=f"{type(error).__name__}: {error}")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout_s)
        await asyncio.sleep(retry_s)
