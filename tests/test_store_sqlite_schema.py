"""The SQLite schema's constraints and indexes: what each write costs, and upgrades that keep every row."""

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.domain.delivery import DELIVERY_STATES, DeliveryState
from relay.store.records import LEASE_LOST, AttemptRecord, ClaimedDelivery, Finish, Outcome
from relay.store.sqlite.claims import claim_due, record_outcome, record_outcomes
from relay.store.sqlite.gauges import read_backlog
from relay.store.sqlite.instants import instant_plus, to_text
from relay.store.sqlite.migrations import known_migrations, migrate
from relay.store.sqlite.store import SqliteStore

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)

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


def test_a_new_delivery_is_written_into_these_indexes_and_no_other(tmp_path):
    conn = _file(tmp_path / "relay.db")

    indexes = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'deliveries'")

    # The workers' lag reads deliveries_due_tenant, the claim's index: no index on next_attempt_at alone.
    assert sorted(name for (name,) in indexes) == [
        "deliveries_due_tenant",
        "deliveries_external",
        "deliveries_finished",
        "deliveries_inquiry",
        "deliveries_state",
        "deliveries_unmatched",
        "deliveries_waiting",
        "sqlite_autoindex_deliveries_1",
    ]


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

    assert "0011_state_checks_without_in_lists" in migrate(old)

    assert old.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    for table, rows in before.items():
        assert old.execute(f"SELECT * FROM {table} ORDER BY id").fetchall() == rows
    other.execute(_NEW_DELIVERY, (100, "pending"))  # a statement run after the upgrade reads the schema again
    for conn in (old, other):
        assert _temporary_tables(conn, _NEW_DELIVERY) == 0
        assert _temporary_tables(conn, _NEW_WEBHOOK) == 0
        with pytest.raises(sqlite3.IntegrityError, match="state = 'pending' OR"):
            conn.execute(_NEW_DELIVERY, (101, "bogus"))


async def test_the_workers_lag_is_the_soonest_due_waiting_row_of_any_tenant(tmp_path):
    store = SqliteStore(tmp_path / "relay.db", timeout_s=5)
    await store.open()
    draw = random.Random(11)
    rows = [
        (
            n,
            draw.choice(("default", "acme", "b\u00e9ta", "zed")),
            draw.choice(DELIVERY_STATES),
            draw.randrange(1000),
        )
        for n in range(400)
    ]

    def fill(conn: sqlite3.Connection) -> None:
        for n, tenant, state, due in rows:
            conn.execute(
                "INSERT INTO deliveries (webhook_id, tenant, merchant_id, rating_id, version, stars, rating, "
                "state, next_attempt_at, created_at, updated_at) VALUES (1, ?, 7, ?, '', 5, '', ?, ?, ?, ?)",
                (tenant, n, state, to_text(T0 + timedelta(seconds=due)), to_text(T0), to_text(T0)),
            )

    try:
        await store.database.write(fill)
        for seconds in (-1, 0, 3, 250, 999, 2000):
            now = T0 + timedelta(seconds=seconds)
            due = [
                T0 + timedelta(seconds=due)
                for _, _, state, due in rows
                if state in ("pending", "retrying", "sending") and T0 + timedelta(seconds=due) <= now
            ]
            backlog = await read_backlog(store.database.reader, now)
            assert backlog.worker_lag_s == ((now - min(due)).total_seconds() if due else None), seconds
    finally:
        await store.close()


