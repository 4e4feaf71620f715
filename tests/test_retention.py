"""Retention: pruning batch after batch on each backend, and SQLite's prune walking its indexes.

What one batch takes and what it leaves is the store contract's (tests/test_store_contract.py).
"""

from relay.store.api import Store
from relay.store.operations import prune
from relay.store.records import PruneResult
from relay.store.sqlite import retention
from relay.store.sqlite.store import SqliteStore
from tests.plans import full_scans_and_sorts, plan, traced
from tests.test_store_contract import CUTOFF, OLD, finished, rating, record


async def test_small_batches_add_up_and_report_progress(store: Store) -> None:
    for rating_id in range(1, 8):
        await finished(store, rating_id, "delivered", OLD, calls=1)
    seen: list[PruneResult] = []

    result = await prune(store, older_than=CUTOFF, batch_size=2, progress=seen.append)

    assert result == PruneResult(deliveries=7, attempts=7, webhooks=7)
    assert seen == [PruneResult(2, 2, 2), PruneResult(4, 4, 4), PruneResult(6, 6, 6), PruneResult(7, 7, 7)]
    assert await store.prune_batch(older_than=CUTOFF, batch_size=2) == PruneResult(0, 0, 0)


async def test_every_sqlite_prune_statement_walks_an_index(opened_store, database_url_for) -> None:
    store = await opened_store(database_url_for("sqlite"))
    assert isinstance(store, SqliteStore)
    await finished(store, 1, "delivered", OLD, calls=1)
    await record(store, rating(1), at=OLD)

    statements = await traced(store.database, retention.prune_batch(older_than=CUTOFF, batch_size=10))

    deletes = [sql for sql in statements if sql.lstrip().startswith("DELETE")]
    assert deletes
    for sql in deletes:
        steps = await plan(store.database, sql)
        assert full_scans_and_sorts(steps) == [], steps
