"""The store under the webhook route: 503 when it cannot commit, group commit, restarts, readiness."""

import asyncio
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta

from relay.app import create_app
from relay.keys import STORE
from relay.store.db import Database
from relay.store.migrations import LATEST_VERSION, migrate
from tests.beats import worker_beat
from tests.conftest import AUTH, fixture_bytes
from tests.test_webhook import rating_body

BODY = fixture_bytes("bringg/rating_submitted.json")


async def test_locked_database_answers_503_with_retry_after_then_recovers(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(relay_store_timeout_s=0.3), run_worker=False))
    blocker = sqlite3.connect(client.app[STORE].database.path, isolation_level=None)
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


async def test_full_disk_answers_503_and_keeps_nothing_half_written(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))
    database = client.app[STORE].database
    pages = await database.write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    # The file cannot grow: a full disk, for the writer's connection.
    await database.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))
    big = rating_body(title="x" * 20000)

    refused = await client.post("/webhooks/bringg", data=big, headers=AUTH)
    failure = database.last_commit_error
    await database.write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    accepted = await client.post("/webhooks/bringg", data=big, headers=AUTH)

    assert refused.status == 503
    assert failure is not None and "full" in failure
    assert (accepted.status, (await accepted.json())["status"]) == (202, "accepted")
    conn = sqlite3.connect(database.path)
    assert conn.execute("SELECT COUNT(*) FROM webhooks").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 1
    conn.close()


async def test_concurrent_webhooks_share_commits(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))
    database = client.app[STORE].database
    before = database.commits

    answers = await asyncio.gather(
        *(client.post("/webhooks/bringg", data=rating_body(rating_id=n), headers=AUTH) for n in range(1, 101))
    )

    assert [answer.status for answer in answers] == [202] * 100
    commits = database.commits - before
    assert 1 <= commits < 100, commits
    conn = sqlite3.connect(database.path)
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 100
    conn.close()


async def test_stored_webhooks_survive_a_restart(aiohttp_client, make_settings):
    settings = make_settings()
    first = await aiohttp_client(create_app(settings, run_worker=False))
    accepted = await (await first.post("/webhooks/bringg", data=BODY, headers=AUTH)).json()
    await first.close()

    second = await aiohttp_client(create_app(settings, run_worker=False))
    again = await second.post("/webhooks/bringg", data=BODY, headers=AUTH)

    assert (again.status, (await again.json())["delivery_id"]) == (200, accepted["delivery_id"])
    conn = sqlite3.connect(settings.database_path)
    assert conn.execute("SELECT body FROM webhooks WHERE id = ?", (accepted["id"],)).fetchone()[0] == BODY
    conn.close()


async def test_database_runs_in_wal_mode_with_full_sync(make_settings):
    database = Database(make_settings().database_path, timeout_s=1)
    await database.open()
    try:
        mode = await (await database.reader.execute("PRAGMA journal_mode")).fetchone()
        assert mode is not None and mode[0] == "wal"
        sync = await database.write(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        assert sync == 2  # FULL
    finally:
        await database.close()


async def test_migrations_apply_once_and_are_idempotent(make_settings):
    database = Database(make_settings().database_path, timeout_s=1)
    await database.open()
    try:
        assert await database.write(migrate) == []  # already applied at open
        assert await database.schema_version() == LATEST_VERSION
    finally:
        await database.close()


async def test_health_and_intake_readiness_of_a_web_only_process(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))

    health = await client.get("/healthz")
    intake = await client.get("/readyz?scope=intake")
    full = await client.get("/readyz")

    assert (health.status, await health.json()) == (200, {"status": "ok"})
    assert (intake.status, (await intake.json())["status"]) == (200, "ready")
    assert full.status == 503
    assert (await full.json())["problems"] == [
        "no worker has run on this database yet (start `relay worker` or `relay serve`)"
    ]


async def test_readiness_names_a_silent_worker_and_an_old_backlog(aiohttp_client, make_settings):
    client = await aiohttp_client(
        create_app(make_settings(relay_ready_max_backlog_age_s=60), run_worker=False)
    )
    await client.app[STORE].beat(worker_beat(datetime.now(UTC) - timedelta(minutes=5)))
    accepted = await (await client.post("/webhooks/bringg", data=BODY, headers=AUTH)).json()
    conn = sqlite3.connect(client.app[STORE].database.path)
    conn.execute(
        "UPDATE deliveries SET created_at = '2020-01-01T00:00:00.000000Z' WHERE id = ?",
        (accepted["delivery_id"],),
    )
    conn.commit()
    conn.close()

    ready = await client.get("/readyz")

    problems = (await ready.json())["problems"]
    assert ready.status == 503
    assert re.match(r"worker silent for 30\d s", problems[0]), problems
    assert "over RELAY_READY_MAX_BACKLOG_AGE_S=60" in problems[1]


async def test_readiness_names_a_database_behind_on_migrations(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))
    conn = sqlite3.connect(client.app[STORE].database.path)
    conn.execute("DELETE FROM schema_migrations")
    conn.commit()
    conn.close()

    ready = await client.get("/readyz")

    assert ready.status == 503
    assert json.dumps(await ready.json()).count("schema at version 0") == 1
