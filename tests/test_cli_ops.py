"""The operator's commands run as in a shell: status, deliveries list and show, replay, beside readers."""

import csv
import io
import json
import random
import re
import sqlite3
import subprocess
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from relay import cli
from relay.app import create_app
from relay.cli import main
from relay.console import duration, table
from relay.domain.delivery import DELIVERY_STATES
from relay.keys import SETTINGS, STORE
from relay.ops.health import worker_beats
from relay.sim.app import create_sim_app
from relay.sim.state import SimState
from relay.store import create_store
from relay.store.filters import WebhookFilter
from relay.store.records import DeliverySummary
from tests.beats import worker_beat
from tests.conftest import BACKENDS
from tests.forwarding import Quivo, forwarding_settings, wait_for_delivery
from tests.processes import run_relay
from tests.test_admin import (
    ADMIN,
    TOKEN,
    ago,
    crafted_cursor,
    delivery_row,
    every_delivery,
    seed,
    seed_attempt,
    seed_quarantined,
    through_store,
)

# The operator's commands read and change the store: each test runs on every backend unless marked otherwise.
pytestmark = pytest.mark.backends(*BACKENDS)


@pytest.fixture
async def store(make_settings: Any, tmp_path: Path) -> Any:
    """A migrated database, shaped as test_admin's seeding helpers read a relay: `store.app[SETTINGS]`."""
    settings = make_settings()
    migrated = create_store(settings.database_url, timeout_s=5, pool_size=1)
    await migrated.open()
    await migrated.close()
    return SimpleNamespace(app={SETTINGS: settings}, folder=tmp_path)


