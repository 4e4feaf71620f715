"""`relay db copy` through the real CLI: a lived-in database moved between backends; its refusals."""

import json
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from relay import cli
from relay.store.records import COPIED_TABLES, Row, WorkerBeat
from tests.chaos.harness import relay_env
from tests.conftest import AUTH
from tests.forwarding import query, rating_webhook
from tests.pg_server import PostgresServer
from tests.processes import (
    free_port,
    http_json,
    relay_process,
    run_relay,
    sim_quivo_process,
    wait_until_ready,
)

ADMIN_TOKEN = "copy-test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
MISSING_INQUIRY = 404  # the stand-in answers 404 for it: its delivery dies
LINKED_ORDER, UNLINKED_ORDER = "ORDER-L3", "ORDER-NOLINK"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        time.sleep(0.05)


def db_copy(source: str, target: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_relay("db", "copy", source, target, env={}, cwd=cwd, timeout=120)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def file_states(path: Path) -> dict[int, str]:
    return {row["id"]: row["state"] for row in query(path, "SELECT id, state FROM deliveries")}


def served_states(port: int) -> dict[int, str]:
    page = http_json("GET", f"http://127.0.0.1:{port}/admin/deliveries?limit=200", headers=ADMIN)
    return {item["id"]: item["state"] for item in page["items"]}


def post(port: int, body: bytes) -> dict[str, Any]:
    return http_json("POST", f"http://127.0.0.1:{port}/webhooks/bringg", body, AUTH)


def put_link(port: int, external_id: str, inquiry_id: int) -> None:
    body = json.dumps({"inquiry_id": inquiry_id}).encode()
    http_json("PUT", f"http://127.0.0.1:{port}/admin/links/1/{external_id}", body, ADMIN)


def ratings_by_inquiry(sim: str) -> Counter[int]:
    return Counter(record["inquiry_id"] for record in http_json("GET", f"{sim}/_sim/ratings")["ratings"])


def set_faults(sim: str, **knobs: float) -> None:
    http_json("PUT", f"{sim}/_sim/faults", json.dumps(knobs).encode(), {"Content-Type": "application/json"})


@dataclass(frozen=True)
class LivedIn:
    """A relay's SQLite database after a real run, and which delivery ended up where."""

    path: Path
    delivered: list[int]  # to inquiries 101, 102 and (by a link) 103
    dead: int
    unmatched: int  # waits for a link to UNLINKED_ORDER
    in_flight: int  # failed once, then its send was cut by a SIGKILL after Quivo took it: leased, unconfirmed
    pending: list[int]  # stored by a web-only process, never tried
    superseded: int


def live_in(folder: Path, sim: str) -> LivedIn:
    """Fill folder/relay.db as a relay does: webhooks through HTTP, deliveries through the stand-in."""
    port = free_port()
    env = relay_env(folder, sim, port, RELAY_ADMIN_TOKEN=ADMIN_TOKEN, RELAY_MAX_ATTEMPTS="1000")
    path = folder / "relay.db"
    with relay_process("serve", env=env, cwd=folder, log_path=folder / "source.log") as relay:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz?scope=intake", relay)
        put_link(port, LINKED_ORDER, 103)
        delivered = [
            post(port, rating_webhook(n, order))["delivery_id"]
            for n, order in enumerate(("INQ-101", "INQ-102", LINKED_ORDER), 1)
        ]
        dead = post(port, rating_webhook(4, f"INQ-{MISSING_INQUIRY}"))["delivery_id"]
        unmatched = post(port, rating_webhook(5, UNLINKED_ORDER))["delivery_id"]
        assert post(port, rating_webhook(1, "INQ-101"))["status"] == "duplicate"
        assert post(port, b'{"webhook_type": "task_done", "merchant_id": 1}')["status"] == "ignored"
        wanted = {**dict.fromkeys(delivered, "delivered"), dead: "dead", unmatched: "unmatched"}
        wait_for(lambda: {i: file_states(path).get(i) for i in wanted} == wanted, "settled deliveries")

        set_faults(sim, error_rate=1.0)
        in_flight = post(port, rating_webhook(6, "INQ-106"))["delivery_id"]
        wait_for(lambda: file_states(path)[in_flight] == "retrying", "a failed send")
        # Its next try takes the stand-in's latency: the relay is killed while Quivo holds the rating.
        set_faults(sim, error_rate=0.0, latency_ms=700)
        sim_stats: Callable[[], dict[str, Any]] = lambda: http_json("GET", f"{sim}/_sim/stats")  # noqa: E731
        wait_for(lambda: sim_stats()["rating_posts_open"] == 1, "a send inside the stand-in's latency")
        relay.send_signal(signal.SIGKILL)
        relay.wait(timeout=10)
    wait_for(lambda: ratings_by_inquiry(sim)[106] == 1, "the stand-in's commit of the cut send")
    set_faults(sim, latency_ms=0)

    with relay_process("serve", "--no-worker", env=env, cwd=folder, log_path=folder / "web.log") as web:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz?scope=intake", web)
        first = post(port, rating_webhook(9, "INQ-109", updated_at="2026-11-20T10:00:00Z"))["delivery_id"]
        newer = post(port, rating_webhook(9, "INQ-109", updated_at="2026-11-20T11:00:00Z"))["delivery_id"]
        pending = [post(port, rating_webhook(8, "INQ-108"))["delivery_id"], newer]
        web.send_signal(signal.SIGTERM)
        assert web.wait(timeout=30) == 0

    lived_in = LivedIn(path, delivered, dead, unmatched, in_flight, pending, first)
    assert file_states(path) == {
        **dict.fromkeys(delivered, "delivered"),
        dead: "dead",
        unmatched: "unmatched",
        in_flight: "sending",
        **dict.fromkeys(pending, "pending"),
        first: "superseded",
    }
    return lived_in


def empty_database(kind: str, folder: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database: a SQLite file in `folder`, or one on the test PostgreSQL server."""
    if kind == "sqlite":
        return sqlite_url(folder / "relay.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url(server.create_database())


def copied_counts(copied: subprocess.CompletedProcess[str]) -> dict[str, tuple[int, int]]:
    """Each table's rows in the source and the target, as the copy printed them."""
    assert copied.returncode == 0, copied.stderr
    assert "every table holds as many rows in the target" in copied.stdout.splitlines()[-1]
    rows = [line.split() for line in copied.stdout.splitlines()[1:-1]]
    return {table: (int(source), int(target)) for table, source, target in rows}


# The relay runs on the last database of each route: PostgreSQL's export and import both lie on the way.
@pytest.mark.parametrize("route", [("sqlite",), ("postgresql",), ("postgresql", "sqlite")], ids="-".join)
def test_a_copied_relay_sends_nothing_twice_and_forgets_nothing(
    tmp_path: Path, route: tuple[str, ...], request: pytest.FixtureRequest
):
    with sim_quivo_process("--missing-inquiries", str(MISSING_INQUIRY), cwd=tmp_path) as sim:
        source = live_in(tmp_path, sim)
        urls = [sqlite_url(source.path)]
        for number, kind in enumerate(route):
            urls.append(empty_database(kind, tmp_path / f"copy-{number}", request))
            copied = db_copy(urls[-2], urls[-1], tmp_path)
            counts = copied_counts(copied)
            assert counts["webhooks"] == (11, 11) and counts["deliveries"] == (9, 9), copied.stdout
            assert all(source_rows == target_rows for source_rows, target_rows in counts.values())
            assert "deliveries" in copied.stderr and "100%" in copied.stderr

        port = free_port()
        env = relay_env(tmp_path, sim, port, DATABASE_URL=urls[-1], RELAY_ADMIN_TOKEN=ADMIN_TOKEN)
        log = tmp_path / "copy.log"
        with relay_process("serve", env=env, cwd=tmp_path, log_path=log) as relay:
            wait_until_ready(f"http://127.0.0.1:{port}/readyz?scope=intake", relay)
            put_link(port, UNLINKED_ORDER, 105)
            waiting = [source.unmatched, source.in_flight, *source.pending]
            # The cut send is taken up once its lease runs out, and read back before anything is sent.
            wait_for(
                lambda: {served_states(port)[i] for i in waiting} == {"delivered"},
                "the waiting deliveries delivered from the copy",
                timeout=60,
            )
            states = served_states(port)
            relay.send_signal(signal.SIGTERM)
            assert relay.wait(timeout=30) == 0

        assert ratings_by_inquiry(sim) == dict.fromkeys((101, 102, 103, 105, 106, 108, 109), 1)
        assert (states[source.dead], states[source.superseded]) == ("dead", "superseded")
        assert "delivery.reconciled" in log.read_text()


def seeded_with_a_link(folder: Path, external_id: str, url: str | None = None) -> Path:
    """A migrated database (folder/relay.db, or `url`) holding one link, put there by `relay links import`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "links.csv").write_text(f"merchant_id,external_id,inquiry_id\n1,{external_id},77\n")
    env = {"DATABASE_URL": url or sqlite_url(folder / "relay.db")}
    imported = run_relay("links", "import", "links.csv", env=env, cwd=folder)
    assert imported.returncode == 0, imported.stderr
    return folder / "relay.db"


def rows_of(path: Path) -> list[str]:
    """Every row of the copied tables, as SQL (migrations may apply: the relay applies them at any start)."""
    conn = sqlite3.connect(path)
    try:
        inserts = tuple(f'INSERT INTO "{table}"' for table in COPIED_TABLES)
        return [line for line in conn.iterdump() if line.startswith(inserts)]
    finally:
        conn.close()


def test_a_target_that_holds_data_is_refused_and_left_untouched(tmp_path: Path):
    source = seeded_with_a_link(tmp_path / "old", "ORDER-1")
    target = seeded_with_a_link(tmp_path / "new", "ORDER-2")
    before = rows_of(target)

    refused = db_copy(sqlite_url(source), sqlite_url(target), tmp_path)

    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        "relay: db copy refused: the target holds data: links (1 rows); copy only into an empty database"
    )
    assert refused.stdout == ""
    assert rows_of(target) == before


# On SQLite the worker's lock tells; on PostgreSQL its beats in the worker registry.
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_relay_delivering_from_the_source_is_refused(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
):
    source = empty_database(kind, tmp_path / "old", request)
    seeded_with_a_link(tmp_path / "old", "ORDER-1", source)
    target = tmp_path / "new" / "relay.db"
    with sim_quivo_process(cwd=tmp_path) as sim:
        env = relay_env(tmp_path, sim, free_port(), DATABASE_URL=source)
        with relay_process("worker", env=env, cwd=tmp_path, log_path=tmp_path / "worker.log") as worker:
            wait_for(lambda: "worker.started" in (tmp_path / "worker.log").read_text(), "a started worker")
            refused = db_copy(source, sqlite_url(target), tmp_path)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0

    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines()[-1].startswith("relay: db copy refused: stop the relay first")
    assert rows_of(target) == []


def test_an_empty_source_is_refused(tmp_path: Path):
    refused = db_copy(sqlite_url(tmp_path / "typo.db"), sqlite_url(tmp_path / "new.db"), tmp_path)

    assert refused.returncode == 2
    assert "the source holds no rows" in refused.stderr.splitlines()[-1]


def test_a_postgresql_target_that_holds_data_is_refused_and_left_untouched(
    tmp_path: Path, postgres_server: PostgresServer
):
    target = postgres_server.url(postgres_server.create_database())
    first = seeded_with_a_link(tmp_path / "first", "ORDER-1")
    assert db_copy(sqlite_url(first), target, tmp_path).returncode == 0
    second = seeded_with_a_link(tmp_path / "second", "ORDER-2")

    refused = db_copy(sqlite_url(second), target, tmp_path)

    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        "relay: db copy refused: the target holds data: links (1 rows); copy only into an empty database"
    )
    # What the target holds, read back by copying it out: the first copy's rows, nothing of the second.
    back = tmp_path / "back" / "relay.db"
    assert db_copy(target, sqlite_url(back), tmp_path).returncode == 0
    assert rows_of(back) == rows_of(first)


def test_a_postgresql_target_is_left_analysed(tmp_path: Path, postgres_server: PostgresServer):
    source = seeded_with_a_link(tmp_path / "old", "ORDER-1")
    name = postgres_server.create_database()

    assert db_copy(sqlite_url(source), postgres_server.url(name), tmp_path).returncode == 0

    # Not left for autovacuum to come by: the relay started on the copy plans on these tables' statistics.
    analysed = postgres_server.sql(
        "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL ORDER BY relname", name
    )
    assert analysed.split() == sorted(COPIED_TABLES)


def test_a_password_in_a_url_appears_in_no_output(tmp_path: Path, postgres_server: PostgresServer):
    source = seeded_with_a_link(tmp_path / "old", "ORDER-1")
    target = postgres_server.url(postgres_server.create_database())
    password = urlsplit(target).password
    assert password
    unreachable = target.replace(f":{postgres_server.port}/", f":{free_port()}/")
    wrong_password = target.replace(password, f"{password}-not-it")

    runs = [
        db_copy(sqlite_url(source), target, tmp_path),  # copied
        db_copy(sqlite_url(source), target, tmp_path),  # refused: the target holds data
        db_copy(target, unreachable, tmp_path),  # no server there
        db_copy(wrong_password, sqlite_url(tmp_path / "new.db"), tmp_path),  # refused by the server
    ]
    malformed = db_copy(target.replace(f":{postgres_server.port}/", ":no-port/"), target, tmp_path)

    assert [run.returncode for run in runs] == [0, 2, 2, 2]
    for run in runs:
        assert password not in run.stdout + run.stderr
        assert ":***@127.0.0.1" in run.stderr.splitlines()[0]
    assert malformed.returncode == 2 and "SOURCE_URL: not a database URL" in malformed.stderr
    assert password not in malformed.stdout + malformed.stderr


class TablesInMemory:
    """Just what the copy asks of a Store, on rows in memory; `loses` drops whatever is imported into it."""

    backend, location, single_worker = "memory", "test", False

    def __init__(self, rows: dict[str, list[Row]], loses: str | None = None) -> None:
        self.rows = {table: rows.get(table, []) for table in COPIED_TABLES}
        self.loses = loses

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def live_workers(self, *, since: datetime) -> list[WorkerBeat]:
        return []

    async def row_counts(self) -> dict[str, int]:
        return {table: len(rows) for table, rows in self.rows.items()}

    async def export_rows(self, table: str, *, batch_size: int) -> AsyncIterator[list[Row]]:
        for start in range(0, len(self.rows[table]), batch_size):
            yield self.rows[table][start : start + batch_size]

    async def import_rows(self, table: str, rows: list[Row]) -> None:
        if table != self.loses:
            self.rows[table].extend(rows)

    async def refresh_statistics(self) -> None:
        pass


def test_counts_that_differ_at_the_end_are_named_with_exit_1(monkeypatch, capsys):
    stores = {
        "source": TablesInMemory({"deliveries": [{"id": 1}, {"id": 2}], "attempts": [{"id": 1}]}),
        "target": TablesInMemory({}, loses="attempts"),
    }
    monkeypatch.setattr(cli, "create_store", lambda url, **_: stores[url])

    status = cli.main(["db", "copy", "source", "target"])

    assert status == 1
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == "relay: db copy: counts differ in attempts"
    assert ["attempts", "1", "0"] in [line.split() for line in out.splitlines()]
