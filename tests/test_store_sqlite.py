"""What only the SQLite backend promises: its file format, its group commit, and its durability."""

import asyncio
import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relay.bringg.payload import judge
from relay.linkfile import Link
from relay.store import create_store
from relay.store.api import DatabaseUnusable, Store, StoreUnavailable
from relay.store.filters import DeliveryFilter
from relay.store.records import COPIED_TABLES, AccountPause, AttemptRecord, InboundWebhook, Outcome
from relay.store.sqlite.intake import RecordWebhook
from relay.store.sqlite.migrations import LATEST_VERSION, known_migrations, migrate
from relay.store.sqlite.store import SqliteStore
from tests.test_webhook import rating_body

NOW = datetime(2026, 12, 1, 18, 0, 0, 123456, tzinfo=UTC)


def inbound(rating_id: int, received_at: datetime = NOW) -> InboundWebhook:
    body = rating_body(rating_id=rating_id)
    return InboundWebhook(f"req-{rating_id}", received_at, body, "application/json", judge(body))


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

    assert applied == [f"{m.version:04d}_{m.name}" for m in known_migrations()[3:]]
    assert applied[0] == "0004_shared_state"
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


async def test_an_old_database_file_opens_and_reads_back_its_instants_exactly(tmp_path):
    path = tmp_path / "relay.db"
    _release_0003_file(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO webhooks (id, received_at, request_id, status, body) "
        "VALUES (4, ?, 'r', 'accepted', x'7b7d')",
        ("2026-11-30T09:59:58.000001Z",),
    )
    conn.execute(
        "INSERT INTO deliveries (id, webhook_id, merchant_id, rating_id, version, stars, rating, state, "
        "created_at, updated_at) VALUES (7, 4, 9, 77, 'v', 5, '{}', 'dead', ?, ?)",
        ("2026-11-30T09:59:59.000001Z", "2026-11-30T10:00:00.999999Z"),
    )
    conn.close()
    store = SqliteStore(path, timeout_s=5)

    await store.open()
    try:
        [listed] = await store.list_deliveries(DeliveryFilter())
        version = await store.schema_version()
    finally:
        await store.close()

    assert version == LATEST_VERSION
    assert listed.id == 7
    # Rows from before tenants are the implicit tenant's.
    assert listed.tenant == "default"
    assert listed.created_at == datetime(2026, 11, 30, 9, 59, 59, 1, tzinfo=UTC)
    assert listed.updated_at == datetime(2026, 11, 30, 10, 0, 0, 999999, tzinfo=UTC)


async def test_the_constructor_picks_sqlite_from_its_url_and_refuses_unknown_schemes(tmp_path):
    store: Store = create_store(f"sqlite:///{tmp_path / 'relay.db'}", timeout_s=1, pool_size=4)
    typed: Store = SqliteStore(tmp_path / "other.db", timeout_s=1)

    assert isinstance(store, SqliteStore)
    assert (store.backend, store.location, store.single_worker) == (
        "sqlite",
        str(tmp_path / "relay.db"),
        True,
    )
    assert typed.location == str(tmp_path / "other.db")
    with pytest.raises(DatabaseUnusable, match="'mysql'"):
        create_store("mysql://db/relay", timeout_s=1, pool_size=4)


async def test_concurrent_writes_share_commits(sqlite_store):
    before = sqlite_store.database.commits

    stored = await asyncio.gather(
        *(
            sqlite_store.record_webhook(inbound(n), recheck_before=NOW - timedelta(days=30))
            for n in range(1, 51)
        )
    )

    assert [webhook.status for webhook in stored] == ["accepted"] * 50
    assert 1 <= sqlite_store.database.commits - before < 50
    assert (await sqlite_store.deliveries_by_state())["pending"] == 50


async def test_a_failing_job_fails_alone_its_batch_is_retried_job_by_job(sqlite_store):
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('k', NULL)")  # NOT NULL: an IntegrityError

    recheck = NOW - timedelta(days=30)
    good = [sqlite_store.record_webhook(inbound(n), recheck_before=recheck) for n in (1, 2)]
    outcomes: list[Any] = list(
        await asyncio.gather(good[0], sqlite_store.database.write(broken), good[1], return_exceptions=True)
    )
    first, bad, second = outcomes

    assert isinstance(bad, StoreUnavailable) and "NOT NULL" in str(bad)
    assert [first.status, second.status] == ["accepted", "accepted"]
    assert (await sqlite_store.deliveries_by_state())["pending"] == 2


