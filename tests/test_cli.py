"""The `relay` command as an operator runs it: start-up checks, migrate, serve, and a clean SIGTERM."""

import json
import signal
import sqlite3
import urllib.request
from pathlib import Path

from relay.store.sqlite.migrations import LATEST_VERSION
from tests.conftest import WEBHOOK_TOKEN, fixture_bytes
from tests.processes import free_port, relay_process, run_relay, wait_until_ready


def test_misconfigured_start_exits_2_with_one_line_per_problem(tmp_path: Path):
    result = run_relay(
        "serve", "--no-worker", env={"PORT": "eighty", "RELAY_MAX_BODY_BYTES": "10"}, cwd=tmp_path
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("relay: configuration error: PORT:")
    assert lines[1].startswith("relay: configuration error: RELAY_MAX_BODY_BYTES:")


def test_start_without_any_webhook_authentication_is_refused(tmp_path: Path):
    result = run_relay("serve", "--no-worker", env={"BRINGG_OAUTH_CLIENT_ID": "only-the-id"}, cwd=tmp_path)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert "BRINGG_OAUTH_CLIENT_ID and BRINGG_OAUTH_CLIENT_SECRET" in lines[0]
    assert "set at least one webhook authentication method" in lines[1]


def test_worker_needs_quivo_credentials_but_not_webhook_auth(tmp_path: Path):
    result = run_relay("worker", env={"QUIVO_USERNAME": "relay"}, cwd=tmp_path)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ")[2] for line in lines] == ["QUIVO_API_KEY", "QUIVO_PASSWORD"]


def test_secret_values_never_appear_in_configuration_errors(tmp_path: Path):
    result = run_relay("serve", env={"BRINGG_WEBHOOK_TOKEN": "hunter2-secret", "PORT": "x"}, cwd=tmp_path)

    assert result.returncode == 2
    assert "hunter2-secret" not in result.stderr + result.stdout


def test_a_database_password_never_reaches_the_lines_a_start_writes(tmp_path: Path):
    # Nothing listens on port 9: the start fails, after saying where the store is, by its location.
    url = "postgresql://relay:pg-secret-0451@127.0.0.1:9/relay"
    env = {"DATABASE_URL": url, "BRINGG_WEBHOOK_TOKEN": WEBHOOK_TOKEN, "PORT": str(free_port())}
    result = run_relay("serve", "--no-worker", env=env, cwd=tmp_path)

    assert result.returncode != 0
    assert "pg-secret-0451" not in result.stdout + result.stderr


def test_migrate_creates_the_default_database_and_is_idempotent(tmp_path: Path):
    first = run_relay("migrate", env={}, cwd=tmp_path)
    second = run_relay("migrate", env={}, cwd=tmp_path)

    assert (first.returncode, second.returncode) == (0, 0)
    conn = sqlite3.connect(tmp_path / "var" / "relay.db")
    assert [row[0] for row in conn.execute("SELECT version FROM schema_migrations")] == [
        *range(1, LATEST_VERSION + 1)
    ]
    conn.close()
    assert json.loads(second.stdout.splitlines()[-1])["event"] == "relay.migrated"


def test_serve_takes_a_webhook_logs_it_without_secrets_and_stops_cleanly_on_sigterm(tmp_path: Path):
    port = free_port()
    env = {"PORT": str(port), "RELAY_HOST": "127.0.0.1", "BRINGG_WEBHOOK_TOKEN": WEBHOOK_TOKEN}
    log_path = tmp_path / "relay.log"
    with relay_process("serve", "--no-worker", env=env, cwd=tmp_path, log_path=log_path) as process:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz?scope=intake", process)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhooks/bringg",
            data=fixture_bytes("bringg/rating_submitted.json"),
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "X-Request-ID": "req-42"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 202
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0

    text = log_path.read_text()
    assert WEBHOOK_TOKEN not in text
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    accepted = [event for event in events if event["event"] == "webhook.accepted"]
    assert len(accepted) == 1
    line = accepted[0]
    assert (line["request_id"], line["merchant_id"], line["rating_id"], line["outcome"]) == (
        "req-42",
        1,
        3452,
        "accepted",
    )
    assert line["duration_ms"] >= 0
    assert all("timestamp" in event and "level" in event for event in events)


def test_auth_none_warns_at_every_start(tmp_path: Path):
    port = free_port()
    env = {"PORT": str(port), "RELAY_HOST": "127.0.0.1", "BRINGG_AUTH": "none"}
    log_path = tmp_path / "relay.log"
    with relay_process("serve", "--no-worker", env=env, cwd=tmp_path, log_path=log_path) as process:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", process)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)

    warnings = [
        json.loads(line) for line in log_path.read_text().splitlines() if "relay.auth_disabled" in line
    ]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
