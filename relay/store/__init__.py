"""The relay's storage: one interface (api.Store), and `create_store` to open the backend a URL names."""

from __future__ import annotations

# Everything is imported when asked for: SQLite's intake process imports modules of this package, and starts
# in a few milliseconds without the rest of the relay (pathlib alone takes 15 ms, typing 10).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from relay.store.api import Store


def create_store(url: str, *, timeout_s: float, pool_size: int, serves_webhooks: bool = False) -> Store:
    """The store DATABASE_URL names (not opened yet); `pool_size` is for backends with a pool, and a store
    that `serves_webhooks` may prepare for them (SQLite starts its intake process)."""
    from pathlib import Path
    from urllib.parse import urlsplit

    from relay.store.api import DatabaseUnusable

    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from relay.store.sqlite.store import SqliteStore

        path = url.removeprefix("sqlite:///")
        if path == url or not path:
            raise DatabaseUnusable("DATABASE_URL: a SQLite one looks like sqlite:///relative/path.db")
        return SqliteStore(Path(path), timeout_s=timeout_s, intake_process=serves_webhooks)
    if scheme in ("postgresql", "postgres"):
        # A relay on SQLite never loads the PostgreSQL driver.
        from relay.store.postgres.store import PostgresStore

        return PostgresStore(url, timeout_s=timeout_s, pool_size=pool_size)
    raise DatabaseUnusable(f"DATABASE_URL: no store for the scheme {scheme or '(none)'!r}")