def relay(store: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """`relay ARGS` on the store's database, run in the test's folder as an operator's shell would."""
    return run_relay(*args, env={"DATABASE_URL": store.app[SETTINGS].database_url}, cwd=store.folder)


def relay_json(store: Any, *args: str) -> Any:
    result = relay(store, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


# Rendering


def test_durations_show_their_two_largest_units():
    assert [duration(s) for s in (0.4, 45, 200, 3600, 7300, 90061)] == [
        "0s",
        "45s",
        "3m 20s",
        "1h",
        "2h 1m",
        "1d 1h",
    ]


def test_tables_align_columns_and_put_numbers_right():
    assert table(
        [[7, "dead", None], [12, "unmatched", "no link"]], ["ID", "STATE", "ERROR"]
    ).splitlines() == [
        "ID  STATE      ERROR",
        " 7  dead       -",
        "12  unmatched  no link",
    ]


def test_help_lists_the_operator_commands_and_says_a_worker_does_the_replaying(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    replay_help = capsys.readouterr().out

    assert all(f"\n    {command}" in listed for command in ("status", "deliveries", "replay", "prune"))
    assert "RELAY_SWEEP_INTERVAL_S" in " ".join(replay_help.split())


# Status


def test_status_shows_counts_backlog_recent_outcomes_and_the_worker(store):
    seed(store, state="pending", next_attempt_at=ago(minutes=10))
    seed(store, state="unmatched")
    seed(store, state="delivered", updated_at=ago(minutes=5))
    seed(store, state="dead", updated_at=ago(hours=2))
    seed_quarantined(store, b"{}", errors=["not a rating"], received_at=ago(minutes=3))
    beat(store, _ago(minutes=2), "Quivo answered 401")

    shown = relay(store, "status")
    document = relay_json(store, "status")

    assert shown.returncode == 0, shown.stderr
    lines = [columns(line) for line in shown.stdout.splitlines()]
    assert lines[0] == ["DELIVERY STATE", "COUNT", "WEBHOOK STATUS", "COUNT"]
    assert lines[1] == ["pending", "1", "accepted", "4"]
    assert lines[4][:2] == ["delivered", "1"] and lines[5][:2] == ["dead", "1"]
    assert ["quarantined", "1"] in [line[2:] for line in lines]
    summary = {line[0]: line[1] for line in lines if len(line) == 2}
    assert summary["backlog"].startswith("oldest waiting 1m")
    assert summary["worker lag"].startswith("10m")
    assert summary["delivered"] == "1 in the last hour, 1 in the last day"
    assert summary["dead"] == "0 in the last hour, 1 in the last day"
    assert summary["worker"].startswith("last heartbeat 2m")
    assert summary["paused"] == "Quivo answered 401"

    seeded = ("pending", "delivered", "dead", "unmatched")
    assert document["deliveries"] == {state: int(state in seeded) for state in DELIVERY_STATES}
    assert document["webhooks"] == {
        "accepted": 4,
        "duplicate": 0,
        "ignored": 0,
        "quarantined": 1,
        "dismissed": 0,
    }
    assert 60 <= document["backlog_age_s"] < 120
    assert 600 <= document["worker_lag_s"] < 660
    assert (document["delivered"], document["dead"]) == (
        {"last_hour": 1, "last_day": 1},
        {"last_hour": 0, "last_day": 1},
    )
    assert document["worker"]["paused"] == "Quivo answered 401"
    assert 120 <= document["worker"]["heartbeat_age_s"] < 180


def test_a_worker_beating_while_status_reads_is_never_shown_ahead_of_now(store, monkeypatch, capsys):

    async def beating_meanwhile(opened: Any, *, now: datetime) -> Any:
        # A worker beside the command beats after it started, while it opens the store and reads.
        await opened.beat(worker_beat(datetime.now(UTC)))
        return await worker_beats(opened, now=now)

    monkeypatch.setattr(cli, "worker_beats", beating_meanwhile)
    monkeypatch.chdir(store.folder)
    monkeypatch.setenv("DATABASE_URL", store.app[SETTINGS].database_url)

    assert main(["status", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)

    assert document["worker"]["heartbeat_age_s"] >= 0
    assert [worker["heartbeat_age_s"] >= 0 for worker in document["workers"]] == [True]


# Deliveries


def test_deliveries_list_filters_by_state_and_time_newest_first_and_pages(store):
    old_dead = seed(store, state="dead", created_at=ago(hours=3))
    unmatched = seed(store, state="unmatched", external_id="ORD-9", created_at=ago(hours=1))
    delivered = seed(store, state="delivered", inquiry_id=77, created_at=ago(minutes=30))
    recent_dead = seed(store, state="dead", last_error="Quivo answered 422")

    dead = relay_json(store, "deliveries", "list", "--state", "dead")
    recent = relay_json(store, "deliveries", "list", "--state", "dead,unmatched", "--since", "2h")
    first = relay_json(store, "deliveries", "list", "--state", "dead", "--limit", "1")
    rest = relay_json(store, "deliveries", "list", "--state", "dead", "--cursor", first["next_cursor"])
    shown = relay(store, "deliveries", "list", "--state", "unmatched", "--state", "delivered")

    assert [item["id"] for item in dead["items"]] == [recent_dead, old_dead]
    assert dead["next_cursor"] is None
    # The admin API's item: every field of the listing's record.
    assert set(dead["items"][0]) == {field.name for field in fields(DeliverySummary)}
    assert dead["items"][0]["last_error"] == "Quivo answered 422"
    assert [item["id"] for item in recent["items"]] == [recent_dead, unmatched]
    assert [item["id"] for item in first["items"] + rest["items"]] == [recent_dead, old_dead]
    assert rest["next_cursor"] is None
    header, *rows = [columns(line) for line in shown.stdout.splitlines()]
    assert header[:4] == ["ID", "TENANT", "STATE", "MERCHANT"]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (str(delivered), "default", "delivered"),
        (str(unmatched), "default", "unmatched"),
    ]
    assert rows[0][header.index("INQUIRY")] == "77"
    assert rows[1][header.index("CREATED")].startswith("1h")


def test_show_prints_the_delivery_its_calls_and_its_webhook_and_an_unknown_id_exits_1(store):
    created_at = ago(minutes=2)
    delivery_id = seed(
        store, state="dead", attempts=1, last_error="Quivo answered 422", created_at=created_at
    )
    seed_attempt(
        store,
        delivery_id,
        started_at=ago(minutes=1),
        duration_ms=87,
        status_code=422,
        outcome="dead",
        error="Quivo answered 422",
    )

    detail = relay_json(store, "deliveries", "show", str(delivery_id))
    shown = relay(store, "deliveries", "show", str(delivery_id))
    unknown = relay(store, "deliveries", "show", "999")

    assert (detail["delivery"]["id"], detail["delivery"]["state"]) == (delivery_id, "dead")
    assert detail["delivery"]["rating"]["external_id"] == "ORD-1"
    assert [(call["status_code"], call["outcome"]) for call in detail["attempts"]] == [(422, "dead")]
    assert detail["webhook"]["status"] == "accepted"
    lines = [columns(line) for line in shown.stdout.splitlines()]
    assert ["state", "dead"] in lines
    calls = lines.index(["NUMBER", "ACTION", "STARTED_AT", "DURATION_MS", "STATUS_CODE", "OUTCOME", "ERROR"])
    assert lines[calls + 1][:2] == ["1", "send"] and lines[calls + 1][4] == "422"
    assert f"webhook {detail['webhook']['id']}: accepted" in shown.stdout
    assert (unknown.returncode, unknown.stderr) == (1, "relay: no delivery 999\n")
    # Instants as the admin API writes them (`2026-12-01T18:42:38.123456Z`), in JSON and in the table alike.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", created_at)
    assert (detail["delivery"]["created_at"], detail["delivery"]["updated_at"]) == (created_at, created_at)
    assert ["created_at", created_at] in lines
    assert f"received {created_at}, " in shown.stdout


# Replay


def test_replay_sends_a_dead_delivery_back_to_pending_unconfirmed(store):
    delivery_id = seed(store, state="dead", attempts=5, last_error="Quivo answered 503")

    result = relay(store, "replay", str(delivery_id))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"delivery {delivery_id}: dead -> pending;")
    row = delivery_row(store, delivery_id)
    assert (row["state"], row["unconfirmed"], row["attempts"]) == ("pending", 1, 0)
    assert row["replayed_at"] is not None


def test_replay_of_a_delivered_one_exits_1_naming_its_state(store):
    delivery_id = seed(store, state="delivered")

    result = relay(store, "replay", str(delivery_id))

    assert result.returncode == 1
    assert result.stderr.startswith(f"relay: delivery {delivery_id} is delivered:")
    assert delivery_row(store, delivery_id)["state"] == "delivered"


def test_bulk_replay_takes_the_dead_matching_the_filters_and_shows_progress(store):
    recent = [seed(store, state="dead") for _ in range(3)]
    old = seed(store, state="dead", created_at=ago(hours=3))
    unmatched = seed(store, state="unmatched")

    result = relay(store, "replay", "--state", "dead", "--since", "2h", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"replayed": 3, "skipped": 0, "skipped_deliveries": []}
    assert "replayed 3..." in result.stderr
    states = {delivery.id: delivery.state for delivery in every_delivery(store)}
    assert states == {**dict.fromkeys(recent, "pending"), old: "dead", unmatched: "unmatched"}


def test_bulk_replay_names_each_delivery_it_leaves_because_a_newer_version_exists(store):
    old = seed(store, state="dead", rating_id=50)
    newer = seed(store, state="dead", rating_id=50, version="2026-11-02T08:00:00.000000Z")

    shown = relay(store, "replay", "--state", "dead")

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("replayed 1 deliveries, skipped 1;")
    assert lines[1:] == [
        f"skipped delivery {old}: delivery {newer} holds a newer version of this rating; "
        "replaying would undo it"
    ]
    assert [delivery_row(store, d)["state"] for d in (old, newer)] == ["dead", "pending"]


# Links and retention


def test_links_import_wakes_the_unmatched_reports_bad_rows_by_line_and_export_gives_the_links_back(store):
    unmatched = seed(store, state="unmatched", merchant_id=1, external_id="ORD-7")
    (store.folder / "links.csv").write_text(
        "merchant_id,external_id,inquiry_id\n1,ORD-7,701\n2,ORD-8,not-a-number\n2,ORD-9,709\n"
    )

    imported = relay(store, "links", "import", "links.csv")
    exported = relay(store, "links", "export")

    assert imported.returncode == 1  # a bad row: the import says so, the good rows are saved all the same
    assert imported.stdout == "saved 2 links, woke 1 unmatched deliveries, 1 bad rows\n"
    [problem] = [line for line in imported.stderr.splitlines() if line.startswith("links.csv:")]
    assert problem.startswith("links.csv:3: ") and "inquiry_id" in problem
    assert delivery_row(store, unmatched)["state"] == "pending"
    assert exported.returncode == 0, exported.stderr
    assert list(csv.reader(io.StringIO(exported.stdout))) == [
        ["merchant_id", "external_id", "inquiry_id"],
        ["1", "ORD-7", "701"],
        ["2", "ORD-9", "709"],
    ]


def test_prune_deletes_what_finished_before_the_retention_with_its_calls_and_webhook_and_keeps_the_rest(
    store,
):
    long_ago = ago(days=31)  # RELAY_RETENTION_DAYS is 30
    old_delivered = seed(store, state="delivered", created_at=long_ago)
    seed_attempt(
        store,
        old_delivered,
        started_at=long_ago,
        duration_ms=90,
        status_code=200,
        outcome="delivered",
    )
    old_dead = seed(store, state="dead", created_at=long_ago)
    recent_delivered = seed(store, state="delivered")

    pruned = relay(store, "prune")

    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("pruned 1 deliveries, 1 attempts and 1 webhooks finished before ")
    assert pruned.stdout.endswith("; dead, unmatched and quarantined kept\n")
    assert [delivery.id for delivery in every_delivery(store)] == [recent_delivered, old_dead]
    webhooks = through_store(store, lambda opened: opened.list_webhooks(WebhookFilter(), limit=10))
    assert len(webhooks) == 2


# Bad command lines


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["deliveries", "list", "--state", "dead,lost"], "--state"),
        (["deliveries", "list", "--since", "yesterday"], "--since"),
        (["replay", "--state", "pending"], "--state"),
        (["deliveries", "list", "--cursor", crafted_cursor(f"[{2**64}]")], "--cursor"),
        (["deliveries", "list", "--cursor", crafted_cursor("[" * 5000)], "--cursor"),
        (["deliveries", "list", "--since", "9999-12-31T23:59:59-23:59"], "--since"),
        (["deliveries", "list", "--until", "0001-01-01T00:00:00+23:59"], "--until"),
        (["replay", "--state", "dead", "--since", "9999-12-31T23:59:59-23:59"], "--since"),
    ],
)
# Refused before the store is opened: what it proves holds whatever the backend, so SQLite alone.
@pytest.mark.backends("sqlite")
def test_a_bad_filter_exits_2_with_one_line_naming_the_option(store, args, option):
    result = relay(store, *args)

    assert result.returncode == 2
    assert result.stderr.startswith(f"relay: {option}: ") and result.stderr.count("\n") == 1
    assert result.stdout == ""


