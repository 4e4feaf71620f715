"""Turns on PostgreSQL: instants sent as microseconds decide and store what timestamps did."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from relay.domain.judgement import Judgement
from relay.domain.rating import Rating
from relay.store.postgres import outbox
from relay.store.postgres.connection import Conn
from relay.store.postgres.store import PostgresStore
from relay.store.records import InboundWebhook, Turn

# Not on a whole second: the microseconds of every instant must come through.
T0 = datetime(2026, 12, 1, 12, 0, 0, 123457, tzinfo=UTC)
LEASE = timedelta(minutes=5, microseconds=3)

Take = Callable[[Conn, list[outbox.TurnRequest]], Awaitable[list[Turn]]]

# The statement as it was before migration 0013, with its instants as timestamps.
_WITH_TIMESTAMPS = """
WITH leased AS (
    UPDATE deliveries SET next_attempt_at = $5
    WHERE id = $1 AND state = 'sending' AND next_attempt_at = $3
    RETURNING id, tenant),
taken AS (
    INSERT INTO inquiry_holds (tenant, inquiry_id, delivery_id, held_until)
    SELECT tenant, $2, id, $5 FROM leased
    ON CONFLICT (tenant, inquiry_id) DO UPDATE
    SET delivery_id = excluded.delivery_id, held_until = excluded.held_until
    WHERE inquiry_holds.held_until <= $4 OR inquiry_holds.delivery_id = excluded.delivery_id
    RETURNING 1)
SELECT CASE WHEN NOT EXISTS (SELECT FROM leased) THEN 'lost'
    WHEN EXISTS (SELECT FROM taken) THEN 'go' ELSE 'busy' END
"""


async def with_timestamps(conn: Conn, requests: list[outbox.TurnRequest]) -> list[Turn]:
    return [cast(Turn, row[0]) for row in await conn.fetchmany(_WITH_TIMESTAMPS, requests)]


def inbound(merchant_id: int, rating_id: int) -> InboundWebhook:
    rating = Rating(merchant_id=merchant_id, rating_id=rating_id, stars=4, external_id=f"ORD-{rating_id}")
    judgement = Judgement("accepted", "rating_submitted", merchant_id, rating_id, (), rating)
    return InboundWebhook(f"req-{rating_id}", T0, b'{"rating": 1}', "application/json", judgement)


async def claimed(store: PostgresStore, merchant_id: int, count: int) -> dict[int, int]:
    """`count` deliveries of the merchant, claimed under the lease T0 + LEASE: their ids by rating id."""
    ids: dict[int, int] = {}
    for rating_id in range(1, count + 1):
        stored = await store.record_webhook(inbound(merchant_id, rating_id), recheck_before=T0)
        assert stored.delivery_id is not None
        ids[rating_id] = stored.delivery_id
    claimed = await store.claim_due("default", now=T0, lease_until=T0 + LEASE, limit=10)
    assert {one.id for one in claimed} == set(ids.values())
    return ids


async def holds_of(store: PostgresStore, merchant_id: int, ids: dict[int, int]) -> list[tuple[Any, ...]]:
    """The merchant's holds: (inquiry as its number among the merchant's, rating id, held until)."""
    rating_of = {delivery_id: rating_id for rating_id, delivery_id in ids.items()}
    holds = await store._run(lambda conn: conn.fetch("SELECT * FROM inquiry_holds ORDER BY inquiry_id"))
    return [
        (row["inquiry_id"] - 100 * merchant_id, rating_of[row["delivery_id"]], row["held_until"])
        for row in holds
        if row["delivery_id"] in rating_of
    ]


async def turns_taken_by(store: PostgresStore, take: Take, merchant_id: int) -> list[list[Any]]:
    """Five deliveries of the merchant claimed, one inquiry's hold run out, then a batch of turns taken by
    `take`: the answers, then the holds and the deliveries' leases (ids as rating ids)."""
    ids = await claimed(store, merchant_id, 5)
    lease = T0 + LEASE
    first, second = 100 * merchant_id + 1, 100 * merchant_id + 2
    # Rating 5 held the second inquiry until just before now.
    assert await store.take_turn(ids[5], second, leased_until=lease, now=T0, until=T0 + LEASE / 2) == "go"
    now = T0 + LEASE / 2 + timedelta(microseconds=1)
    until = now + LEASE
    requests: list[outbox.TurnRequest] = [
        (ids[1], first, lease, now, until),  # go
        (ids[2], first, lease, now, until),  # busy: rating 1 holds it
        (ids[3], first, lease - timedelta(microseconds=1), now, until),  # lost: not its lease
        (ids[1], first, until, now, until + LEASE),  # go: its own hold, under its renewed lease
        (ids[4], second, lease, now, until),  # go: rating 5's hold ran out
    ]
    answers = await store._run(lambda conn: take(conn, requests))
    leases = await store._run(
        lambda conn: conn.fetch(
            "SELECT rating_id, state, next_attempt_at FROM deliveries WHERE merchant_id = $1 "
            "ORDER BY rating_id",
            merchant_id,
        )
    )
    return [
        answers,
        await holds_of(store, merchant_id, ids),
        [tuple(row) for row in leases],
    ]


