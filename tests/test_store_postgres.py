"""What only PostgreSQL does: many processes on one database, shared commits, wakes, surviving restarts."""

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import asyncpg
import pytest

from relay.domain.judgement import Judgement
from relay.domain.rating import Rating
from relay.settings import Settings
from relay.store import create_store
from relay.store.api import DatabaseUnusable, StoreUnavailable
from relay.store.postgres import intake
from relay.store.postgres.connection import Conn
from relay.store.postgres.migrations import known_migrations
from relay.store.postgres.store import PostgresStore
from relay.store.records import AttemptRecord, InboundWebhook, Outcome, StoredWebhook
from tests.pg_server import PASSWORD, PostgresServer
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def webhook(rating_id: int, *, request_id: str = "req", merchant_id: int = 7) -> InboundWebhook:
    rating = Rating(merchant_id=merchant_id, rating_id=rating_id, stars=4, external_id=f"order-{rating_id}")
    judgement = Judgement("accepted", "rating_submitted", merchant_id, rating_id, (), rating)
    return InboundWebhook(request_id, NOW, b'{"rating": 1}', "application/json", judgement)


@pytest.fixture
def url(postgres_server: PostgresServer, postgres_database: str) -> str:
    return postgres_server.url(postgres_database)


@pytest.fixture
async def store(url: str) -> AsyncIterator[PostgresStore]:
    opened = PostgresStore(url, timeout_s=2, pool_size=4)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def wait_for(condition_met: Callable[[], Awaitable[bool]], *, within_s: float = 10) -> None:
    """Poll an async predicate until it holds, failing after `within_s`."""
    deadline = time.monotonic() + within_s
    while not await condition_met():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# Settings and where -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_settings_take_a_postgresql_url_and_a_pool_size(scheme: str) -> None:
    settings = Settings(database_url=f"{scheme}://relay:pw@db.internal:5433/relay", relay_db_pool_size=25)
    assert settings.database_url.startswith(scheme)
    assert settings.relay_db_pool_size == 25


def test_location_names_host_port_and_database_but_no_user_or_password() -> None:
    store = PostgresStore("postgres://relay:s3cret@db.internal:5433/relay", timeout_s=1, pool_size=1)
    assert (store.backend, store.location, store.single_worker) == (
        "postgresql",
        "db.internal:5433/relay",
        False,
    )


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_create_store_picks_postgresql_from_its_url(scheme: str) -> None:
    store = create_store(f"{scheme}://relay:pw@db.internal/relay", timeout_s=3, pool_size=7)
    assert isinstance(store, PostgresStore)
    assert (store.location, store.timeout_s, store.pool_size) == ("db.internal:5432/relay", 3, 7)