def _leased_file(path: Path) -> tuple[sqlite3.Connection, list[ClaimedDelivery]]:
    """Twelve deliveries claimed under one lease: ratings 1-12, rating 3 and 4 each with a newer version
    waiting behind, and a link for the order of rating 5."""
    conn = _file(path)
    conn.row_factory = sqlite3.Row
    conn.create_function("instant_plus", 2, instant_plus, deterministic=True)
    for n in range(1, 13):
        for version in ("", "2026-12-02T09:00:00.000000Z") if n in (3, 4) else ("",):
            conn.execute(
                "INSERT INTO deliveries (webhook_id, merchant_id, rating_id, version, external_id, stars, "
                "rating, state, next_attempt_at, created_at, updated_at) "
                "VALUES (?1, 7, ?1, ?2, ?3, 5, '{}', 'pending', ?4, ?4, ?4)",
                (n, version, f"ORD-{n}", to_text(T0 if version == "" else T0 + timedelta(hours=1))),
            )
    conn.execute("INSERT INTO links VALUES (7, 'ORD-5', 55, ?)", (to_text(T0),))
    claimed = claim_due("default", now=T0, lease_until=T0 + timedelta(seconds=30), limit=20)(conn)
    return conn, claimed


def _finishes(claimed: list[ClaimedDelivery]) -> list[Finish]:
    lease = T0 + timedelta(seconds=30)
    call = AttemptRecord("send", T0, 12, 503, "retry", "boom")
    plans: list[tuple[DeliveryState, datetime | None, int | None]] = [
        ("delivered", None, 101),
        ("dead", None, None),
        ("retrying", T0 + timedelta(minutes=5), 103),  # a newer version waits: superseded
        ("unmatched", None, None),  # a newer version waits: superseded
        ("unmatched", None, None),  # its order is linked now: pending
        ("pending", T0 + timedelta(minutes=1), None),
    ]
    finishes = []
    for delivery in claimed:
        state, due, inquiry = plans[(delivery.rating_id - 1) % len(plans)]
        outcome = Outcome(
            delivery.id, state, 1, delivery.id % 2 == 0, due, inquiry, 503, "boom", 4.5, calls=[call]
        )
        # Rating 9's finishes under another lease than its own: lost.
        finishes.append(Finish(outcome, lease + timedelta(seconds=1) if delivery.rating_id == 9 else lease))
    return finishes


def test_a_batch_of_outcomes_is_stored_as_each_recorded_alone_would_be(tmp_path):
    alone, claimed = _leased_file(tmp_path / "alone.db")
    together, _ = _leased_file(tmp_path / "together.db")
    finishes = _finishes(claimed)
    later = T0 + timedelta(seconds=10)

    one_by_one = [record_outcome(f.outcome, leased_until=f.leased_until, now=later)(alone) for f in finishes]
    statements: list[str] = []
    together.set_trace_callback(statements.append)
    batched = record_outcomes(finishes, now=later)(together)
    together.set_trace_callback(None)

    assert batched == one_by_one
    assert batched[:6] == ["delivered", "dead", "superseded", "superseded", "pending", "pending"]
    assert batched[8] == LEASE_LOST
    for table in ("deliveries", "attempts", "inquiry_holds"):
        assert _rows(together, table) == _rows(alone, table), table
    # Twelve deliveries' rows in two statements (eight, then four), not twelve; so are the eleven stored
    # ones' calls (eight, two, one), and their holds are released in one.
    assert sum("UPDATE deliveries SET state = o.state" in sql for sql in statements) == 2, statements
    assert sum(sql.startswith("INSERT INTO attempts") for sql in statements) == 3, statements
    assert sum(sql.startswith("DELETE FROM inquiry_holds") for sql in statements) == 1, statements


def test_a_delivery_finished_twice_in_one_batch_is_stored_once(tmp_path):
    alone, claimed = _leased_file(tmp_path / "alone.db")
    together, _ = _leased_file(tmp_path / "together.db")
    finishes = _finishes(claimed)
    twice = [finishes[0], *finishes, finishes[4]]
    later = T0 + timedelta(seconds=10)

    one_by_one = [record_outcome(f.outcome, leased_until=f.leased_until, now=later)(alone) for f in twice]
    batched = record_outcomes(twice, now=later)(together)

    assert batched == one_by_one
    assert (batched[1], batched[-1]) == (LEASE_LOST, LEASE_LOST)
    for table in ("deliveries", "attempts", "inquiry_holds"):
        assert _rows(together, table) == _rows(alone, table), table


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
