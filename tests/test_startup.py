"""Relay processes on one SQLite file: started together, refused on an unusable file, quiet when locked."""

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import pytest

from relay.store import create_store
from relay.store.sqlite.migrations import known_migrations
from tests.conftest import AUTH, WEBHOOK_TOKEN
from tests.forwarding import rating_webhook
from tests.processes import free_port, relay_process, run_relay, wait_for, wait_until_ready
from tests.test_docs import contract_events

# Enough rounds that processes meet on a new file's first moments again and again, in about 20 s.
ROUNDS = 8


def relay_env(folder: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{folder / 'relay.db'}",
        "RELAY_HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "BRINGG_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        # The worker needs Quivo settings to start; nothing here is ever delivered.
        "QUIVO_BASE_URL": "http://127.0.0.1:9",
        "QUIVO_API_KEY": "key",
        "QUIVO_USERNAME": "user",
        "QUIVO_PASSWORD": "password",
        **extra,
    }


def log_has(path: Path, event: str) -> bool:
    return path.exists() and f'"event": "{event}"' in path.read_text(errors="replace")


def started_or_exited(worker: subprocess.Popen[str], log_path: Path) -> bool:
    return worker.poll() is not None or log_has(log_path, "worker.started")


def holds_open(process: subprocess.Popen[str], file: Path) -> bool:
    """Whether the process has `file` open (it has connected to the database)."""
    if process.poll() is not None:
        return True  # exited: nothing more to wait for
    folder = Path(f"/proc/{process.pid}/fd")
    with_links = []
    for fd in folder.iterdir():
        try:
            with_links.append(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile
    return str(file) in with_links


# Starting together ---------------------------------------------------------------------------------


def test_a_start_waits_for_another_process_holding_the_new_file(tmp_path: Path):
    db = tmp_path / "relay.db"
    # Another relay process starting at the same moment, mid-way through its first write to the new file.
    peer = sqlite3.connect(db, isolation_level=None)
    peer.execute("BEGIN IMMEDIATE")
    peer.execute("CREATE TABLE being_made (x)")
    env = relay_env(tmp_path)
    with relay_process("migrate", env=env, cwd=tmp_path, log_path=tmp_path / "migrate.log") as migrate:
        wait_for(lambda: holds_open(migrate, db), "relay migrate connected")
        time.sleep(0.5)  # the peer's transaction lasts a moment (SQLite's busy timeout covers far longer)
        peer.execute("ROLLBACK")
        peer.close()
        assert migrate.wait(timeout=30) == 0, (tmp_path / "migrate.log").read_text()

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert applied == [migration.version for migration in known_migrations()]
    conn.close()


def test_web_worker_and_migrate_started_together_on_a_new_file_all_start(tmp_path: Path):
    for round_ in range(ROUNDS):
        folder = tmp_path / f"round-{round_}"
        folder.mkdir()
        env = relay_env(folder)
        logs = {name: folder / f"{name}.log" for name in ("web", "worker", "migrate")}
        with (
            relay_process("serve", "--no-worker", env=env, cwd=folder, log_path=logs["web"]) as web,
            relay_process("worker", env=env, cwd=folder, log_path=logs["worker"]) as worker,
            relay_process("migrate", env=env, cwd=folder, log_path=logs["migrate"]) as migrate,
        ):
            assert migrate.wait(timeout=30) == 0, logs["migrate"].read_text()
            wait_until_ready(f"http://127.0.0.1:{env['PORT']}/readyz?scope=intake", web, timeout=30)
            wait_for(partial(started_or_exited, worker, logs["worker"]), "worker started", timeout=30)
            assert worker.poll() is None, logs["worker"].read_text()
            for process in (web, worker):
                process.send_signal(signal.SIGTERM)
            assert (web.wait(timeout=30), worker.wait(timeout=30)) == (0, 0), round_


# An unusable database at start -----------------------------------------------------------------------


def migrated_database(folder: Path) -> Path:
    async def make() -> None:
        store = create_store(f"sqlite:///{folder / 'relay.db'}", timeout_s=5, pool_size=1)
        await store.open()
        await store.close()

    asyncio.run(make())
    return folder / "relay.db"


def read_only_file(tmp_path: Path) -> Path:
    db = migrated_database(tmp_path)
    db.chmod(0o444)
    return db


def unwritable_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "locked-folder"
    folder.mkdir(mode=0o555)
    return folder / "relay.db"


def folder_that_cannot_be_made(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path / "a-file" / "relay.db"


def not_a_database(tmp_path: Path) -> Path:
    db = tmp_path / "relay.db"
    db.write_text("id,name\n" * 200)
    return db


@pytest.mark.parametrize(
    "unusable", [read_only_file, unwritable_folder, folder_that_cannot_be_made, not_a_database]
)
def test_an_unusable_database_refuses_every_start_with_one_line_and_exit_2(tmp_path: Path, unusable):
    db = unusable(tmp_path)
    env = relay_env(tmp_path, DATABASE_URL=f"sqlite:///{db}")
    for command in (["serve"], ["worker"], ["status"]):
        done = run_relay(*command, env=env, cwd=tmp_path, honour_file_modes=True)

        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.splitlines() == [
            next(line for line in done.stderr.splitlines() if line.startswith("relay: configuration error:"))
        ], (command, done.stderr)
        assert f"DATABASE_URL: cannot use {db}: " in done.stderr
        for line in done.stdout.splitlines():  # the service's log lines stay JSON: jq reads them all
            assert json.loads(line)["level"] in ("info", "warning"), line


# A locked database --------------------------------------------------------------------------------


def test_a_command_reads_beside_another_process_holding_the_write_lock(tmp_path: Path):
    db = migrated_database(tmp_path)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # e.g. an open sqlite3 shell, as in runbook 5.5
    try:
        # Far longer than the run may take: a start that waited for the lock would time out.
        env = relay_env(tmp_path, RELAY_STORE_TIMEOUT_S="60")
        done = run_relay("status", "--json", env=env, cwd=tmp_path, timeout=30)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert done.returncode == 0, done.stderr
    assert "deliveries" in json.loads(done.stdout)


def post(port: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/bringg",
        data=rating_webhook(int(time.monotonic_ns() % 10**9), "ORDER-1"),
        headers=AUTH,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_locked_database_logs_only_contract_events_at_error_level(tmp_path: Path):
    env = relay_env(tmp_path, RELAY_STORE_TIMEOUT_S="0.3")
    log_path = tmp_path / "relay.log"
    with relay_process("serve", env=env, cwd=tmp_path, log_path=log_path) as relay:
        wait_until_ready(f"http://127.0.0.1:{env['PORT']}/readyz?scope=intake", relay)
        holder = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # held past RELAY_STORE_TIMEOUT_S
        answers = [post(env["PORT"]) for _ in range(3)]
        wait_for(lambda: log_has(log_path, "store.commit_failed"), "a commit failed on the lock")
        holder.execute("ROLLBACK")
        holder.close()
        assert post(env["PORT"]) == 202  # the next batch: the one before it is gone from memory
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=30) == 0

    assert set(answers) == {503}
    text = log_path.read_text()
    assert "never retrieved" not in text
    contract = set(contract_events())
    errors = [json.loads(line) for line in text.splitlines() if '"level": "error"' in line]
    assert errors, "the locked database logged no error"
    assert {line["event"] for line in errors} <= contract, errors
    assert all(line.startswith("{") for line in text.splitlines()), text


@pytest.mark.parametrize("port", ["notaport", "99999"])
def test_a_postgresql_url_with_a_bad_port_refuses_the_start_with_one_line_and_no_password(
    tmp_path: Path, port: str
):
    env = relay_env(tmp_path, DATABASE_URL=f"postgresql://relay:s3cret-pw@db.internal:{port}/relay")
    for command in (["serve"], ["migrate"]):
        done = run_relay(*command, env=env, cwd=tmp_path)

        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.splitlines() == [
            "relay: configuration error: DATABASE_URL: "
            "the port after the host must be a number from 0 to 65535"
        ], (command, done.stderr)
        assert "s3cret-pw" not in done.stdout + done.stderr