async def test_turns_sent_with_instants_as_microseconds_decide_and_store_as_with_timestamps(
    postgres_store: PostgresStore,
) -> None:
    answers, holds, leases = taken = await turns_taken_by(postgres_store, outbox.take_turns, 7)

    assert taken == await turns_taken_by(postgres_store, with_timestamps, 8)
    assert answers == ["go", "busy", "lost", "go", "go"]
    until = T0 + LEASE / 2 + timedelta(microseconds=1) + LEASE
    assert holds == [(1, 1, until + LEASE), (2, 4, until)]
    # A busy one's lease is renewed too; a lost one's is left as it was.
    assert [lease for _, _, lease in leases] == [until + LEASE, until, T0 + LEASE, until, T0 + LEASE / 2]


async def kept_turns_taken_by(store: PostgresStore, take: Take, merchant_id: int) -> list[list[Any]]:
    """Four deliveries of the merchant claimed, then turns under the claim's own lease taken by `take`: the
    answers, the holds (ids as rating ids), and which deliveries' rows were written since the claim."""
    ids = await claimed(store, merchant_id, 4)
    lease = T0 + LEASE
    first, second = 100 * merchant_id + 1, 100 * merchant_id + 2
    now = T0 + timedelta(microseconds=1)
    requests: list[outbox.TurnRequest] = [
        (ids[1], first, lease, now, lease),  # go
        (ids[2], first, lease, now, lease),  # busy: rating 1 holds it
        (ids[3], second, lease - timedelta(microseconds=1), now, lease - timedelta(microseconds=1)),  # lost
        (ids[4], second, lease, now, lease),  # go
    ]
    versions = (
        "SELECT rating_id, xmin::text::bigint FROM deliveries WHERE merchant_id = $1 ORDER BY rating_id"
    )
    before = await store._run(lambda conn: conn.fetch(versions, merchant_id))
    answers = await store._run(lambda conn: take(conn, requests))
    after = await store._run(lambda conn: conn.fetch(versions, merchant_id))
    return [
        answers,
        await holds_of(store, merchant_id, ids),
        [old["rating_id"] for old, new in zip(before, after, strict=True) if old["xmin"] != new["xmin"]],
    ]


async def test_turns_under_the_claims_own_lease_decide_as_before_and_write_no_delivery(
    postgres_store: PostgresStore,
) -> None:
    answers, holds, written = await kept_turns_taken_by(postgres_store, outbox.take_turns, 9)
    renewing_answers, renewing_holds, renewing_written = await kept_turns_taken_by(
        postgres_store, with_timestamps, 10
    )

    assert (answers, holds) == (renewing_answers, renewing_holds)
    assert answers == ["go", "busy", "lost", "go"]
    assert holds == [(1, 1, T0 + LEASE), (2, 4, T0 + LEASE)]
    # Renewing to the same instant wrote each leased row again; the lease only read writes none.
    assert (written, renewing_written) == ([], [1, 2, 4])
