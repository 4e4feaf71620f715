"""The relay's storage: one interface (api.Store), and `create_store` to open the backend a URL names."""

from pathlib import Path
from urllib.parse import urlsplit

from relay.store.api import DatabaseUnusable, Store
from relay.store.sqlite.store import SqliteStore


def create_store(url: str, *, timeout_s: float, pool_size: int) -> Store:
    """The store DATABASE_URL names (not opened yet); `pool_size` is for backends with a pool."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url.removeprefix("sqlite:///")
        if path == url or not path:
            raise DatabaseUnusable("DATABASE_URL: a SQLite one looks like sqlite:///relative/path.db")
        return SqliteStore(Path(path), timeout_s=timeout_s)
    if scheme in ("postgresql", "postgres"):
        # Imported here, so a relay on SQLite never loads the PostgreSQL driver.
        from relay.store.postgres.store import PostgresStore

        return PostgresStore(url, timeout_s=timeout_s, pool_size=pool_size)
    raise DatabaseUnusable(f"DATABASE_URL: no store for the scheme {scheme or '(none)'!r}")