# Beside a running relay


# SQLite's own promise (WAL: a reader's open transaction never blocks a commit); PostgreSQL's MVCC gives it.
@pytest.mark.backends("sqlite")
def test_commands_work_while_another_connection_holds_a_read_transaction(store):
    delivery_id = seed(store, state="dead")
    reader = sqlite3.connect(store.app[SETTINGS].database_path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT state FROM deliveries").fetchall() == [("dead",)]

        replayed = relay(store, "replay", str(delivery_id), "--json")
        status = relay_json(store, "status")

        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout)["delivery"]["state"] == "pending"
        assert status["deliveries"]["pending"] == 1
        # WAL: the open transaction still reads its snapshot; the commit waited for no one.
        assert reader.execute("SELECT state FROM deliveries").fetchall() == [("dead",)]
    finally:
        reader.close()


# What reaches the terminal

ESCAPES = "\x1b]0;owned\x07\x1b[2JALL OK\u202e"


def test_control_characters_from_webhooks_and_quivo_are_shown_escaped(store):
    delivery_id = seed(
        store,
        state="dead",
        external_id=f"ORD-{ESCAPES}",
        last_error=f"Quivo: {ESCAPES}",
        request_id=f"req-{ESCAPES}",
    )
    seed_attempt(
        store,
        delivery_id,
        started_at=ago(minutes=1),
        duration_ms=87,
        status_code=422,
        outcome="dead",
        error=f"Quivo answered 422: {ESCAPES}",
    )
    beat(store, _ago(seconds=0), f"Quivo answered 401: {ESCAPES}")

    shown = [
        relay(store, "deliveries", "list"),
        relay(store, "deliveries", "show", str(delivery_id)),
        relay(store, "status"),
    ]
    as_json = [
        relay(store, "deliveries", "list", "--json"),
        relay(store, "deliveries", "show", str(delivery_id), "--json"),
        relay(store, "status", "--json"),
    ]

    for result in shown + as_json:
        assert result.returncode == 0, result.stderr
        assert not any(char in result.stdout + result.stderr for char in "\x1b\x07\u202e")
    listed, detail, status = (result.stdout for result in shown)
    assert "ORD-\\x1b]0;owned\\x07\\x1b[2JALL OK\\u202e" in listed
    assert detail.count("\\x1b]0;owned") == 4  # order id, last error, the call's error, request id
    assert "\\u001b]0;owned" in detail  # the rating, shown as JSON
    assert "Quivo answered 401: \\x1b]0;owned" in status
    # JSON escapes them itself, and reads back as they were.
    assert json.loads(as_json[0].stdout)["items"][0]["external_id"] == f"ORD-{ESCAPES}"
    assert json.loads(as_json[2].stdout)["worker"]["paused"] == f"Quivo answered 401: {ESCAPES}"


