"""The SQLite schema's constraints and indexes: what each write costs, and upgrades that keep every row."""

import sqlite3
from pathlib import Path

import pytest

from relay.domain.delivery import DELIVERY_STATES
from relay.store.sqlite.migrations import known_migrations, migrate

_NEW_DELIVERY = (
    "INSERT INTO deliveries (webhook_id, merchant_id, rating_id, version, stars, rating, state, created_at, "
    "updated_at) VALUES (1, 7, ?, '', 5, '{}', ?, '2026-12-02T10:00:00Z', '2026-12-02T10:00:00Z')"
)
_NEW_WEBHOOK = (
    "INSERT INTO webhooks (received_at, request_id, status, body) "
    "VALUES ('2026-12-02T10:00:00.000000Z', 'req', ?, x'7b7d')"
)
_STATE_CHANGE = "UPDATE deliveries SET state = ? WHERE id = ?"


def _file(path: Path, *, up_to: int | None = None) -> sqlite3.Connection:
    """A database file with the migrations applied up to `up_to` (all of them without)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    if up_to is None:
        migrate(conn)
        return conn
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at)"
    )
    for migration in known_migrations()[:up_to]:
        for statement in migration.statements():
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, 'then')", (migration.version, migration.name)
        )
    return conn


def _temporary_tables(conn: sqlite3.Connection, sql: str) -> int:
    """How many temporary b-trees one run of `sql` opens (each row written tests its CHECKs)."""
    return sum(step[1] == "OpenEphemeral" for step in conn.execute(f"EXPLAIN {sql}", ("x",) * sql.count("?")))


def test_writing_a_delivery_or_a_webhook_builds_no_temporary_table(tmp_path):
    conn = _file(tmp_path / "relay.db")

    assert _temporary_tables(conn, _NEW_DELIVERY) == 0
    assert _temporary_tables(conn, _NEW_WEBHOOK) == 0
    assert _temporary_tables(conn, _STATE_CHANGE) == 0


def test_the_checks_admit_exactly_the_known_states_and_statuses(tmp_path):
    conn = _file(tmp_path / "relay.db")

    for number, state in enumerate(DELIVERY_STATES):
        conn.execute(_NEW_DELIVERY, (number, state))
    for status in ("accepted", "duplicate", "ignored", "quarantined"):
        conn.execute(_NEW_WEBHOOK, (status,))
    for refused in ("Pending", "pending ", "", "dismissed"):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(_NEW_DELIVERY, (99, refused))
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(_NEW_WEBHOOK, (refused,))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute(_STATE_CHANGE, ("done", 1))


def test_a_0010_file_upgrades_keeping_every_row_and_other_connections_see_the_new_checks(tmp_path):
    path = tmp_path / "relay.db"
    old = _file(path, up_to=10)
    for number, state in enumerate(DELIVERY_STATES):
        old.execute(_NEW_DELIVERY, (number, state))
    old.execute(_NEW_WEBHOOK, ("quarantined",))
    before = {
        table: old.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
        for table in ("deliveries", "webhooks")
    }
    # Another process's connection, its schema read before the upgrade.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("SELECT count(*) FROM deliveries").fetchone()
    assert _temporary_tables(old, _NEW_DELIVERY) == 1

    assert migrate(old) == ["0011_state_checks_without_in_lists"]

    assert old.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    for table, rows in before.items():
        assert old.execute(f"SELECT * FROM {table} ORDER BY id").fetchall() == rows
    other.execute(_NEW_DELIVERY, (100, "pending"))  # a statement run after the upgrade reads the schema again
    for conn in (old, other):
        assert _temporary_tables(conn, _NEW_DELIVERY) == 0
        assert _temporary_tables(conn, _NEW_WEBHOOK) == 0
        with pytest.raises(sqlite3.IntegrityError, match="state = 'pending' OR"):
            conn.execute(_NEW_DELIVERY, (101, "bogus"))
