"""Versioned schema migrations for PostgreSQL: numbered SQL files, applied once, under an advisory lock."""

from dataclasses import dataclass
from importlib import resources

from relay.store.postgres.connection import Conn

# pg_advisory_xact_lock's key for the check-and-apply: any constant no other lock of the relay uses.
_MIGRATION_LOCK = 0x72656C6179  # "relay"


@dataclass(frozen=True)
class Migration:
    """One SQL file, named NNNN_what.sql."""

    version: int
    name: str
    sql: str


def known_migrations() -> list[Migration]:
    """The migrations shipped with this build, in version order."""
    folder = resources.files("relay.store.postgres") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found, key=lambda migration: migration.version)


LATEST_VERSION = known_migrations()[-1].version


async def applied_version(conn: Conn) -> int:
    """The newest migration applied to this database (0 for a new one)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))


async def migrate(conn: Conn) -> list[str]:
    """Apply what is missing in one transaction; processes starting together wait for each other's."""
    async with conn.transaction():
        # Held to the commit: a second process reads the version only after the first applied its own.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await applied_version(conn)
        done: list[str] = []
        for migration in known_migrations():
            if migration.version <= current:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            done.append(f"{migration.version:04d}_{migration.name}")
    return done