async def test_the_file_runs_in_wal_mode_and_commits_with_full_sync(sqlite_store):
    [mode] = await sqlite_store.database.reader.execute_fetchall("PRAGMA journal_mode")
    sync = await sqlite_store.database.write(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])

    assert mode[0] == "wal"
    assert sync == 2  # FULL: the WAL is fsynced before a commit is reported


async def test_export_then_import_keeps_every_row_its_id_and_its_instants_exactly(sqlite_store, tmp_path):
    recheck = NOW - timedelta(days=30)
    for n in (3, 5, 8):
        await sqlite_store.record_webhook(inbound(n, NOW + timedelta(microseconds=n)), recheck_before=recheck)
    [claimed, *_] = await sqlite_store.claim_due(
        "default", now=NOW + timedelta(seconds=1), lease_until=NOW + timedelta(minutes=1), limit=3
    )
    call = AttemptRecord("send", NOW + timedelta(microseconds=7), 12, 201, "delivered")
    leased = NOW + timedelta(minutes=1)
    delivered = Outcome(claimed.id, "delivered", 1, False, inquiry_id=41, last_status=201, calls=[call])
    await sqlite_store.record_outcome(delivered, leased_until=leased, now=NOW)
    await sqlite_store.save_links([Link(9, "ORD-1", 41)], now=NOW)
    await sqlite_store.take_turn(2, 42, leased_until=leased, now=NOW, until=NOW + timedelta(seconds=30))
    await sqlite_store.reserve_send_slot("acme", now=NOW, spacing_s=0.25)
    await sqlite_store.pause_account(AccountPause("quivo", "credentials refused", None))
    copy = SqliteStore(tmp_path / "copy.db", timeout_s=5)
    await copy.open()
    try:
        exported = {
            table: [row async for batch in sqlite_store.export_rows(table, batch_size=2) for row in batch]
            for table in COPIED_TABLES
        }
        for table, rows in exported.items():
            await copy.import_rows(table, rows)
        again = {
            table: [row async for batch in copy.export_rows(table, batch_size=100) for row in batch]
            for table in COPIED_TABLES
        }
        counts = await copy.row_counts()
        later = await copy.record_webhook(inbound(13), recheck_before=recheck)
    finally:
        await copy.close()

    assert again == exported
    assert counts == await sqlite_store.row_counts()
    assert counts["deliveries"] == 3 and counts["attempts"] == 1 and counts["links"] == 1
    [delivery, *_] = exported["deliveries"]
    assert delivery["created_at"] == NOW + timedelta(microseconds=3)
    assert delivery["unconfirmed"] is False and isinstance(exported["webhooks"][0]["body"], bytes)
    assert later.webhook_id > max(row["id"] for row in exported["webhooks"])


