"""Outcomes on PostgreSQL: a batch sent as rows (0013) stores what one call per outcome (0012) stores."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from relay.domain.judgement import Judgement
from relay.domain.rating import Rating
from relay.linkfile import Link
from relay.store.postgres import outbox
from relay.store.postgres.connection import Conn
from relay.store.postgres.instants import micros
from relay.store.postgres.store import PostgresStore
from relay.store.records import AttemptRecord, InboundWebhook, Outcome

# Not on a whole second: the microseconds of every instant must come through.
T0 = datetime(2026, 12, 1, 12, 0, 0, 123457, tzinfo=UTC)
SECOND = timedelta(seconds=1)
LEASE = timedelta(minutes=5, microseconds=3)

Record = Callable[[Conn, list[outbox.Recording]], Awaitable[list[str]]]

# 0012's function, one call per outcome with its calls as six arrays of columns: what a worker of an older
# build still sends, and what the rows must come to.
_ONE_BY_ONE = f"SELECT relay_record_outcome({', '.join(f'${n}' for n in range(1, 18))})"


async def one_by_one(conn: Conn, recordings: list[outbox.Recording]) -> list[str]:
    arguments = [
        (
            outcome.delivery_id,
            leased_until,
            outcome.state,
            outcome.attempts,
            outcome.unconfirmed,
            outcome.next_attempt_at,
            outcome.inquiry_id,
            outcome.last_status,
            outcome.last_error,
            outcome.current_rating,
            now,
            [call.action for call in outcome.calls],
            [call.started_at for call in outcome.calls],
            [call.duration_ms for call in outcome.calls],
            [call.status_code for call in outcome.calls],
            [call.outcome for call in outcome.calls],
            [call.error for call in outcome.calls],
        )
        for outcome, leased_until, now in recordings
    ]
    return [str(row[0]) for row in await conn.fetchmany(_ONE_BY_ONE, arguments)]


def inbound(merchant_id: int, rating_id: int, *, updated_at: datetime | None = None) -> InboundWebhook:
    rating = Rating(
        merchant_id=merchant_id,
        rating_id=rating_id,
        stars=4,
        external_id=f"ORD-{rating_id}",
        updated_at=updated_at,
    )
    judgement = Judgement("accepted", "rating_submitted", merchant_id, rating_id, (), rating)
    return InboundWebhook(f"req-{rating_id}", T0, b'{"rating": 1}', "application/json", judgement)


async def outcomes_recorded_by(store: PostgresStore, record: Record, merchant_id: int) -> list[list[Any]]:
    """Six deliveries of the merchant claimed, then each outcome of a mixed batch recorded by `record`:
    the answers, then each delivery's row and calls (ids as rating ids)."""
    ids: dict[int, int] = {}
    for rating_id in range(1, 7):
        stored = await store.record_webhook(inbound(merchant_id, rating_id, updated_at=T0), recheck_before=T0)
        assert stored.delivery_id is not None
        ids[rating_id] = stored.delivery_id
    lease = T0 + LEASE
    claimed = await store.claim_due("default", now=T0, lease_until=lease, limit=10)
    # (With the newer version the first merchant's batch left pending: its rows are read already.)
    assert set(ids.values()) <= {one.id for one in claimed}
    assert await store.take_turn(ids[1], 900 + merchant_id, leased_until=lease, now=T0, until=lease) == "go"
    # While they are in flight: a newer version of rating 4, and the link of rating 5's order.
    await store.record_webhook(inbound(merchant_id, 4, updated_at=T0 + SECOND), recheck_before=T0)
    await store.save_links([Link(merchant_id, "ORD-5", 500)], now=T0 + SECOND)
    calls = [
        AttemptRecord("reconcile", T0 + SECOND, 12, 200, "not found"),
        AttemptRecord("send", T0 + 2 * SECOND + timedelta(microseconds=7), 35, None, "failed", "timed out"),
        AttemptRecord("send", T0 + 3 * SECOND, 41, 201, "sent"),
    ]
    now = T0 + 4 * SECOND + timedelta(microseconds=11)
    batch = [
        Outcome(ids[1], "delivered", 1, False, inquiry_id=900 + merchant_id, last_status=201, calls=calls),
        Outcome(ids[2], "delivered", 1, False, inquiry_id=101),  # not its lease: lost
        Outcome(
            ids[3],
            "retrying",
            2,
            True,
            next_attempt_at=now + timedelta(minutes=2, microseconds=5),
            last_status=503,
            last_error="Quivo answered 503 ünavailable",
            current_rating=3.7,
            calls=calls[1:2],
        ),
        Outcome(ids[4], "pending", 1, False, next_attempt_at=now),  # a newer version came: superseded
        Outcome(ids[5], "unmatched", 1, False, calls=calls[:1]),  # its link came: pending
        Outcome(ids[6], "dead", 3, False, last_error="gave up"),
    ]
    leases = [lease, T0 + SECOND, lease, lease, lease, lease]
    # Each outcome at an instant of its own, as outcomes sharing a group commit have.
    recordings = [
        (outcome, leased, now + n * timedelta(microseconds=1))
        for n, (outcome, leased) in enumerate(zip(batch, leases, strict=True))
    ]
    answers = await store._run(lambda conn: record(conn, recordings))
    rating_of = {delivery_id: rating_id for rating_id, delivery_id in ids.items()}
    rows = await store._run(
        lambda conn: conn.fetch(
            "SELECT * FROM deliveries WHERE merchant_id = $1 ORDER BY rating_id, version", merchant_id
        )
    )
    attempts = await store._run(
        lambda conn: conn.fetch(
            "SELECT a.* FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
            "WHERE d.merchant_id = $1 ORDER BY a.id",
            merchant_id,
        )
    )
    holds = await store._run(lambda conn: conn.fetch("SELECT * FROM inquiry_holds"))
    skip = {"id", "webhook_id", "merchant_id", "rating", "inquiry_id"}
    return [
        answers,
        [{key: value for key, value in row.items() if key not in skip} for row in rows],
        [
            {
                **{key: value for key, value in row.items() if key != "id"},
                "delivery_id": rating_of[row["delivery_id"]],
            }
            for row in attempts
        ],
        [rating_of.get(row["delivery_id"]) for row in holds],
    ]


async def test_a_batch_of_outcomes_sent_as_rows_stores_what_one_call_per_outcome_stores(
    postgres_store: PostgresStore,
) -> None:
    answers, rows, calls, holds = recorded = await outcomes_recorded_by(
        postgres_store, outbox.record_outcomes, 7
    )

    assert recorded == await outcomes_recorded_by(postgres_store, one_by_one, 8)
    assert answers == ["delivered", "lost", "retrying", "superseded", "pending", "dead"]
    assert (len(rows), len(calls), holds) == (7, 5, [])


@pytest.mark.parametrize(
    "instant",
    [
        T0,
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1700, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2250, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, 0, 999999, tzinfo=timezone(timedelta(hours=2))),
    ],
)
async def test_an_instant_sent_as_microseconds_is_the_instant_sent_as_a_timestamp(
    postgres_store: PostgresStore, instant: datetime
) -> None:
    async def compare(conn: Conn) -> list[object]:
        # In a session whose time zone is not UTC: the conversion must not depend on it.
        await conn.execute("SET TIME ZONE 'Europe/Berlin'")
        try:
            row = await conn.fetchrow("SELECT relay_instant($1), $2::timestamptz", micros(instant), instant)
        finally:
            await conn.execute("RESET TIME ZONE")
        assert row is not None
        return [row[0], row[1]]

    converted, sent = await postgres_store._run(compare)
    assert converted == sent == instant
