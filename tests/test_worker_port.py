"""Relay processes listening: the worker probed and scraped on its own port; a taken port refused."""

import json
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.harness import relay_env
from tests.conftest import AUTH
from tests.forwarding import rating_webhook
from tests.processes import (
    free_port,
    http_json,
    relay_process,
    run_relay,
    sim_quivo_process,
    wait_until_ready,
)

DELIVERED = 'relay_delivery_outcomes_total{outcome="delivered",tenant="default"}'


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def sample(metrics: str, series: str) -> float:
    """The value of one series in a Prometheus text exposition; 0 when absent."""
    found = re.search(rf"^{re.escape(series)} (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_worker_answers_probes_and_its_metrics_move_with_the_ratings_it_delivers(tmp_path: Path):
    with sim_quivo_process(cwd=tmp_path) as sim:
        web_port, worker_port = free_port(), free_port()
        env = relay_env(
            tmp_path, sim, web_port, RELAY_WORKER_HOST="127.0.0.1", RELAY_WORKER_PORT=str(worker_port)
        )
        worker_url = f"http://127.0.0.1:{worker_port}"
        with (
            relay_process(
                "serve", "--no-worker", env=env, cwd=tmp_path, log_path=tmp_path / "web.log"
            ) as web,
            relay_process("worker", env=env, cwd=tmp_path, log_path=tmp_path / "worker.log") as worker,
        ):
            wait_until_ready(f"http://127.0.0.1:{web_port}/readyz?scope=intake", web)
            wait_until_ready(f"{worker_url}/healthz", worker)
            assert get(f"{worker_url}/healthz") == (200, '{"status": "ok"}')
            wait_until_ready(f"{worker_url}/readyz", worker)
            # A worker process takes no webhooks and holds no admin API.
            assert get(f"{worker_url}/webhooks/bringg")[0] == 404
            assert get(f"{worker_url}/admin/deliveries")[0] == 404

            before = get(f"{worker_url}/metrics")[1]
            assert sample(before, DELIVERED) == 0
            http_json(
                "POST", f"http://127.0.0.1:{web_port}/webhooks/bringg", rating_webhook(1, "INQ-7"), AUTH
            )

            def delivered() -> bool:
                return sample(get(f"{worker_url}/metrics")[1], DELIVERED) == 1

            wait_for(delivered, "the worker's metrics counting the delivery")
            after = get(f"{worker_url}/metrics")[1]
            assert sample(after, "relay_delivery_latency_seconds_count") == 1
            post_rating = 'relay_quivo_requests_total{action="post_rating",status="200",tenant="default"}'
            assert sample(after, post_rating) == 1
            # The store gauges are read at most once a second: the scrape before the delivery may still show.
            wait_for(
                lambda: sample(get(f"{worker_url}/metrics")[1], 'relay_deliveries{state="delivered"}') == 1,
                "the worker's store gauges counting the delivered row",
            )
            # The web process delivered nothing: its counters stay where they began.
            web_metrics = get(f"http://127.0.0.1:{web_port}/metrics")[1]
            assert sample(web_metrics, DELIVERED) == 0

            for process in (web, worker):
                process.send_signal(signal.SIGTERM)
            assert (web.wait(timeout=20), worker.wait(timeout=20)) == (0, 0)
        assert http_json("GET", f"{sim}/_sim/ratings")["count"] == 1


@pytest.mark.parametrize(
    ("command", "host", "port"),
    [(("worker",), "RELAY_WORKER_HOST", "RELAY_WORKER_PORT"), (("serve",), "RELAY_HOST", "PORT")],
)
def test_a_taken_port_refuses_the_start_with_one_line(
    tmp_path: Path, command: tuple[str, ...], host: str, port: str
):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = str(holder.getsockname()[1])
        env = relay_env(tmp_path, "http://127.0.0.1:9", free_port(), **{host: "127.0.0.1", port: taken})
        result = run_relay(*command, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"relay: configuration error: {port}: cannot listen: Address already in use"
    ]
    # Refused before it did anything: no log line, no database, no delivery.
    assert result.stdout == ""
    assert not (tmp_path / "relay.db").exists()


def test_an_unknown_host_refuses_the_start_with_one_line(tmp_path: Path):
    env = relay_env(tmp_path, "http://127.0.0.1:9", free_port(), RELAY_WORKER_HOST="no-such-host.invalid")
    result = run_relay("worker", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("relay: configuration error: RELAY_WORKER_HOST: cannot resolve it: ")


def test_worker_readyz_says_whether_this_worker_can_deliver(tmp_path: Path):
    with sim_quivo_process(cwd=tmp_path) as sim:
        web_port, worker_port = free_port(), free_port()
        env = relay_env(
            tmp_path,
            sim,
            web_port,
            QUIVO_PASSWORD="not-the-password",
            RELAY_WORKER_HOST="127.0.0.1",
            RELAY_WORKER_PORT=str(worker_port),
        )
        worker_url = f"http://127.0.0.1:{worker_port}"
        with (
            relay_process(
                "serve", "--no-worker", env=env, cwd=tmp_path, log_path=tmp_path / "web.log"
            ) as web,
            relay_process("worker", env=env, cwd=tmp_path, log_path=tmp_path / "worker.log") as worker,
        ):
            wait_until_ready(f"http://127.0.0.1:{web_port}/readyz?scope=intake", web)
            wait_until_ready(f"{worker_url}/readyz", worker)
            http_json(
                "POST", f"http://127.0.0.1:{web_port}/webhooks/bringg", rating_webhook(1, "INQ-7"), AUTH
            )

            wait_for(
                lambda: get(f"{worker_url}/readyz")[0] == 503, "the worker unready once Quivo refuses it"
            )
            body = get(f"{worker_url}/readyz")[1]
            assert json.loads(body) == {
                "status": "unavailable",
                "problems": ["deliveries paused: Quivo refused the credentials, 401"],
            }
            assert get(f"{worker_url}/healthz")[0] == 200  # alive all the same: restarting it would not help
