"""Retention: finished deliveries and spent webhooks past the cutoff are deleted, one short batch a job."""

import sqlite3
from datetime import datetime

from relay.store.records import PruneResult
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.writer import WriteJob

# INDEXED BY in both walks: without ANALYZE statistics the planner prefers the state and status indexes,
# which read every delivered delivery (or accepted webhook) and sort them, on each batch.

# Oldest finished first, along the partial index on updated_at; its WHERE must be repeated word for word.
_FINISHED_DELIVERIES = """
DELETE FROM deliveries WHERE id IN (
    SELECT id FROM deliveries INDEXED BY deliveries_finished
    WHERE state IN ('delivered', 'superseded') AND updated_at < :cutoff
    ORDER BY updated_at LIMIT :limit)
RETURNING id
"""

# A delivery carries its webhook's merchant and rating ids, so the unique (merchant_id, rating_id, version)
# index finds any delivery still pointing at the webhook; there is no index on webhook_id alone.
# A quarantined webhook's raw bytes wait for an operator: it goes only once dismissed before the cutoff.
_SPENT_WEBHOOKS = """
DELETE FROM webhooks WHERE id IN (
    SELECT w.id FROM webhooks w INDEXED BY webhooks_received
    WHERE w.received_at < :cutoff
      AND (w.status IN ('accepted', 'duplicate', 'ignored')
           OR (w.status = 'quarantined' AND w.dismissed_at < :cutoff))
      AND NOT EXISTS (
          SELECT 1 FROM deliveries d
          WHERE d.merchant_id = w.merchant_id AND d.rating_id = w.rating_id AND d.webhook_id = w.id)
    ORDER BY w.received_at LIMIT :limit)
"""


def prune_batch(*, older_than: datetime, batch_size: int) -> WriteJob[PruneResult]:
    """A write job deleting up to `batch_size` finished deliveries (with their attempts) and webhooks.

    Delivered and superseded deliveries last updated before `older_than` go, and every attempt of them.
    Duplicate and ignored webhooks received before it go, accepted ones whose deliveries are all gone
    (their raw body has served its purpose), and quarantined ones dismissed before it. No webhook that a
    delivery still points at is deleted.
    Workers silent since before `older_than` leave the registry (killed, never to beat again).
    """

    def job(conn: sqlite3.Connection) -> PruneResult:
        window = {"cutoff": to_text(older_than), "limit": batch_size}
        finished = [row[0] for row in conn.execute(_FINISHED_DELIVERIES, window).fetchall()]
        attempts = 0
        if finished:
            cursor = conn.executemany(
                "DELETE FROM attempts WHERE delivery_id = ?", [(delivery_id,) for delivery_id in finished]
            )
            attempts = cursor.rowcount
        # After the deliveries, so a webhook whose last delivery went in this batch goes in it too.
        webhooks = conn.execute(_SPENT_WEBHOOKS, window)
        conn.execute("DELETE FROM workers WHERE beat_at < :cutoff", window)
        return PruneResult(len(finished), attempts, webhooks.rowcount)

    return job