async def replayed_calls(
    aiohttp_client: Any,
    aiohttp_server: Any,
    make_settings: Any,
    folder: Path,
    *,
    inquiry_id: int,
    missing: bool,
) -> tuple[list[list[str]], SimState]:
    """A dead delivery replayed (so read before it is sent again): its calls as `show` lists them."""
    state = SimState(rng=random.Random(3))
    if missing:
        state.missing.add(inquiry_id)
    quivo = Quivo(state, str((await aiohttp_server(create_sim_app(state))).make_url("")).rstrip("/"))
    settings = make_settings(relay_admin_token=TOKEN, **forwarding_settings(quivo))
    running = await aiohttp_client(create_app(settings, run_worker=True))
    delivery_id = seed(
        running, state="dead", external_id=f"INQ-{inquiry_id}", last_error="Quivo answered 503"
    )
    replayed = await running.post(f"/admin/deliveries/{delivery_id}/replay", headers=ADMIN)
    assert replayed.status == 200
    await wait_for_delivery(running.app[STORE], delivery_id)

    shown = relay(SimpleNamespace(app=running.app, folder=folder), "deliveries", "show", str(delivery_id))

    assert shown.returncode == 0, shown.stderr
    lines = [columns(line) for line in shown.stdout.splitlines()]
    calls = lines.index(["NUMBER", "ACTION", "STARTED_AT", "DURATION_MS", "STATUS_CODE", "OUTCOME", "ERROR"])
    return lines[calls + 1 :], state


