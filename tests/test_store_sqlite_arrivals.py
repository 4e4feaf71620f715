"""On SQLite a batch of new webhooks commits in one statement, outside BEGIN ... COMMIT; a writer that took
one of its ids first sends the batch through a transaction instead, and nothing is lost or stored twice."""

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from relay.store.records import StoredWebhook
from relay.store.sqlite import arrivals, intake
from relay.store.sqlite.store import SqliteStore
from relay.store.sqlite.writer import Database
from tests.test_store_sqlite import NOW, inbound

RECHECK_BEFORE = NOW - timedelta(days=30)


@pytest.fixture
def database(sqlite_store: SqliteStore) -> Database:
    """The writer and reader of a SQLite store on a file of its own."""
    return sqlite_store.database


async def stored_traced(database: Database, rating_ids: range) -> tuple[list[StoredWebhook], list[str]]:
    """Each rating's webhook written at once, and the statements the writer ran for them (each once, in
    order: the trace names a statement again at each step of its trigger)."""
    statements: list[str] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    def untrace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(None)

    await database.write(trace)
    stored = await asyncio.gather(
        *(
            database.write(intake.record_webhook(inbound(rating_id), recheck_before=RECHECK_BEFORE))
            for rating_id in rating_ids
        )
    )
    await database.write(untrace)
    # The first is the tracing job's COMMIT, the last the next job's BEGIN: the webhooks' lie between.
    return list(stored), list(dict.fromkeys(statements[1:-1]))


async def rows(database: Database, sql: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in await database.reader.execute_fetchall(sql)]


async def test_a_batch_of_new_webhooks_commits_in_one_statement_outside_a_transaction(database: Database):
    stored, statements = await stored_traced(database, range(1, 21))

    assert [(one.webhook_id, one.status, one.delivery_id) for one in stored] == [
        (n, "accepted", n) for n in range(1, 21)
    ]
    # Per batch, the look-up of known ratings and largest ids, then the one INSERT: no BEGIN, no COMMIT.
    look_up, insert = "SELECT (SELECT COALESCE(MAX(id), 0) FROM webhooks)", "INSERT INTO arrivals VALUES"
    assert all(statement.startswith((look_up, insert)) for statement in statements)
    assert any(statement.startswith(insert) for statement in statements)
    assert await rows(database, "SELECT id, rating_id, status FROM webhooks ORDER BY id") == [
        (n, n, "accepted") for n in range(1, 21)
    ]
    assert await rows(database, "SELECT id, webhook_id, rating_id, state FROM deliveries ORDER BY id") == [
        (n, n, n, "pending") for n in range(1, 21)
    ]


async def test_a_writer_that_took_an_id_first_sends_the_batch_through_a_transaction(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    read_ids = arrivals.last_ids
    intruded: list[bool] = []

    def ids_then_an_intruder(
        conn: sqlite3.Connection, keys: set[tuple[object, object]]
    ) -> tuple[int, int] | None:
        ids = read_ids(conn, keys)
        if not intruded:
            # Another connection, which does not wait for the relay's turn, stores a webhook in between.
            other = sqlite3.connect(tmp_path / "relay.db", isolation_level=None, timeout=5)
            other.execute(
                "INSERT INTO webhooks (received_at, request_id, status, body) "
                "VALUES ('2026-12-01T17:00:00Z', 'intruder', 'ignored', x'7b7d')"
            )
            other.close()
            intruded.append(True)
        return ids

    monkeypatch.setattr(arrivals, "last_ids", ids_then_an_intruder)

    stored, statements = await stored_traced(database, range(1, 4))

    # The one statement failed on the intruder's id, wrote nothing, and the transaction decided again.
    assert [statement.split(" (")[0].split(" VALUES")[0] for statement in statements][:3] == [
        "SELECT",
        "INSERT INTO arrivals",
        "BEGIN IMMEDIATE",
    ]
    assert [(one.webhook_id, one.delivery_id) for one in stored] == [(2, 1), (3, 2), (4, 3)]
    assert await rows(database, "SELECT id, request_id FROM webhooks ORDER BY id") == [
        (1, "intruder"),
        (2, "req-1"),
        (3, "req-2"),
        (4, "req-3"),
    ]
    assert await rows(database, "SELECT id, webhook_id, rating_id FROM deliveries ORDER BY id") == [
        (1, 2, 1),
        (2, 3, 2),
        (3, 4, 3),
    ]
