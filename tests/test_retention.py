"""Retention against a real database: what goes, what stays for an operator, in batches, on indexes."""

import sqlite3
from datetime import UTC, datetime, timedelta

from relay.domain.rating import format_instant
from relay.store.db import Database
from relay.store.retention import PruneResult, prune, prune_batch
from tests.plans import full_scans_and_sorts, plan, traced

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=30)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=2)


class Rows:
    """Inserts webhooks, deliveries and attempts with plain SQL, numbering ratings as it goes."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.rating_id = 0

    async def webhook(self, status: str, received_at: datetime, rating_id: int | None = None) -> int:
        def job(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO webhooks (received_at, request_id, status, merchant_id, rating_id, body) "
                "VALUES (?, 'req', ?, 1, ?, x'7b7d')",
                (format_instant(received_at), status, rating_id),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return await self.database.write(job)

    async def delivery(
        self, state: str, at: datetime, *, attempts: int = 0, webhook_id: int | None = None
    ) -> int:
        """A delivery last updated `at`, due then, with `attempts` attempt rows; its accepted webhook too."""
        self.rating_id += 1
        rating_id = self.rating_id
        if webhook_id is None:
            webhook_id = await self.webhook("accepted", at, rating_id)

        def job(conn: sqlite3.Connection) -> int:
            stamp = format_instant(at)
            cursor = conn.execute(
                "INSERT INTO deliveries (webhook_id, merchant_id, rating_id, version, stars, rating, state, "
                "next_attempt_at, created_at, updated_at) VALUES (?, 1, ?, ?, 4, '{}', ?, ?, ?, ?)",
                (webhook_id, rating_id, stamp, state, stamp, stamp, stamp),
            )
            assert cursor.lastrowid is not None
            conn.executemany(
                "INSERT INTO attempts (delivery_id, number, action, started_at, duration_ms, outcome) "
                "VALUES (?, ?, 'send', ?, 10, 'ok')",
                [(cursor.lastrowid, number, stamp) for number in range(1, attempts + 1)],
            )
            return cursor.lastrowid

        return await self.database.write(job)

    async def delivery_of(self, webhook_id: int, state: str, at: datetime) -> int:
        """Another version of the webhook's rating, pointing at the same webhook."""
        rating_id = await self.scalar("SELECT rating_id FROM webhooks WHERE id = ?", webhook_id)

        def job(conn: sqlite3.Connection) -> int:
            stamp = format_instant(at)
            cursor = conn.execute(
                "INSERT INTO deliveries (webhook_id, merchant_id, rating_id, version, stars, rating, state, "
                "created_at, updated_at) VALUES (?, 1, ?, 'v2', 4, '{}', ?, ?, ?)",
                (webhook_id, rating_id, state, stamp, stamp),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return await self.database.write(job)

    async def scalar(self, sql: str, *args: object) -> int:
        async with self.database.reader.execute(sql, args) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def ids(self, table: str) -> set[int]:
        return {row[0] for row in await self.database.reader.execute_fetchall(f"SELECT id FROM {table}")}

    async def webhook_of(self, delivery_id: int) -> int:
        return await self.scalar("SELECT webhook_id FROM deliveries WHERE id = ?", delivery_id)


async def test_old_finished_deliveries_go_with_their_attempts_and_webhooks(database):
    rows = Rows(database)
    delivered = await rows.delivery("delivered", OLD, attempts=2)
    superseded = await rows.delivery("superseded", OLD, attempts=1)
    webhooks = {await rows.webhook_of(delivered), await rows.webhook_of(superseded)}

    result = await prune(database, older_than=CUTOFF)

    assert result == PruneResult(deliveries=2, attempts=3, webhooks=2)
    assert await rows.ids("deliveries") == set()
    assert await rows.ids("attempts") == set()
    assert await rows.ids("webhooks") & webhooks == set()


async def test_old_duplicate_and_ignored_webhooks_go_and_recent_records_stay(database):
    rows = Rows(database)
    await rows.webhook("duplicate", OLD, rating_id=900)
    await rows.webhook("ignored", OLD)
    recent = {
        await rows.webhook("duplicate", RECENT, rating_id=901),
        await rows.webhook("ignored", RECENT),
    }
    recent_delivery = await rows.delivery("delivered", RECENT, attempts=1)
    recent.add(await rows.webhook_of(recent_delivery))

    result = await prune(database, older_than=CUTOFF)

    assert result == PruneResult(deliveries=0, attempts=0, webhooks=2)
    assert await rows.ids("webhooks") == recent
    assert await rows.ids("deliveries") == {recent_delivery}
    assert await rows.scalar("SELECT COUNT(*) FROM attempts") == 1


async def test_records_waiting_for_an_operator_or_the_worker_stay_however_old(database):
    rows = Rows(database)
    kept = [
        await rows.delivery(state, OLD, attempts=1) for state in ("dead", "unmatched", "pending", "retrying")
    ]
    quarantined = await rows.webhook("quarantined", OLD)
    webhooks_before = await rows.ids("webhooks")

    result = await prune(database, older_than=CUTOFF)

    assert result == PruneResult(0, 0, 0)
    assert await rows.ids("deliveries") == set(kept)
    assert await rows.scalar("SELECT COUNT(*) FROM attempts") == len(kept)
    assert await rows.ids("webhooks") == webhooks_before
    assert quarantined in webhooks_before


async def test_a_webhook_stays_while_any_of_its_deliveries_does(database):
    rows = Rows(database)
    delivered = await rows.delivery("delivered", OLD)
    webhook = await rows.webhook_of(delivered)
    dead = await rows.delivery_of(webhook, "dead", OLD)

    result = await prune(database, older_than=CUTOFF)

    assert result == PruneResult(deliveries=1, attempts=0, webhooks=0)
    assert await rows.ids("deliveries") == {dead}
    assert webhook in await rows.ids("webhooks")


async def test_small_batches_add_up_and_report_progress(database):
    rows = Rows(database)
    for _ in range(7):
        await rows.delivery("delivered", OLD, attempts=1)
    seen: list[PruneResult] = []
    commits_before = database.commits

    result = await prune(database, older_than=CUTOFF, batch_size=2, progress=seen.append)

    assert result == PruneResult(deliveries=7, attempts=7, webhooks=7)
    assert seen == [PruneResult(2, 2, 2), PruneResult(4, 4, 4), PruneResult(6, 6, 6), PruneResult(7, 7, 7)]
    assert database.commits - commits_before == 5  # four batches that deleted, one that found nothing left
    assert await rows.ids("webhooks") == set()


async def test_every_prune_statement_walks_an_index(database):
    rows = Rows(database)
    await rows.delivery("delivered", OLD, attempts=1)
    await rows.webhook("duplicate", OLD)

    statements = await traced(database, prune_batch(older_than=CUTOFF, batch_size=10))

    deletes = [sql for sql in statements if sql.lstrip().startswith("DELETE")]
    assert len(deletes) == 3
    for sql in deletes:
        steps = await plan(database, sql)
        assert full_scans_and_sorts(steps) == [], steps
