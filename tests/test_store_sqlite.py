"""What only the SQLite backend promises: its file format, its group commit, and its durability."""

import hashlib
import sqlite3
from pathlib import Path

from relay.store.sqlite.migrations import LATEST_VERSION, known_migrations, migrate


def _release_0003_file(path: Path) -> None:
    """A database as the release before the store interface left it: migrations 0001 to 0003 applied."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    for migration in known_migrations()[:3]:
        for statement in migration.statements():
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, '2026-11-30T10:00:00.000000Z')",
            (migration.version, migration.name),
        )
    conn.execute("INSERT INTO meta (key, value) VALUES ('worker_heartbeat', '2026-11-30T10:00:00.000000Z')")
    conn.close()


def test_a_0003_database_file_upgrades_to_the_shared_state_tables(tmp_path):
    path = tmp_path / "relay.db"
    _release_0003_file(path)
    conn = sqlite3.connect(path, isolation_level=None)

    applied = migrate(conn)

    assert applied == ["0004_shared_state"]
    assert LATEST_VERSION == 4
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"inquiry_holds", "workers", "account_state", "duties"} <= tables
    assert conn.execute("SELECT value FROM meta").fetchall() == [("2026-11-30T10:00:00.000000Z",)]
    assert migrate(conn) == []


# Existing database files were made with these bytes: a change would leave them behind the shipped schema.
_SHIPPED = {
    1: "b796c10a8efd2413097a5bae3806307487c2a92576ef7c860a4cf473555ea6e1",
    2: "c42fa5b3be921efbe2510a43b8c62230c8b9664b197c6c6148b907b5d438a245",
    3: "501cd831c9b142e837eda5d9d0008c986db579b57b30bfa6b47fa51851183863",
}


def test_migrations_already_shipped_stay_byte_for_byte_as_they_were():
    shipped = {m.version: hashlib.sha256(m.sql.encode()).hexdigest() for m in known_migrations()[:3]}

    assert shipped == _SHIPPED
