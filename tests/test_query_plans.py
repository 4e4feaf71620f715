"""The hot queries walk their indexes: a backlog of a million rows costs no more per claim or per scrape."""

from datetime import UTC, datetime, timedelta

from relay.store.gauges import read_backlog
from relay.store.outbox import claim_due, wake_linked_and_expire_unmatched
from tests.plans import full_scans_and_sorts, plan, traced


async def test_claim_walks_the_due_index_without_sorting(database):
    now = datetime.now(UTC)

    statements = await traced(database, claim_due(now=now, lease_until=now + timedelta(seconds=30), limit=8))

    [claim] = [sql for sql in statements if "UPDATE deliveries" in sql]
    steps = await plan(database, claim)
    assert "SEARCH d USING INDEX deliveries_due (next_attempt_at<?)" in steps
    assert full_scans_and_sorts(steps) == [], steps


async def test_unmatched_sweep_reads_only_unmatched_rows(database):
    now = datetime.now(UTC)

    statements = await traced(database, wake_linked_and_expire_unmatched(now=now, expire_before=now))

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
    assert due == ["SEARCH deliveries USING INDEX deliveries_due (next_attempt_at<?)"], due
