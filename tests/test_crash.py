"""Real relay processes killed and stopped mid-send: nothing acknowledged is lost, nothing sent twice."""

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import relay_env
from tests.conftest import AUTH, BACKENDS
from tests.forwarding import all_deliveries, delivery_of, on_store, rating_webhook
from tests.processes import free_port, http_json, relay_process, sim_quivo_process, wait_until_ready

# A lease that runs out, a restart that reconciles and a split deployment are the store's to get right.
pytestmark = pytest.mark.backends(*BACKENDS)


def wait_for(predicate, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


def states(url: str) -> dict[int, str]:
    return {row.id: row.state for row in on_store(url, all_deliveries)}


def sim_stats(sim: str) -> dict[str, Any]:
    return http_json("GET", f"{sim}/_sim/stats")


def post_webhook(port: int, body: bytes) -> dict[str, Any]:
    return http_json("POST", f"http://127.0.0.1:{port}/webhooks/bringg", body, AUTH)


def test_relay_killed_mid_send_reconciles_after_restart_without_a_second_rating(
    tmp_path: Path, database_url: str
):
    db = database_url
    with sim_quivo_process("--latency-ms", "700", cwd=tmp_path) as sim:
        port = free_port()
        # A short timeout makes the lease (3 x timeout + 5 s) short enough for a test.
        env = relay_env(tmp_path, sim, port, DATABASE_URL=database_url, QUIVO_TIMEOUT_S="1")
        with relay_process("serve", env=env, cwd=tmp_path, log_path=tmp_path / "first.log") as first:
            wait_until_ready(f"http://127.0.0.1:{port}/readyz", first)
            warm_up = post_webhook(port, rating_webhook(4, "INQ-44"))  # logs in, so the next send is the POST
            wait_for(lambda: states(db).get(warm_up["delivery_id"]) == "delivered", what="first delivery")
            accepted = post_webhook(port, rating_webhook(5, "INQ-55"))
            wait_for(lambda: states(db).get(accepted["delivery_id"]) == "sending", what="send under way")
            wait_for(
                lambda: sim_stats(sim)["rating_posts_open"] == 1,
                what="the POST inside the stand-in's latency",
            )
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        wait_for(lambda: http_json("GET", f"{sim}/_sim/ratings")["count"] == 2, what="stand-in commit")
        assert states(db)[accepted["delivery_id"]] == "sending"

        with relay_process("serve", env=env, cwd=tmp_path, log_path=tmp_path / "second.log") as second:
            wait_until_ready(f"http://127.0.0.1:{port}/readyz", second)
            wait_for(lambda: states(db)[accepted["delivery_id"]] == "delivered", what="reconciled delivery")
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=20) == 0

        assert http_json("GET", f"{sim}/_sim/ratings")["count"] == 2
    detail = on_store(db, lambda store: delivery_of(store, accepted["delivery_id"]))
    assert [call.action for call in detail.attempts] == ["reconcile"]
    assert '"event": "delivery.reconciled"' in (tmp_path / "second.log").read_text()


def test_sigterm_lets_sends_in_flight_finish_and_exits_0(tmp_path: Path, database_url: str):
    db = database_url
    with sim_quivo_process("--latency-ms", "500", cwd=tmp_path) as sim:
        port = free_port()
        env = relay_env(tmp_path, sim, port, DATABASE_URL=database_url, RELAY_SHUTDOWN_GRACE_S="5")
        with relay_process("serve", env=env, cwd=tmp_path, log_path=tmp_path / "relay.log") as relay:
            wait_until_ready(f"http://127.0.0.1:{port}/readyz", relay)
            ids = [post_webhook(port, rating_webhook(n, f"INQ-{n}"))["delivery_id"] for n in range(1, 4)]
            wait_for(lambda: list(states(db).values()).count("sending") == 3, what="three sends under way")
            relay.send_signal(signal.SIGTERM)
            assert relay.wait(timeout=20) == 0

        assert {states(db)[delivery_id] for delivery_id in ids} == {"delivered"}
        assert http_json("GET", f"{sim}/_sim/ratings")["count"] == 3


def test_split_web_and_worker_processes_share_one_database(tmp_path: Path, database_url: str):
    db = database_url
    with sim_quivo_process(cwd=tmp_path) as sim:
        port = free_port()
        env = relay_env(tmp_path, sim, port, DATABASE_URL=database_url)
        with (
            relay_process(
                "serve", "--no-worker", env=env, cwd=tmp_path, log_path=tmp_path / "web.log"
            ) as web,
            relay_process("worker", env=env, cwd=tmp_path, log_path=tmp_path / "worker.log") as worker,
        ):
            wait_until_ready(f"http://127.0.0.1:{port}/readyz?scope=intake", web)
            ids = [post_webhook(port, rating_webhook(n, f"INQ-{n}"))["delivery_id"] for n in range(1, 6)]
            wait_for(lambda: {states(db)[i] for i in ids} == {"delivered"}, what="deliveries by the worker")
            for process in (web, worker):
                process.send_signal(signal.SIGTERM)
            assert (web.wait(timeout=20), worker.wait(timeout=20)) == (0, 0)

        assert http_json("GET", f"{sim}/_sim/ratings")["count"] == 5
    assert "delivery.delivered" in (tmp_path / "worker.log").read_text()
    assert "delivery.delivered" not in (tmp_path / "web.log").read_text()