def _intake_file(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    migrate(conn)
    return conn


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY id")]


def _arrivals(
    bodies: list[bytes],
    tenants: tuple[str, ...] = ("default",),
    types: tuple[str | None, ...] = ("application/json",),
) -> list[RecordWebhook]:
    """Webhooks received a microsecond apart, their tenants and content types taken in turn."""
    recheck = NOW - timedelta(days=30)
    return [
        RecordWebhook(
            InboundWebhook(
                f"req-{n}",
                NOW + timedelta(microseconds=n),
                body,
                types[n % len(types)],
                judge(body),
                tenants[n % len(tenants)],
            ),
            recheck,
        )
        for n, body in enumerate(bodies)
    ]


def _stored_both_ways(
    tmp_path: Path, known: list[bytes], run: list[bytes], **vary: Any
) -> tuple[sqlite3.Connection, sqlite3.Connection, list[Any], list[Any], list[str]]:
    """The same run stored job by job in one file and together in another (both holding `known` first);
    the results of each, and the statements the run together took."""
    alone, batched = _intake_file(tmp_path / "alone.db"), _intake_file(tmp_path / "together.db")
    for conn in (alone, batched):
        for job in _arrivals(known):
            job(conn)
    one_by_one = [job(alone) for job in _arrivals(run, **vary)]
    statements: list[str] = []
    batched.set_trace_callback(statements.append)
    together = RecordWebhook.together(batched, _arrivals(run, **vary))
    batched.set_trace_callback(None)
    return alone, batched, one_by_one, together, statements


def test_a_run_of_new_ratings_is_stored_in_a_few_statements_as_each_alone_would_be(tmp_path):
    run = [rating_body(rating_id=n) for n in range(1, 38)]
    run[5] = b'{"webhook_type": "rating_submitted", "merchant_id": 9, "rating": {"id": "x"}}'  # quarantined
    run[20] = b'{"webhook_type": "task_done", "merchant_id": 9}'  # ignored
    alone, batched, one_by_one, together, statements = _stored_both_ways(tmp_path, [rating_body(900)], run)

    assert together == one_by_one
    assert [stored.status for stored in together].count("accepted") == 35
    for table in ("webhooks", "deliveries"):
        assert _rows(batched, table) == _rows(alone, table)
    # One look-up (known ratings, largest ids), then one INSERT into the arrivals view for all 37 webhooks
    # and 35 deliveries: two statements, not 72. (The trace names a statement again at each trigger step.)
    distinct = list(dict.fromkeys(statements))
    assert [statement.split()[0] for statement in distinct] == ["SELECT", "INSERT"]
    assert distinct[1].startswith("INSERT INTO arrivals VALUES")


def _odd_rating(rating_id: int, **rating: Any) -> bytes:
    """A rating whose text needs escaping in JSON, created long ago (its delivery starts unconfirmed)."""
    return json.dumps(
        {
            "webhook_type": "rating_submitted",
            "merchant_id": 12,
            "rating": {
                "id": rating_id,
                "rating": 4,
                "created_at": "2025-01-02T03:04:05.678+02:00",
                "comment": 'Caf\u00e9 "Zum \u00d6chsle" \\ \U0001f355 \t line\nbreak \u2028',
                "task": {"id": 8, "external_id": "ORD-\u00e9"},
                **rating,
            },
        },
        ensure_ascii=rating_id % 2 == 0,
    ).encode()


def test_every_kind_of_value_in_a_run_is_stored_together_as_each_alone_would_store_it(tmp_path):
    run = [
        _odd_rating(1),
        _odd_rating(2, updated_at="2026-11-30T23:59:59.999999-05:00"),
        _odd_rating(3, comment=None, task={"id": None, "title": None, "external_id": None}),
        rating_body(rating_id=4, updated_at="2026-11-21T10:00:00Z", external_id="INQ-4"),
        b'{"webhook_type": "rating_submitted", "merchant_id": 9, "rating": {"id": 5}}',  # quarantined
        b"\xff\xfe not even text",  # quarantined
        b'{"webhook_type": "task_done", "merchant_id": 9}',  # ignored
    ]
    vary = {"tenants": ("default", "acme", "b\u00e9ta"), "types": ("application/json", None)}
    alone, batched, one_by_one, together, statements = _stored_both_ways(tmp_path, [], run, **vary)

    assert together == one_by_one
    assert [stored.status for stored in together] == ["accepted"] * 4 + ["quarantined"] * 2 + ["ignored"]
    for table in ("webhooks", "deliveries"):
        assert _rows(batched, table) == _rows(alone, table)
    # The kinds of value this run is meant to hold, as the rows hold them.
    deliveries = batched.execute("SELECT * FROM deliveries ORDER BY id").fetchall()
    assert [row["rating"] for row in deliveries] == [
        rating.model_dump_json() for rating in (judge(body).rating for body in run[:4]) if rating
    ]
    assert [row["unconfirmed"] for row in deliveries] == [1, 1, 1, 0]
    assert {row["tenant"] for row in deliveries} == {"default", "acme", "b\u00e9ta"}
    assert deliveries[1]["version"] == "2026-12-01T04:59:59.999999Z"
    assert [row["state"] for row in deliveries] == ["pending"] * 4
    assert all(row["next_attempt_at"] == row["created_at"] == row["updated_at"] for row in deliveries)
    webhooks = batched.execute("SELECT * FROM webhooks ORDER BY id").fetchall()
    assert [row["content_type"] for row in webhooks][:2] == ["application/json", None]
    assert webhooks[5]["body"] == b"\xff\xfe not even text" and webhooks[5]["errors"]
    assert len(dict.fromkeys(statements)) == 2  # a look-up; 7 webhooks and their 4 deliveries


def test_a_run_holding_a_known_or_repeated_rating_is_decided_as_webhook_by_webhook(tmp_path):
    known = [rating_body(rating_id=1), rating_body(rating_id=2, updated_at="2026-11-21T10:00:00Z")]
    run = [
        rating_body(rating_id=3),
        rating_body(rating_id=1),  # a duplicate of a stored one
        rating_body(rating_id=2, updated_at="2026-11-22T10:00:00Z"),  # newer: supersedes
        rating_body(rating_id=2, updated_at="2026-11-20T10:00:00Z"),  # older: kept, superseded
        rating_body(rating_id=3),  # a duplicate of one earlier in the run
    ]
    alone, batched, one_by_one, together, _ = _stored_both_ways(tmp_path, known, run)

    assert together == one_by_one
    assert [stored.status for stored in together] == [
        "accepted",
        "duplicate",
        "accepted",
        "superseded",
        "duplicate",
    ]
    for table in ("webhooks", "deliveries"):
        assert _rows(batched, table) == _rows(alone, table)
