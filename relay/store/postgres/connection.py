"""Reaching the server: the pool, where it is (without secrets), and which failures mean "unavailable"."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from relay.store.api import StoreUnavailable

# SQLSTATE classes of a server that cannot answer now: connection (08), resources (53), operator
# intervention such as a shutdown (57), system errors (58), and a read-only standby (25006).
_TRANSIENT_CLASSES = ("08", "53", "57", "58")
_TRANSIENT_STATES = ("25006",)

# Failures of the server or of the way to it, never of a statement: a commit the server cut off part way
# can surface as asyncpg's InternalClientError (an operation left half done on a closed connection).
CUT_OFF = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)
DRIVER_FAILURES = (*CUT_OFF, asyncpg.PostgresError)

# Workers LISTEN here; every transaction that makes deliveries due NOTIFYs it.
WORK_CHANNEL = "relay_work"

# What the store's SQL runs on: a connection borrowed from the pool.
Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


@dataclass(frozen=True)
class Target:
    """A DATABASE_URL read apart: what asyncpg needs, and where it is for operators."""

    dsn: str
    location: str
    password: str | None


def read_url(url: str) -> Target:
    """postgresql:// or postgres:// URL; `location` is host:port/dbname, never the user or password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    user = unquote(parts.username) if parts.username else None
    dbname = unquote(parts.path.lstrip("/")) or user or "postgres"
    password = unquote(parts.password) if parts.password else None
    return Target(
        dsn="postgresql://" + url.split("://", 1)[1],
        location=f"{host}:{parts.port or 5432}/{dbname}",
        password=password,
    )


def is_transient(error: BaseException) -> bool:
    """The server is down, restarting, unreachable or out of room: nothing wrong with the statement."""
    if isinstance(error, CUT_OFF):
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = str(getattr(error, "sqlstate", "") or "")
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    return False


def unavailable(error: BaseException) -> StoreUnavailable:
    """The failure as StoreUnavailable, named by its kind and message (never the URL)."""
    if isinstance(error, TimeoutError):
        return StoreUnavailable("PostgreSQL did not answer in time")
    return StoreUnavailable(f"PostgreSQL: {type(error).__name__}: {error}".rstrip(": "))


@contextlib.asynccontextmanager
async def failures_as_unavailable() -> AsyncIterator[None]:
    """Every driver or network failure inside becomes StoreUnavailable."""
    try:
        yield
    except StoreUnavailable:
        raise
    except DRIVER_FAILURES as error:
        raise unavailable(error) from None
