"""The hot queries walk their indexes: a backlog of a million rows costs no more per claim or per scrape."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.store.records import AttemptRecord, Outcome
from relay.store.sqlite.claims import claim_due, record_outcome
from relay.store.sqlite.gauges import read_backlog
from relay.store.sqlite.holds import take_turn
from relay.store.sqlite.intake import record_webhook
from relay.store.sqlite.store import SqliteStore
from relay.store.sqlite.unmatched import sweep_unmatched
from relay.store.sqlite.writer import Database
from tests.plans import full_scans_and_sorts, plan, traced
from tests.test_store_sqlite import inbound


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """The SQLite backend's database on a fresh file."""
    store = SqliteStore(tmp_path / "relay.db", timeout_s=5)
    await store.open()
    try:
        yield store.database
    finally:
        await store.close()


async def test_claim_walks_the_due_index_without_sorting(database):
    now = datetime.now(UTC)

    statements = await traced(
        database, claim_due("default", now=now, lease_until=now + timedelta(seconds=30), limit=8)
    )

    [claim] = [sql for sql in statements if "UPDATE deliveries" in sql]
    steps = await plan(database, claim)
    assert "SEARCH d USING INDEX deliveries_due_tenant (tenant=? AND next_attempt_at<?)" in steps
    assert full_scans_and_sorts(steps) == [], steps


async def test_unmatched_sweep_reads_only_unmatched_rows(database):
    now = datetime.now(UTC)

    statements = await traced(database, sweep_unmatched(now=now, expire_before={"default": now}))

    for sql in (sql for sql in statements if sql.lstrip().startswith("UPDATE")):
        steps = await plan(database, sql)
        assert full_scans_and_sorts(steps) == [], steps


async def test_backlog_reads_one_entry_of_each_partial_index(database):
    statements: list[str] = []
    await database.reader.set_trace_callback(statements.append)
    await read_backlog(database.reader, datetime.now(UTC))
    await database.reader.set_trace_callback(None)

    [oldest, due] = [await plan(database, sql) for sql in statements]
    # SEARCH without a column: SQLite's MIN() optimization, one seek to the start of the index.
    assert oldest == ["SEARCH deliveries USING INDEX deliveries_waiting"], oldest
    # The lag: the first tenant, each next one past it, and each one's soonest due row, a seek each.
    assert [step for step in due if "deliveries" in step] == [
        "SEARCH deliveries USING INDEX deliveries_due_tenant",
        "SEARCH d USING INDEX deliveries_due_tenant (tenant>?)",
        "SEARCH d USING INDEX deliveries_due_tenant (tenant=? AND next_attempt_at<?)",
    ], due


async def test_taking_a_turn_and_recording_an_outcome_walk_their_keys(database):
    now = datetime.now(UTC)
    await database.write(record_webhook(inbound(1, now), recheck_before=now))
    [claimed] = await database.write(claim_due("default", now=now, lease_until=now, limit=1))
    call = AttemptRecord("send", now, 12, 503, "retry")
    outcome = Outcome(claimed.id, "retrying", 1, False, next_attempt_at=now, inquiry_id=5, calls=[call])

    statements = await traced(database, take_turn(claimed.id, 5, leased_until=now, now=now, until=now))
    statements += await traced(database, record_outcome(outcome, leased_until=now, now=now))

    # The outcome releases the hold by its delivery id: without an index there it would read every hold.
    [release] = [sql for sql in statements if sql.startswith("DELETE FROM inquiry_holds")]
    assert (await plan(database, release))[0] == (
        "SEARCH inquiry_holds USING COVERING INDEX inquiry_holds_delivery (delivery_id=?)"
    )
    for sql in statements:
        steps = await plan(database, sql)
        assert full_scans_and_sorts(steps) == [], (sql, steps)


async def test_a_turn_whose_lease_already_lasts_until_then_only_reads_the_delivery(database):
    # A claim's lease is as long as the turn taken right after it would make it: rewriting the row (and its
    # due indexes) to the same instant cost more than the rest of the turn.
    now = datetime.now(UTC)
    lease = now + timedelta(minutes=5)
    await database.write(record_webhook(inbound(1, now), recheck_before=now))
    [claimed] = await database.write(claim_due("default", now=now, lease_until=lease, limit=1))

    statements: list[str] = []
    turns = []
    for leased_until in (now, lease):  # not its lease, then its own
        job = take_turn(claimed.id, 5, leased_until=leased_until, now=now, until=leased_until)
        statements += await traced(database, job)
        turns.append(await database.write(job))

    assert turns == ["lost", "go"]
    assert not [sql for sql in statements if "UPDATE deliveries" in sql], statements