def test_a_relay_on_sqlite_never_loads_the_postgresql_driver(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from relay.store import create_store\n"
        "create_store(sys.argv[1], timeout_s=1, pool_size=1)\n"
        "print('asyncpg' in sys.modules)\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path / 'relay.db'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"


# Opening ------------------------------------------------------------------------------------------


async def test_a_wrong_password_is_unusable_in_one_line_without_the_password(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    wrong = "not-the-relay-password-9f2c"
    url = postgres_server.url(postgres_database).replace(PASSWORD, wrong)
    with pytest.raises(DatabaseUnusable) as refused:
        await PostgresStore(url, timeout_s=5, pool_size=2).open()
    message = str(refused.value)
    assert "password authentication failed" in message
    assert wrong not in message and PASSWORD not in message and "\n" not in message
    assert message.startswith(f"127.0.0.1:{postgres_server.port}/{postgres_database}: ")


async def test_an_unreachable_server_is_unusable_at_once_without_the_password() -> None:
    url = f"postgresql://relay:{PASSWORD}@127.0.0.1:{free_port()}/relay"
    started = time.monotonic()
    with pytest.raises(DatabaseUnusable) as refused:
        await PostgresStore(url, timeout_s=3, pool_size=2).open()
    assert time.monotonic() - started < 3
    assert PASSWORD not in str(refused.value) and "\n" not in str(refused.value)


async def test_a_database_without_synchronous_commit_is_refused(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    postgres_server.sql(f'ALTER DATABASE "{postgres_database}" SET synchronous_commit = off')
    with pytest.raises(DatabaseUnusable, match="synchronous_commit is off"):
        await PostgresStore(postgres_server.url(postgres_database), timeout_s=5, pool_size=2).open()


async def test_sessions_read_committed_whatever_the_database_default(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    postgres_server.sql(
        f'ALTER DATABASE "{postgres_database}" SET default_transaction_isolation = serializable'
    )
    store = PostgresStore(postgres_server.url(postgres_database), timeout_s=5, pool_size=2)
    await store.open()
    try:
        assert (
            await store._run(lambda conn: conn.fetchval("SHOW default_transaction_isolation"))
            == "read committed"
        )
    finally:
        await store.close()


def test_processes_starting_together_apply_each_migration_once(url: str) -> None:
    script = (
        "import asyncio, sys\n"
        "from relay.store.postgres.store import PostgresStore\n"
        "async def main():\n"
        "    store = PostgresStore(sys.argv[1], timeout_s=30, pool_size=2)\n"
        "    await store.open()\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    starts = [
        subprocess.Popen([sys.executable, "-c", script, url], cwd=ROOT, stderr=subprocess.PIPE)
        for _ in range(5)
    ]
    errors = [process.communicate(timeout=60)[1].decode() for process in starts]
    assert [process.returncode for process in starts] == [0] * 5, errors

    async def applied() -> list[int]:
        conn = await asyncpg.connect(url)
        try:
            return [row[0] for row in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        finally:
            await conn.close()

    assert asyncio.run(applied()) == [migration.version for migration in known_migrations()]


# Group commit -------------------------------------------------------------------------------------


async def test_concurrent_webhooks_share_commits(store: PostgresStore) -> None:
    stored = await asyncio.gather(*(store.record_webhook(webhook(n), recheck_before=NOW) for n in range(64)))
    assert {one.status for one in stored} == {"accepted"}
    assert (await store.deliveries_by_state())["pending"] == 64
    assert store._commits is not None
    commits = store._commits.commits
    assert 1 <= commits < 64


def version_of(
    rating_id: int, updated_at: datetime | None, request_id: str, *, merchant_id: int = 7
) -> InboundWebhook:
    rating = Rating(
        merchant_id=merchant_id, rating_id=rating_id, stars=4, external_id="o", updated_at=updated_at
    )
    judgement = Judgement("accepted", "rating_submitted", merchant_id, rating_id, (), rating)
    return InboundWebhook(request_id, NOW, request_id.encode(), "application/json", judgement)


def without_rating(
    status: Literal["ignored", "quarantined"], request_id: str, *, merchant_id: int = 7
) -> InboundWebhook:
    judgement = Judgement(status, "task_created", merchant_id, None, ("stars: missing",), None)
    return InboundWebhook(request_id, NOW, request_id.encode(), "application/json", judgement)


async def one_batch(store: PostgresStore, arrivals: list[InboundWebhook]) -> list[StoredWebhook]:
    """The arrivals stored by one call of the intake's batch, as its group commit makes it."""
    return await store._run(lambda conn: intake.record_webhooks(conn, [(one, NOW) for one in arrivals]))


async def test_a_batch_of_new_ratings_is_stored_in_its_order(store: PostgresStore) -> None:
    arrivals = [
        version_of(1, None, "a"),
        without_rating("ignored", "b"),
        version_of(2, None, "c"),
        without_rating("quarantined", "d"),
        version_of(3, None, "e"),
    ]

    stored = await one_batch(store, arrivals)

    assert [one.status for one in stored] == ["accepted", "ignored", "accepted", "quarantined", "accepted"]
    ids = [one.webhook_id for one in stored]
    assert ids == sorted(set(ids))
    for one, arrival in zip(stored, arrivals, strict=True):
        kept = await store.get_webhook(one.webhook_id)
        assert kept is not None and (kept.request_id, kept.body) == (arrival.request_id, arrival.body)
        assert kept.delivery_ids == ([] if one.delivery_id is None else [one.delivery_id])
    deliveries = [await store.get_delivery(one.delivery_id) for one in stored if one.delivery_id]
    assert [(d.delivery.rating_id, d.delivery.state) for d in deliveries if d] == [
        (1, "pending"),
        (2, "pending"),
        (3, "pending"),
    ]


async def test_a_batch_holding_known_and_repeated_ratings_decides_each_in_turn(store: PostgresStore) -> None:
    (known,) = await one_batch(store, [version_of(9, NOW, "known")])
    later = NOW + timedelta(seconds=1)

    stored = await one_batch(
        store,
        [
            version_of(1, NOW, "first"),
            version_of(9, NOW, "repeat of the known one"),
            version_of(1, NOW, "repeat of the first"),
            version_of(1, later, "newer than the first"),
            without_rating("ignored", "no rating"),
            version_of(1, None, "older than both"),
            version_of(2, None, "new"),
        ],
    )

    assert [one.status for one in stored] == [
        "accepted",
        "duplicate",
        "duplicate",
        "accepted",
        "ignored",
        "superseded",
        "accepted",
    ]
    first, repeat_known, repeat_first, newer, _, older, _ = stored
    assert (repeat_known.delivery_id, repeat_first.delivery_id) == (known.delivery_id, first.delivery_id)
    assert newer.superseded == [first.delivery_id]
    for one, state in ((first, "superseded"), (newer, "pending"), (older, "superseded")):
        assert one.delivery_id is not None
        detail = await store.get_delivery(one.delivery_id)
        assert detail is not None and detail.delivery.state == state


def mixed_batches(merchant_id: int) -> list[list[InboundWebhook]]:
    """A known rating, a batch of new ones only, and one holding every other case: for one merchant."""
    later = NOW + timedelta(seconds=1)

    def version(rating_id: int, updated_at: datetime | None, request_id: str) -> InboundWebhook:
        return version_of(rating_id, updated_at, f"{merchant_id}-{request_id}", merchant_id=merchant_id)

    def other(status: Literal["ignored", "quarantined"], request_id: str) -> InboundWebhook:
        return without_rating(status, f"{merchant_id}-{request_id}", merchant_id=merchant_id)

    return [
        [version(9, NOW, "known")],
        [version(1, None, "a"), other("ignored", "b"), other("quarantined", "c"), version(2, NOW, "d")],
        [
            version(3, NOW, "first"),
            version(9, NOW, "repeat of the known one"),
            version(3, NOW, "repeat of the first"),
            version(3, later, "newer than the first"),
            other("quarantined", "unusable"),
            version(3, None, "older than both"),
            version(2, later, "newer than one of the last batch"),
        ],
    ]


async def test_a_batch_sent_as_rows_is_stored_and_answered_as_one_sent_as_columns(
    store: PostgresStore,
) -> None:
    # Columns are how 0008's function takes a batch, and rows with timestamps how 0011's does: both still
    # called by the web processes of older builds. This build sends rows with microseconds (0014).
    columns_call = f"SELECT * FROM relay_record_webhooks({', '.join(f'${n}' for n in range(1, 18))})"
    timestamped_rows_call = "SELECT * FROM relay_record_webhooks($1::relay_inbound[])"

    def with_timestamps(arrivals: list[InboundWebhook]) -> list[tuple[object, ...]]:
        return [(one.received_at, *intake._arguments(one, NOW)[1:]) for one in arrivals]

    async def as_columns(conn: Conn, arrivals: list[InboundWebhook]) -> list[StoredWebhook]:
        values = zip(*with_timestamps(arrivals), strict=True)
        return [intake._stored(row) for row in await conn.fetch(columns_call, *map(list, values))]

    async def as_timestamped_rows(conn: Conn, arrivals: list[InboundWebhook]) -> list[StoredWebhook]:
        rows = await conn.fetch(timestamped_rows_call, with_timestamps(arrivals))
        return [intake._stored(row) for row in rows]

    async def as_rows(conn: Conn, arrivals: list[InboundWebhook]) -> list[StoredWebhook]:
        return await intake.record_webhooks(conn, [(one, NOW) for one in arrivals])

    async def stored_by(
        call: Callable[[Conn, list[InboundWebhook]], Awaitable[list[StoredWebhook]]], merchant_id: int
    ) -> list[tuple[object, ...]]:
        seen: list[tuple[object, ...]] = []
        for batch in mixed_batches(merchant_id):
            # Each arrival at an instant of its own, not on a whole second.
            batch = [one._replace(received_at=NOW + (7 * n + 1) * MICROSECOND) for n, one in enumerate(batch)]
            for one in await store._run(lambda conn, batch=batch: call(conn, batch)):  # type: ignore[misc]
                webhook = await store.get_webhook(one.webhook_id)
                delivery = await store.get_delivery(one.delivery_id) if one.delivery_id else None
                assert webhook is not None
                kept = (webhook.status, webhook.request_id.split("-", 1)[1], webhook.body.split(b"-", 1)[1])
                state = delivery and (
                    delivery.delivery.rating_id,
                    delivery.delivery.state,
                    delivery.delivery.created_at,
                    delivery.delivery.next_attempt_at,
                )
                seen.append((one.status, len(one.superseded), *kept, webhook.received_at, state))
        return seen

    stored = await stored_by(as_rows, 7)

    assert stored == await stored_by(as_columns, 8)
    assert stored == await stored_by(as_timestamped_rows, 9)
    assert [status for status, *_ in stored] == [
        *("accepted",),
        *("accepted", "ignored", "quarantined", "accepted"),
        *("accepted", "duplicate", "duplicate", "accepted", "quarantined", "superseded", "accepted"),
    ]


async def test_a_webhook_the_database_refuses_does_not_fail_the_ones_sharing_its_commit(
    store: PostgresStore,
) -> None:
    # PostgreSQL text cannot hold a NUL: this one webhook fails, alone.
    results = await asyncio.gather(
        *(
            store.record_webhook(webhook(n, request_id="bad\x00" if n == 3 else "ok"), recheck_before=NOW)
            for n in range(8)
        ),
        return_exceptions=True,
    )
    assert isinstance(results[3], StoreUnavailable)
    assert all(not isinstance(result, BaseException) for n, result in enumerate(results) if n != 3)
    assert (await store.deliveries_by_state())["pending"] == 7


async def test_a_caller_giving_up_does_not_cancel_the_commit_others_share(store: PostgresStore) -> None:
    calls = [asyncio.create_task(store.record_webhook(webhook(n), recheck_before=NOW)) for n in range(10)]
    await asyncio.sleep(0)  # every call is queued
    calls[0].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(not isinstance(result, BaseException) for result in results[1:])
    # The caller that gave up never heard, but its webhook was committed with the rest: nothing half-done.
    assert (await store.deliveries_by_state())["pending"] == 10


# Faults -------------------------------------------------------------------------------------------


async def test_a_stopped_server_is_unavailable_promptly_and_the_same_store_recovers(
    postgres_server: PostgresServer, store: PostgresStore
) -> None:
    await store.record_webhook(webhook(1), recheck_before=NOW)
    postgres_server.stop()
    try:
        for call in (
            lambda: store.record_webhook(webhook(2), recheck_before=NOW),
            lambda: store.claim_due("default", now=NOW, lease_until=NOW, limit=5),
            store.deliveries_by_state,
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as refused:
                await call()
            assert time.monotonic() - started < store.timeout_s + 1
            assert PASSWORD not in str(refused.value)
        assert await store.readiness_problems() != []
    finally:
        postgres_server.start()

    async def webhook_stored() -> bool:
        try:
            await store.record_webhook(webhook(3), recheck_before=NOW)
        except StoreUnavailable:
            return False
        return True

    await wait_for(webhook_stored)
    assert (await store.deliveries_by_state())["pending"] == 2
    assert await store.readiness_problems() == []


# Wakes --------------------------------------------------------------------------------------------


async def test_a_webhook_stored_by_another_process_wakes_a_listening_worker(
    url: str, store: PostgresStore
) -> None:
    other = PostgresStore(url, timeout_s=2, pool_size=2)
    await other.open()
    wakes = store.new_work()
    try:
        woken = asyncio.ensure_future(anext(wakes))
        # LISTEN runs before the first wait: poll for the listener, then store from the other process.
        await wait_for(lambda: _listeners(other))
        assert not woken.done()
        await other.record_webhook(webhook(1), recheck_before=NOW)
        await asyncio.wait_for(woken, 10)
    finally:
        await wakes.aclose()  # type: ignore[attr-defined]
        await other.close()


async def test_a_lost_listening_connection_comes_back_and_wakes_once(store: PostgresStore) -> None:
    wakes = store.new_work()
    try:
        woken = asyncio.ensure_future(anext(wakes))
        await wait_for(lambda: _listeners(store))
        # An operator (or a failover) cuts the listening session: a wake may be lost meanwhile.
        await store._run(
            lambda conn: conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
            )
        )
        await asyncio.wait_for(woken, 10)
        await wait_for(lambda: _listeners(store))
    finally:
        await wakes.aclose()  # type: ignore[attr-defined]


async def _listeners(store: PostgresStore) -> bool:
    count = await store._run(
        lambda conn: conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
    )
    return bool(count)


# Many workers -------------------------------------------------------------------------------------


async def test_workers_claiming_together_never_get_the_same_delivery(url: str, store: PostgresStore) -> None:
    await asyncio.gather(*(store.record_webhook(webhook(n), recheck_before=NOW) for n in range(200)))
    others = [PostgresStore(url, timeout_s=5, pool_size=2) for _ in range(3)]
    for other in others:
        await other.open()
    claimed: list[int] = []

    async def drain(worker: PostgresStore) -> None:
        while batch := await worker.claim_due(
            "default", now=NOW + timedelta(seconds=1), lease_until=NOW + timedelta(hours=1), limit=7
        ):
            claimed.extend(delivery.id for delivery in batch)

    try:
        await asyncio.gather(*(drain(worker) for worker in [store, *others]))
    finally:
        for other in others:
            await other.close()
    assert len(claimed) == 200
    assert len(set(claimed)) == 200


async def claimed_together(store: PostgresStore, count: int) -> list[int]:
    """`count` deliveries, all claimed under the lease LEASED: their ids."""
    await asyncio.gather(*(store.record_webhook(webhook(n), recheck_before=NOW) for n in range(count)))
    return [one.id for one in await store.claim_due("default", now=NOW, lease_until=LEASED, limit=count)]


# The lease the tests' claims give.
LEASED = NOW + timedelta(minutes=1)


async def test_workers_taking_turns_on_one_inquiry_together_get_one_hold(
    url: str, store: PostgresStore
) -> None:
    deliveries = await claimed_together(store, 40)
    other = PostgresStore(url, timeout_s=5, pool_size=4)
    await other.open()
    until = NOW + timedelta(minutes=2)
    try:
        turns = await asyncio.gather(
            *(
                worker.take_turn(delivery_id, 42, leased_until=LEASED, now=NOW, until=until)
                for delivery_id in deliveries
                for worker in (store, other)
                if delivery_id % 2 == (worker is store)
            )
        )
    finally:
        await other.close()
    assert sorted(turns) == ["busy"] * 39 + ["go"]


# Moving house -------------------------------------------------------------------------------------


async def test_imported_ids_are_kept_and_new_ids_continue_past_them(store: PostgresStore) -> None:
    row = {
        "id": 500,
        "received_at": NOW,
        "request_id": "moved",
        "status": "ignored",
        "webhook_type": "task_done",
        "merchant_id": None,
        "rating_id": None,
        "errors": None,
        "content_type": None,
        "body": b"{}",
        "tenant": "acme",
        "dismissed_at": None,
        "dismissed_reason": None,
    }
    await store.import_rows("webhooks", [row])
    stored = await store.record_webhook(webhook(1), recheck_before=NOW)
    assert stored.webhook_id == 501
    exported = [batch async for batch in store.export_rows("webhooks", batch_size=1)]
    assert exported[0] == [row]


async def finish_all(store: PostgresStore, *, refused: int | None = None) -> list[object]:
    """Sixteen deliveries claimed and finished at once; the `refused` one in a state the schema refuses."""
    claimed = await claimed_together(store, 16)
    call = AttemptRecord("send", NOW, 50, 200, "delivered")
    outcomes = [Outcome(one, "delivered", 1, False, inquiry_id=one, calls=[call]) for one in claimed]
    if refused is not None:
        outcomes[refused] = replace(outcomes[refused], state="vanished")  # type: ignore[arg-type]
    return await asyncio.gather(
        *(store.record_outcome(outcome, leased_until=LEASED, now=NOW) for outcome in outcomes),
        return_exceptions=True,
    )


async def test_concurrent_outcomes_share_commits(store: PostgresStore) -> None:
    assert await finish_all(store) == ["delivered"] * 16
    assert store._outcomes is not None
    assert 1 <= store._outcomes.commits < 16
    detail = await store.get_delivery(1)
    assert detail is not None and [attempt.status_code for attempt in detail.attempts] == [200]


async def test_an_outcome_the_database_refuses_does_not_fail_the_ones_sharing_its_commit(
    store: PostgresStore,
) -> None:
    results = await finish_all(store, refused=3)
    assert isinstance(results[3], StoreUnavailable)
    assert [result for n, result in enumerate(results) if n != 3] == ["delivered"] * 15
    assert (await store.deliveries_by_state())["delivered"] == 15


async def test_turns_taken_at_once_share_commits_and_admit_one_delivery_per_inquiry(
    store: PostgresStore,
) -> None:
    deliveries = await claimed_together(store, 16)
    until = NOW + timedelta(minutes=2)
    taken = await asyncio.gather(
        *(
            store.take_turn(delivery, inquiry, leased_until=LEASED, now=NOW, until=until)
            for inquiry, some in ((1, deliveries[:8]), (2, deliveries[8:]))
            for delivery in some
        )
    )
    # In each inquiry's batch the first delivery takes it; the rest find it held, even in the same commit.
    assert taken == ["go", *["busy"] * 7, "go", *["busy"] * 7]
    assert store._turns is not None and 1 <= store._turns.commits < 16


async def test_send_slots_reserved_at_once_share_commits_and_stay_spaced(store: PostgresStore) -> None:
    slots = await asyncio.gather(
        *(store.reserve_send_slot("quivo", now=NOW, spacing_s=0.5) for _ in range(10))
    )
    assert slots == [NOW + timedelta(seconds=0.5 * n) for n in range(10)]
    assert store._slots is not None and 1 <= store._slots.commits < 10


async def test_a_database_made_by_the_first_migration_is_brought_up_to_date_and_works(url: str) -> None:
    first = known_migrations()[0]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(first.sql)
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 1, first.name)
        await conn.execute(
            "INSERT INTO webhooks (id, received_at, request_id, status, body) "
            "VALUES (4, $1, 'r', 'accepted', '')",
            NOW,
        )
        await conn.execute(
            "INSERT INTO deliveries (id, webhook_id, merchant_id, rating_id, version, stars, rating, state, "
            "created_at, updated_at) VALUES (7, 4, 9, 77, 'v', 5, '{}', 'dead', $1, $1)",
            NOW,
        )
    finally:
        await conn.close()
    store = PostgresStore(url, timeout_s=2, pool_size=2)
    await store.open()
    try:
        assert await store.schema_version() == known_migrations()[-1].version
        old = await store.get_delivery(7)
        assert old is not None and old.delivery.tenant == "default"
        before = await store.get_webhook(4)
        assert before is not None and before.tenant == "default"
        stored = await store.record_webhook(webhook(1), recheck_before=NOW)
        (claimed,) = await store.claim_due(
            "default", now=NOW, lease_until=NOW + timedelta(minutes=1), limit=5
        )
        assert claimed.id == stored.delivery_id
        outcome = Outcome(claimed.id, "delivered", 1, False, inquiry_id=9, last_status=200)
        leased = NOW + timedelta(minutes=1)
        assert await store.record_outcome(outcome, leased_until=leased, now=NOW) == "delivered"
    finally:
        await store.close()


# Plans ---------------------------------------------------------------------------------------------

RATING_KEY = "deliveries_merchant_id_rating_id_version_key"


def delivered(delivery_id: int, *, merchant_id: int) -> dict[str, object]:
    """A delivered row as `relay db copy` imports it."""
    return {
        "id": delivery_id,
        "webhook_id": delivery_id,
        "merchant_id": merchant_id,
        "rating_id": delivery_id,
        "version": "",
        "external_id": f"order-{delivery_id}",
        "stars": 4,
        "rating": "{}",
        "state": "delivered",
        "inquiry_id": delivery_id,
        "attempts": 1,
        "created_at": NOW,
        "updated_at": NOW,
        "delivered_at": NOW,
    }


async def index_scans(url: str) -> dict[str, int]:
    """How many scans each index of deliveries served, as the server's statistics count them."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE relname = 'deliveries'"
        )
    finally:
        await conn.close()
    return {str(row["indexrelname"]): int(row["idx_scan"]) for row in rows}


async def test_a_new_merchants_versions_are_looked_up_by_the_rating_key_after_analyze(url: str) -> None:
    store = PostgresStore(url, timeout_s=5, pool_size=1)
    await store.open()
    try:
        await store.import_rows("deliveries", [delivered(n, merchant_id=99) for n in range(1, 20_001)])
        conn = await asyncpg.connect(url)
        try:
            # Statistics that know only merchant 99: a copied database, or a merchant new since the last one.
            await conn.execute("ANALYZE deliveries")
        finally:
            await conn.close()
        before = await index_scans(url)
        stored = await store.record_webhook(webhook(1, merchant_id=7), recheck_before=NOW)
        (claimed,) = await store.claim_due(
            "default", now=NOW, lease_until=NOW + timedelta(minutes=1), limit=5
        )
        assert claimed.id == stored.delivery_id
        # Going back to retrying, the outcome looks for a newer version of its rating.
        retry = Outcome(claimed.id, "retrying", 1, False, next_attempt_at=NOW)
        leased = NOW + timedelta(minutes=1)
        assert await store.record_outcome(retry, leased_until=leased, now=NOW) == "retrying"
    finally:
        await store.close()

    lookups = (RATING_KEY, "deliveries_external")  # the indexes that could serve a lookup by merchant

    async def both_lookups_counted() -> bool:
        # A session's counts reach the statistics by the time it has ended.
        scans = await index_scans(url)
        return sum(scans[index] - before[index] for index in lookups) >= 2

    await wait_for(both_lookups_counted)
    after = await index_scans(url)
    # deliveries_external would filter every delivery of merchant 7 stored since the statistics were made.
    assert {index: after[index] - before[index] for index in lookups} == {
        RATING_KEY: 2,
        "deliveries_external": 0,
    }


async def rows_inserted(url: str) -> int:
    """Rows ever inserted into deliveries, as the server's statistics count them (a session's at its end)."""
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'deliveries'")
        )
    finally:
        await conn.close()


async def test_a_session_that_began_on_an_empty_table_never_reads_the_whole_table_to_find_versions(
    url: str,
) -> None:
    store = PostgresStore(url, timeout_s=5, pool_size=1)
    await store.open()
    try:
        conn = await asyncpg.connect(url)
        try:
            # Known to be empty, as after retention pruned everything and a vacuum ran; no analyze after.
            await conn.execute("ALTER TABLE deliveries SET (autovacuum_enabled = false)")
            await conn.execute("VACUUM ANALYZE deliveries")
        finally:
            await conn.close()
        # The one session's plan for the lookup is made on the empty table (a session keeps it after 5 calls).
        for rating_id in range(1, 11):
            await store.record_webhook(webhook(rating_id), recheck_before=NOW)
        await store.import_rows("deliveries", [delivered(n, merchant_id=7) for n in range(100, 20_100)])
        for rating_id in range(20_100, 20_105):
            await store.record_webhook(webhook(rating_id), recheck_before=NOW)
    finally:
        await store.close()

    async def session_counted() -> bool:
        return await rows_inserted(url) == 10 + 20_000 + 5

    await wait_for(session_counted)
    # Each of the 15 lookups by the rating's key: any other plan reads the whole table (or a whole index).
    scans = await index_scans(url)
    assert (scans[RATING_KEY], scans["deliveries_external"]) == (15, 0)


async def test_a_session_that_began_on_an_empty_table_never_reads_the_whole_table_to_record_outcomes(
    url: str,
) -> None:
    store = PostgresStore(url, timeout_s=5, pool_size=1)
    await store.open()
    lease = NOW + timedelta(minutes=1)

    async def retry_new_ratings(rating_ids: range) -> None:
        for rating_id in rating_ids:
            await store.record_webhook(webhook(rating_id), recheck_before=NOW)
        claimed = await store.claim_due("default", now=NOW, lease_until=lease, limit=len(rating_ids))
        assert len(claimed) == len(rating_ids)
        for one in claimed:
            # Back to retrying, an outcome looks for a newer version of its rating; not due again here.
            retry = Outcome(one.id, "retrying", 1, False, next_attempt_at=NOW + timedelta(hours=1))
            assert await store.record_outcome(retry, leased_until=lease, now=NOW) == "retrying"

    try:
        conn = await asyncpg.connect(url)
        try:
            # Known to be empty, as after retention pruned everything and a vacuum ran; no analyze after.
            await conn.execute("ALTER TABLE deliveries SET (autovacuum_enabled = false)")
            await conn.execute("VACUUM ANALYZE deliveries")
        finally:
            await conn.close()
        # The one session's plans are made on the empty table (a session keeps one after 5 calls).
        await retry_new_ratings(range(1, 11))
        await store.import_rows("deliveries", [delivered(n, merchant_id=7) for n in range(100, 20_100)])

        async def imported() -> bool:
            # An idle session sends its counts to the statistics within seconds.
            return await rows_inserted(url) == 10 + 20_000

        await wait_for(imported, within_s=30)
        reads = await whole_table_reads(url)
        await retry_new_ratings(range(20_100, 20_105))
    finally:
        await store.close()

    async def session_counted() -> bool:
        return await rows_inserted(url) == 10 + 20_000 + 5

    await wait_for(session_counted)
    # Each outcome's row found by its id, its rating's versions by the rating's key: none read all 20,015.
    assert await whole_table_reads(url) == reads


async def whole_table_reads(url: str) -> int:
    """Sequential scans of deliveries, as the server's statistics count them."""
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'deliveries'")
        )
    finally:
        await conn.close()


def test_each_migration_has_a_number_of_its_own() -> None:
    # Two of one number would both be applied, and the second's entry refused: no new database would migrate.
    versions = [migration.version for migration in known_migrations()]
    assert len(versions) == len(set(versions)), versions
