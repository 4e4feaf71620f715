"""A long order id from a sender cannot stall a real relay, neither at intake nor stored from before."""

import contextlib
import json
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import relay_env
from tests.conftest import AUTH
from tests.forwarding import query, rating_webhook
from tests.processes import (
    free_port,
    http_json,
    relay_process,
    run_relay,
    sim_quivo_process,
    wait_until_ready,
)

# The natural pattern: quadratic in the id's length when the id ends in something else.
PATTERN = r"(\d+)$"
# Far longer than a stall worth noticing, far shorter than the seconds a 60,000-digit search took.
HEALTHZ_TIMEOUT_S = 5


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=HEALTHZ_TIMEOUT_S) as answer:
        return int(answer.status)


def logged_unmatched(log_path: Path) -> set[int]:
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return {line["delivery_id"] for line in lines if line.get("event") == "delivery.unmatched"}


def wait_until_unmatched(port: int, log_path: Path, delivery_ids: set[int], timeout: float = 30) -> None:
    """Until the worker has logged each delivery unmatched; /healthz must answer at every look meanwhile."""
    deadline = time.monotonic() + timeout
    while not delivery_ids <= logged_unmatched(log_path):
        assert healthz(port) == 200
        if time.monotonic() > deadline:
            raise TimeoutError(f"deliveries {delivery_ids} not all unmatched within {timeout}s")
        time.sleep(0.02)
    assert healthz(port) == 200


def post_webhook(port: int, body: bytes) -> dict[str, Any]:
    answer: dict[str, Any] = http_json("POST", f"http://127.0.0.1:{port}/webhooks/bringg", body, AUTH)
    return answer


def test_a_60000_digit_order_id_is_quarantined_and_the_relay_stays_responsive(tmp_path: Path):
    with sim_quivo_process(cwd=tmp_path) as sim:
        port = free_port()
        env = relay_env(tmp_path, sim, port, RELAY_INQUIRY_ID_PATTERN=PATTERN)
        log_path = tmp_path / "relay.log"
        with relay_process("serve", env=env, cwd=tmp_path, log_path=log_path) as relay:
            wait_until_ready(f"http://127.0.0.1:{port}/healthz", relay)

            hostile = post_webhook(port, rating_webhook(1, "1" * 60_000 + "x"))
            ordinary = post_webhook(port, rating_webhook(2, "ORD-X"))

            assert hostile["status"] == "quarantined"
            assert hostile["errors"] == [
                "rating.task.external_id: 60001 characters, an order id has at most 200"
            ]
            assert ordinary["status"] == "accepted"
            wait_until_unmatched(port, log_path, {ordinary["delivery_id"]})
    assert query(tmp_path / "relay.db", "SELECT COUNT(*) AS n FROM deliveries")[0]["n"] == 1


def test_an_oversized_order_id_stored_before_does_not_stall_the_start_pass(tmp_path: Path):
    db = tmp_path / "relay.db"
    with sim_quivo_process(cwd=tmp_path) as sim:
        port = free_port()
        env = relay_env(tmp_path, sim, port, RELAY_INQUIRY_ID_PATTERN=PATTERN)
        first_log = tmp_path / "first.log"
        with relay_process("serve", env=env, cwd=tmp_path, log_path=first_log) as first:
            wait_until_ready(f"http://127.0.0.1:{port}/healthz", first)
            ids = {post_webhook(port, rating_webhook(n, f"ORD-{n}x"))["delivery_id"] for n in (1, 2)}
            wait_until_unmatched(port, first_log, ids)
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=20) == 0

        # As a release without the intake bound would have stored it: far past what a start could search.
        oversized = min(ids)
        external_id = "1" * 300_000 + "x"
        rating = json.loads(query(db, "SELECT rating FROM deliveries WHERE id = ?", oversized)[0]["rating"])
        with_long_id = json.dumps({**rating, "external_id": external_id})
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(
                "UPDATE deliveries SET external_id = ?, rating = ? WHERE id = ?",
                (external_id, with_long_id, oversized),
            )

        second_log = tmp_path / "second.log"
        with relay_process("serve", env=env, cwd=tmp_path, log_path=second_log) as second:
            wait_until_ready(f"http://127.0.0.1:{port}/healthz", second)
            wait_until_unmatched(port, second_log, ids)


def test_a_pattern_that_backtracks_wildly_is_refused_at_start_with_one_line(tmp_path: Path):
    env = {
        "BRINGG_WEBHOOK_TOKEN": AUTH["Authorization"].removeprefix("Bearer "),
        "RELAY_INQUIRY_ID_PATTERN": r"(?:0-|0|-)*(\d)$",
    }
    result = run_relay("serve", "--no-worker", env=env, cwd=tmp_path)

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("relay: configuration error: RELAY_INQUIRY_ID_PATTERN: too slow: one search of a ")
    assert line.endswith("and adjacent repeats, such as \\d+\\d+")


@pytest.mark.parametrize(
    "pattern",
    # Slow on a run of two characters ending in one they refuse: `"0-" * 27 + "!"` stalled /healthz 6 s.
    [r"^((?:\d\-)+)+$", r"((ab)+)+$", r"(?:a+b|ab+)+(\d+)$", r"(\d+)+$"],
)
def test_a_pattern_with_nested_repeats_is_refused_at_start_with_one_line(tmp_path: Path, pattern: str):
    env = {
        "BRINGG_WEBHOOK_TOKEN": AUTH["Authorization"].removeprefix("Bearer "),
        "RELAY_INQUIRY_ID_PATTERN": pattern,
    }
    result = run_relay("serve", "--no-worker", env=env, cwd=tmp_path)

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("relay: configuration error: RELAY_INQUIRY_ID_PATTERN: nested repeats: ")
    assert "repeat once instead" in line


@pytest.mark.parametrize("pattern", [r"(\d+)$", r"INQ-(\d+)", r"^(?:ORD|INQ)-(?P<inquiry_id>\d+)(?:-\d+)?$"])
def test_patterns_operators_write_start(tmp_path: Path, pattern: str):
    port = free_port()
    env = {
        "BRINGG_WEBHOOK_TOKEN": AUTH["Authorization"].removeprefix("Bearer "),
        "RELAY_INQUIRY_ID_PATTERN": pattern,
        "PORT": str(port),
    }
    with relay_process(
        "serve", "--no-worker", env=env, cwd=tmp_path, log_path=tmp_path / "relay.log"
    ) as relay:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", relay)
