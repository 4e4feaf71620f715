"""Relays of two tenants in real processes, a Quivo stand-in each, on SQLite or PostgreSQL, for tests."""

import json
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos.harness import TAG, Sim, http_call, relay_env, wait_for
from tests.forwarding import rating_webhook
from tests.pg_server import PostgresServer
from tests.processes import free_port, relay_process, run_relay, wait_until_ready

ACME, GLOBEX = "acme", "globex"
MERCHANTS = {ACME: 1001, GLOBEX: 2001}
TOKENS = {ACME: "acme-bringg-token-4b1e9c7d2a6f3085", GLOBEX: "globex-bringg-token-7e2a5d0c9b8f1463"}
ADMIN_TOKEN = "tenants-e2e-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def quivo_login(name: str) -> dict[str, str]:
    """The tenant's own Quivo login, by the stand-in's option names."""
    return {"api-key": f"{name}-key", "username": f"{name}-user", "password": f"{name}-pass"}


def tenant_table(name: str, sim: str) -> str:
    """One tenant's table: its merchant, its Bringg token, and its own stand-in with its own login."""
    login = quivo_login(name)
    return f"""
[tenants.{name}]
merchants = [{MERCHANTS[name]}]
[tenants.{name}.bringg]
webhook_tokens = ["{TOKENS[name]}"]
[tenants.{name}.quivo]
base_url = "{sim}"
api_key = "{login["api-key"]}"
username = "{login["username"]}"
password = "{login["password"]}"
"""


@dataclass
class Relay:
    """The relay's processes on one database, its tenants file, and a stand-in for each tenant."""

    url: str
    env: dict[str, str]
    cwd: Path
    sims: dict[str, Sim]
    processes: list[subprocess.Popen[str]]
    log_paths: list[Path]

    @property
    def tenants_file(self) -> Path:
        return Path(self.env["RELAY_TENANTS_FILE"])

    def write_tenants(self, names: Sequence[str], extra: str = "") -> None:
        """The tenants file of these tenants (and `extra` text), as an operator writes it: it holds
        secrets, so its owner alone may read it."""
        text = "".join(tenant_table(name, self.sims[name].url) for name in names) + extra
        self.tenants_file.write_text(text, encoding="utf-8")
        self.tenants_file.chmod(0o600)

    def post(self, tenant: str, rating_id: int, *, merchant: str = "", token: str = "") -> Any:
        body = rating_webhook(rating_id, f"INQ-{rating_id}", merchant_id=MERCHANTS[merchant or tenant])
        headers = {"Authorization": f"Bearer {token or TOKENS[tenant]}"}
        return http_call("POST", f"{self.url}/webhooks/bringg/{tenant}", body, headers)

    def post_all(self, tenant: str, rating_ids: range) -> None:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda rating_id: self.post(tenant, rating_id), rating_ids))
        assert [status for status, _, _ in answers] == [202] * len(rating_ids), answers

    def landed(self, tenant: str) -> Counter[tuple[int, int]]:
        """(merchant, rating id) of every rating on the tenant's stand-in, counted."""
        found: Counter[tuple[int, int]] = Counter()
        for record in self.sims[tenant].ratings():
            tag = TAG.search(record["message"])
            assert tag is not None, record
            found[(int(tag[1]), int(tag[2]))] += 1
        return found

    def status(self) -> dict[str, Any]:
        result = run_relay("status", "--json", env=self.env, cwd=self.cwd)
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def events(self, name: str) -> list[list[dict[str, Any]]]:
        """Each process's JSON log lines of that event, process by process."""
        found = []
        for path in self.log_paths:
            lines = [line for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]
            found.append([event for event in map(json.loads, lines) if event.get("event") == name])
        return found

    def reload(self, expected_event: str) -> None:
        """SIGHUP to every process; until each logged `expected_event` once more than before."""
        before = [len(found) for found in self.events(expected_event)]
        for process in self.processes:
            process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: [len(found) for found in self.events(expected_event)] == [n + 1 for n in before],
            20,
            f"{expected_event} in every process",
        )


@contextmanager
def two_tenant_relay(
    backend: str, cwd: Path, postgres_server: Callable[[], PostgresServer], tenants: Sequence[str]
) -> Iterator[Relay]:
    """SQLite: `relay serve`. PostgreSQL: `relay serve --no-worker` beside `relay worker`. A stand-in for
    each of acme and globex, each with its own login; the file starts with `tenants` only."""
    with ExitStack() as stack:
        if backend == "sqlite":
            database_url = f"sqlite:///{cwd / 'relay.db'}"
        else:
            server = postgres_server()
            database = server.create_database()
            stack.callback(server.drop_database, database)
            database_url = server.url(database)
        sims = {
            name: stack.enter_context(
                Sim.running(cwd, *(f"--{option}={value}" for option, value in quivo_login(name).items()))
            )
            for name in (ACME, GLOBEX)
        }
        port = free_port()
        env = relay_env(
            cwd,
            "http://127.0.0.1:9",  # no tenant uses the environment's account
            port,
            DATABASE_URL=database_url,
            RELAY_TENANTS_FILE=str(cwd / "tenants.toml"),
            RELAY_ADMIN_TOKEN=ADMIN_TOKEN,
        )
        roles = [("serve",)] if backend == "sqlite" else [("serve", "--no-worker"), ("worker",)]
        log_paths = [cwd / f"{'-'.join(role)}.log" for role in roles]
        relay = Relay(f"http://127.0.0.1:{port}", env, cwd, sims, [], log_paths)
        relay.write_tenants(tenants)
        relay.processes = [
            stack.enter_context(relay_process(*role, env=env, cwd=cwd, log_path=path))
            for role, path in zip(roles, log_paths, strict=True)
        ]
        wait_until_ready(f"{relay.url}/readyz?scope=intake", relay.processes[0])
        wait_for(lambda: len(relay.status()["workers"]) == 1, 30, "the worker live")
        yield relay
        for process in relay.processes:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=30) for process in relay.processes] == [0] * len(relay.processes)
