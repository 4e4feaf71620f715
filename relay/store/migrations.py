"""Versioned schema migrations: numbered SQL files, each applied once, in order, in its own transaction."""

import sqlite3
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Migration:
    """One SQL file, named NNNN_what.sql."""

    version: int
    name: str
    sql: str


def known_migrations() -> list[Migration]:
    """The migrations shipped with this build, in version order."""
    folder = resources.files("relay.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found, key=lambda migration: migration.version)


LATEST_VERSION = known_migrations()[-1].version


def applied_version(conn: sqlite3.Connection) -> int:
    """The newest migration applied to this database (0 for a new one)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply what is missing; safe to run again and beside another process doing the same."""
    done: list[str] = []
    for migration in known_migrations():
        if migration.version <= applied_version(conn):
            continue
        script = (
            "BEGIN IMMEDIATE;\n"
            f"{migration.sql}\n"
            "INSERT INTO schema_migrations (version, name, applied_at) "
            f"VALUES ({migration.version}, '{migration.name}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));\n"
            "COMMIT;"
        )
        try:
            conn.executescript(script)
        except sqlite3.Error:
            if conn.in_transaction:
                conn.rollback()
            # Another process may have applied it meanwhile; anything else is a real failure.
            if migration.version <= applied_version(conn):
                continue
            raise
        done.append(f"{migration.version:04d}_{migration.name}")
    return done