async def test_show_says_what_a_reconcile_read_found(aiohttp_client, aiohttp_server, make_settings, tmp_path):
    (read, send, *_), state = await replayed_calls(
        aiohttp_client, aiohttp_server, make_settings, tmp_path, inquiry_id=77, missing=False
    )

    assert (read[1], read[4], read[5]) == ("reconcile", "200", "tag not found")
    assert (send[1], send[4], send[5]) == ("send", "200", "delivered")
    assert len(state.ratings) == 1


async def test_show_says_a_reconcile_read_was_refused_not_dead(
    aiohttp_client, aiohttp_server, make_settings, tmp_path
):
    # Quivo has no such inquiry: the read before the resend is refused (404), then the send is too.
    (read, send, *_), _ = await replayed_calls(
        aiohttp_client, aiohttp_server, make_settings, tmp_path, inquiry_id=4040, missing=True
    )

    assert (read[1], read[4], read[5]) == ("reconcile", "404", "read refused")
    assert (send[1], send[4], send[5]) == ("send", "404", "dead")


def beat(store: Any, at: datetime, paused_reason: str) -> None:
    """A worker's beat on the store's database, as a worker process beside the CLI records it."""
    through_store(store, lambda opened: opened.beat(worker_beat(at, paused_reason)))


def _ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)
