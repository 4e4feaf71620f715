"""The store under the webhook route: 503 when it cannot commit, group commit, restarts, readiness."""

import asyncio
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.app import create_app
from relay.keys import SETTINGS, STORE
from relay.settings import Settings
from relay.store.api import StoreUnavailable
from relay.store.records import InboundWebhook
from relay.store.sqlite.intake import record_webhook
from relay.store.sqlite.store import SqliteStore
from tests.beats import worker_beat
from tests.chaos.test_storage import filesystem_full, tmpfs
from tests.conftest import AUTH, fixture_bytes
from tests.pg_server import PostgresServer
from tests.test_store_contract import inbound, rating
from tests.test_webhook import rating_body

BODY = fixture_bytes("bringg/rating_submitted.json")


def sqlite_of(app_store: object) -> SqliteStore:
    assert isinstance(app_store, SqliteStore)
    return app_store


# SQLite: the file's own faults -------------------------------------------------------------------------


async def test_locked_database_answers_503_with_retry_after_then_recovers(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(relay_store_timeout_s=0.3), run_worker=False))
    blocker = sqlite3.connect(client.app[SETTINGS].database_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock

    refused = await client.post("/webhooks/bringg", data=BODY, headers=AUTH)
    ready = await client.get("/readyz")
    blocker.execute("ROLLBACK")
    blocker.close()
    accepted = await client.post("/webhooks/bringg", data=BODY, headers=AUTH)

    assert refused.status == 503
    assert refused.headers["Retry-After"] == "30"
    assert refused.content_type == "application/problem+json"
    assert ready.status == 503
    assert "database not writable" in " ".join((await ready.json())["problems"])
    assert (accepted.status, (await accepted.json())["status"]) == (202, "accepted")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a tmpfs of its own, 2 MiB in all: a disk that fills."""
    with tmpfs(tmp_path / "disk", "2m") as disk:
        yield disk


async def test_full_disk_answers_503_and_keeps_nothing_half_written(
    aiohttp_client, make_settings, small_disk
):
    settings = make_settings(database_url=f"sqlite:///{small_disk / 'relay.db'}")
    client = await aiohttp_client(create_app(settings, run_worker=False))
    database = sqlite_of(client.app[STORE]).database
    big = rating_body(title="x" * 20000)

    # Filled to its last byte, for the intake process and the writer thread alike.
    with filesystem_full(small_disk / "relay.db"):
        refused = await client.post("/webhooks/bringg", data=big, headers=AUTH)
        failure = database.last_commit_error
    accepted = await client.post("/webhooks/bringg", data=big, headers=AUTH)

    assert refused.status == 503
    assert failure is not None and "full" in failure
    assert (accepted.status, (await accepted.json())["status"]) == (202, "accepted")
    conn = sqlite3.connect(database.path)
    assert conn.execute("SELECT COUNT(*) FROM webhooks").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 1
    conn.close()


async def test_readiness_reports_a_failed_commit_though_its_probe_still_fits(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))
    database = sqlite_of(client.app[STORE]).database
    assert await database.readiness_problems() == []
    pages = await database.write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    # A full disk, for the writer thread's connection: a webhook needs new pages, the probe rewrites one.
    await database.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))
    big = inbound(rating(77), body=rating_body(title="x" * 20000))

    with pytest.raises(StoreUnavailable):
        await database.write(record_webhook(big, recheck_before=datetime.now(UTC)))
    after_the_failure = await database.readiness_problems()
    next_reading = await database.readiness_problems()

    assert len(after_the_failure) == 1 and after_the_failure[0].startswith("database not writable: ")
    assert "full" in after_the_failure[0]
    # Nothing failed since: the probe's own commit speaks for the file again.
    assert next_reading == []


async def test_concurrent_webhooks_share_commits(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))
    store = sqlite_of(client.app[STORE])
    # The web app stores new webhooks through intake's process, in runs that share one commit each.
    assert store.intake_process is not None
    before = (store.intake_process.commits, store.database.commits)

    answers = await asyncio.gather(
        *(client.post("/webhooks/bringg", data=rating_body(rating_id=n), headers=AUTH) for n in range(1, 101))
    )

    assert [answer.status for answer in answers] == [202] * 100
    commits = store.intake_process.commits - before[0]
    assert 1 <= commits < 100, commits
    assert store.database.commits == before[1]
    assert (await client.app[STORE].deliveries_by_state())["pending"] == 100


# Both backends ------------------------------------------------------------------------------------------


@pytest.fixture
def on_each_backend(make_settings: Callable[..., Settings], store_url: str) -> Callable[..., Settings]:
    """Settings on a fresh database of each backend in turn; keyword overrides use field names."""
    return lambda **overrides: make_settings(database_url=store_url, **overrides)


async def test_stored_webhooks_survive_a_restart(aiohttp_client, on_each_backend):
    settings = on_each_backend()
    first = await aiohttp_client(create_app(settings, run_worker=False))
    accepted = await (await first.post("/webhooks/bringg", data=BODY, headers=AUTH)).json()
    await first.close()

    second = await aiohttp_client(create_app(settings, run_worker=False))
    again = await second.post("/webhooks/bringg", data=BODY, headers=AUTH)
    stored = await second.app[STORE].get_webhook(accepted["id"])

    assert (again.status, (await again.json())["delivery_id"]) == (200, accepted["delivery_id"])
    assert stored is not None and stored.body == BODY


async def test_health_and_intake_readiness_of_a_web_only_process(aiohttp_client, on_each_backend):
    client = await aiohttp_client(create_app(on_each_backend(), run_worker=False))

    health = await client.get("/healthz")
    intake = await client.get("/readyz?scope=intake")
    full = await client.get("/readyz")

    assert (health.status, await health.json()) == (200, {"status": "ok"})
    assert (intake.status, (await intake.json())["status"]) == (200, "ready")
    assert full.status == 503
    assert (await full.json())["problems"] == [
        "no live worker on this database (start `relay worker` or `relay serve`)"
    ]


async def test_readiness_names_a_silent_worker_and_an_old_backlog(aiohttp_client, on_each_backend):
    client = await aiohttp_client(
        create_app(on_each_backend(relay_ready_max_backlog_age_s=60), run_worker=False)
    )
    store = client.app[STORE]
    await store.beat(worker_beat(datetime.now(UTC) - timedelta(minutes=5)))
    old: InboundWebhook = inbound(rating(), at=datetime(2020, 1, 1, tzinfo=UTC))
    await store.record_webhook(old, recheck_before=datetime(2019, 1, 1, tzinfo=UTC))

    ready = await client.get("/readyz")

    problems = (await ready.json())["problems"]
    assert ready.status == 503
    assert re.match(r"worker silent for 30\d s", problems[0]), problems
    assert "over RELAY_READY_MAX_BACKLOG_AGE_S=60" in problems[1]


async def test_readiness_asks_for_one_live_worker_of_many_and_names_their_pause(
    aiohttp_client, on_each_backend
):
    client = await aiohttp_client(create_app(on_each_backend(), run_worker=False))
    now = datetime.now(UTC)
    store = client.app[STORE]
    # A worker killed long ago stays in the registry; one live worker is enough to deliver. A pause holds
    # for all: one worker's beat says so before another has read it.
    await store.beat(replace(worker_beat(now - timedelta(minutes=5)), worker_id="killed"))
    await store.beat(
        worker_beat(now - timedelta(seconds=3), paused_reason="Quivo refused the credentials, 401")
    )
    await store.beat(replace(worker_beat(now - timedelta(seconds=1)), worker_id="not-yet-told"))

    ready = await client.get("/readyz")

    assert (await ready.json())["problems"] == ["deliveries paused: Quivo refused the credentials, 401"]


async def test_readiness_names_a_database_behind_on_migrations(aiohttp_client, on_each_backend, request):
    client = await aiohttp_client(create_app(on_each_backend(), run_worker=False))
    # Another process, or an operator, emptied the record of migrations applied.
    if client.app[STORE].backend == "sqlite":
        conn = sqlite3.connect(client.app[SETTINGS].database_path)
        conn.execute("DELETE FROM schema_migrations")
        conn.commit()
        conn.close()
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        server.sql("DELETE FROM schema_migrations", client.app[SETTINGS].database_url.rsplit("/", 1)[1])

    ready = await client.get("/readyz")

    assert ready.status == 503
    assert json.dumps(await ready.json()).count("schema at version 0") == 1
