"""Versioned schema migrations: numbered SQL files, each applied once, in order, in its own transaction."""

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Migration:
    """One SQL file, named NNNN_what.sql."""

    version: int
    name: str
    sql: str

    def statements(self) -> Iterator[str]:
        """The file's statements one by one (a trigger's body with its own semicolons stays whole)."""
        statement = ""
        for piece in self.sql.split(";"):
            statement += piece + ";"
            if sqlite3.complete_statement(statement):
                if statement.strip() != ";":
                    yield statement
                statement = ""


def known_migrations() -> list[Migration]:
    """The migrations shipped with this build, in version order."""
    folder = resources.files("relay.store.sqlite") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found, key=lambda migration: migration.version)


LATEST_VERSION = known_migrations()[-1].version


def applied_version(conn: sqlite3.Connection) -> int:
    """The newest migration applied to this database (0 for a new one)."""
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply what is missing; safe beside any number of processes doing the same at the same moment."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    done: list[str] = []
    for migration in known_migrations():
        if migration.version <= applied_version(conn):
            continue
        # BEGIN IMMEDIATE takes the write lock (waiting busy_timeout for it); the version is read again
        # under it, because another process may have applied this migration while this one waited.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if migration.version > applied_version(conn):
                for statement in migration.statements():
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) "
                    "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    (migration.version, migration.name),
                )
                done.append(f"{migration.version:04d}_{migration.name}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return done
