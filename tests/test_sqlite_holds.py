"""SQLite's turns taken together for a claim's deliveries answer and write as taking each in turn does."""

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.store.records import TurnAsk
from relay.store.sqlite.claims import claim_due
from relay.store.sqlite.holds import take_turn, take_turns
from relay.store.sqlite.instants import to_text
from relay.store.sqlite.intake import record_webhook
from relay.store.sqlite.store import SqliteStore
from tests.test_store_sqlite import NOW, inbound

SECOND = timedelta(seconds=1)
LEASE = 300 * SECOND
# Deliveries 1-4 claimed at NOW, 5-6 a second later: a lease given for the first four is lost to the others.
EARLY, LATE = (1, 2, 3, 4), (5, 6)


@pytest.fixture(scope="module")
def claimed_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database whose six deliveries are claimed, under two leases."""
    path = tmp_path_factory.mktemp("holds") / "relay.db"

    async def prepare() -> None:
        store = SqliteStore(path, timeout_s=5)
        await store.open()
        try:
            for rating_id in EARLY + LATE:
                await store.database.write(record_webhook(inbound(rating_id), recheck_before=NOW))
            await store.database.write(claim_due("default", now=NOW, lease_until=NOW + LEASE, limit=4))
            await store.database.write(
                claim_due("default", now=NOW + SECOND, lease_until=NOW + SECOND + LEASE, limit=2)
            )
        finally:
            await store.close()

    asyncio.run(prepare())
    return path


def copy(path: Path) -> Iterator[sqlite3.Connection]:
    """Two copies of the file in memory, as the writer connects: rows by name, transactions its own."""
    with sqlite3.connect(path) as source:
        for _ in range(2):
            conn = sqlite3.connect(":memory:", isolation_level=None)
            source.backup(conn)
            conn.row_factory = sqlite3.Row
            yield conn


def contents(conn: sqlite3.Connection) -> list[list[tuple[object, ...]]]:
    return [
        [tuple(row) for row in conn.execute("SELECT id, state, next_attempt_at FROM deliveries ORDER BY id")],
        [tuple(row) for row in conn.execute("SELECT * FROM inquiry_holds ORDER BY tenant, inquiry_id")],
    ]


holds = st.lists(
    st.tuples(
        st.integers(min_value=100, max_value=105),  # the inquiry held
        st.integers(min_value=1, max_value=9),  # by a delivery: one of those asking, another, or none left
        st.sampled_from([-SECOND, 0 * SECOND, SECOND, LEASE]),  # until, from the turn's now
    ),
    max_size=6,
    unique_by=lambda hold: hold[0],
)


@settings(max_examples=150, deadline=None)
@given(
    deliveries=st.lists(st.sampled_from(EARLY + LATE), min_size=1, max_size=6, unique=True),
    inquiries=st.permutations(range(100, 106)),
    held=holds,
    late_lease=st.booleans(),
    renewed=st.booleans(),
)
def test_turns_taken_together_are_those_taken_one_by_one(
    claimed_file: Path,
    deliveries: list[int],
    inquiries: list[int],
    held: list[tuple[int, int, timedelta]],
    late_lease: bool,
    renewed: bool,
) -> None:
    now = NOW + 2 * SECOND
    lease = NOW + (SECOND if late_lease else 0 * SECOND) + LEASE
    # A turn right after the claim keeps the claim's lease; one taken later renews it.
    until = lease + (10 * SECOND if renewed else 0 * SECOND)
    asks = [
        TurnAsk(delivery, inquiry, lease)
        for delivery, inquiry in zip(deliveries, inquiries[: len(deliveries)], strict=True)
    ]
    together, one_by_one = copy(claimed_file)
    for conn in (together, one_by_one):
        for inquiry, holder, left in held:
            conn.execute(
                "INSERT INTO inquiry_holds (tenant, inquiry_id, delivery_id, held_until) VALUES (?, ?, ?, ?)",
                ("default", inquiry, holder, to_text(now + left)),
            )

    answers = take_turns(asks, now=now, until=until)(together)
    expected = [
        take_turn(ask.delivery_id, ask.inquiry_id, leased_until=lease, now=now, until=until)(one_by_one)
        for ask in asks
    ]

    assert answers == expected
    assert contents(together) == contents(one_by_one)
