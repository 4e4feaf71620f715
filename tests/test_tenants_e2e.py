"""Two tenants through real processes, each onto its own Quivo stand-in, on SQLite and PostgreSQL."""

import json
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import TAG, Sim, http_call, relay_env, wait_for
from tests.conftest import BACKENDS
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


def write_tenants_file(path: Path, text: str) -> Path:
    """As an operator writes it: it holds secrets, so its owner alone may read it."""
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class Relay:
    """The relay's processes on one database, two tenants, a stand-in each."""

    url: str
    env: dict[str, str]
    cwd: Path
    sims: dict[str, Sim]
    processes: list[subprocess.Popen[str]]

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


@pytest.fixture(scope="module", params=BACKENDS)
def relay(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """SQLite: `relay serve`. PostgreSQL: `relay serve --no-worker` beside `relay worker`."""
    backend: str = request.param
    cwd = tmp_path_factory.mktemp(f"tenants-{backend}")
    with ExitStack() as stack:
        if backend == "sqlite":
            database_url = f"sqlite:///{cwd / 'relay.db'}"
        else:
            server: PostgresServer = request.getfixturevalue("postgres_server")
            database = server.create_database()
            stack.callback(server.drop_database, database)
            database_url = server.url(database)
        sims = {
            name: stack.enter_context(
                Sim.running(cwd, *(f"--{option}={value}" for option, value in quivo_login(name).items()))
            )
            for name in (ACME, GLOBEX)
        }
        tenants = write_tenants_file(
            cwd / "tenants.toml", "".join(tenant_table(name, sim.url) for name, sim in sims.items())
        )
        port = free_port()
        env = relay_env(
            cwd,
            "http://127.0.0.1:9",  # no tenant uses the environment's account
            port,
            DATABASE_URL=database_url,
            RELAY_TENANTS_FILE=str(tenants),
            RELAY_ADMIN_TOKEN=ADMIN_TOKEN,
        )
        roles = [("serve",)] if backend == "sqlite" else [("serve", "--no-worker"), ("worker",)]
        processes = [
            stack.enter_context(
                relay_process(*role, env=env, cwd=cwd, log_path=cwd / f"{'-'.join(role)}.log")
            )
            for role in roles
        ]
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/readyz?scope=intake", processes[0])
        relay = Relay(url, env, cwd, sims, processes)
        wait_for(lambda: len(relay.status()["workers"]) == 1, 30, "the worker live")
        yield relay
        for process in processes:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=30) for process in processes] == [0] * len(processes)


def test_each_tenants_ratings_land_on_its_own_quivo_only_and_once(relay: Relay) -> None:
    relay.post_all(ACME, range(100, 110))
    relay.post_all(GLOBEX, range(200, 210))

    def expected(tenant: str, ids: range) -> Counter[tuple[int, int]]:
        return Counter({(MERCHANTS[tenant], rating_id): 1 for rating_id in ids})

    wait_for(lambda: sum(relay.landed(ACME).values()) >= 10, 30, "acme's ratings on acme's stand-in")
    wait_for(lambda: sum(relay.landed(GLOBEX).values()) >= 10, 30, "globex's ratings on globex's stand-in")
    assert relay.landed(ACME) == expected(ACME, range(100, 110))
    assert relay.landed(GLOBEX) == expected(GLOBEX, range(200, 210))


def test_a_credential_of_one_tenant_gets_401_on_anothers_url(relay: Relay) -> None:
    assert relay.post(GLOBEX, 300, token=TOKENS[ACME])[0] == 401
    assert relay.post(ACME, 300, token=TOKENS[GLOBEX])[0] == 401


def test_a_foreign_merchant_is_quarantined_and_never_sent(relay: Relay) -> None:
    status, _, answer = relay.post(ACME, 400, merchant=GLOBEX)

    assert (status, answer["status"]) == (202, "quarantined")
    assert answer["errors"] == [f"merchant {MERCHANTS[GLOBEX]} is not one of tenant acme's merchants"]
    listing = http_call("GET", f"{relay.url}/admin/webhooks?status=quarantined", headers=ADMIN)[2]
    assert [(item["id"], item["tenant"]) for item in listing["items"]] == [(answer["id"], ACME)]
    # Neither stand-in ever sees rating 400, while the tenant goes on delivering.
    relay.post_all(GLOBEX, range(401, 402))
    wait_for(lambda: (MERCHANTS[GLOBEX], 401) in relay.landed(GLOBEX), 30, "a later rating delivered")
    assert all(rating_id != 400 for _, rating_id in relay.landed(ACME) + relay.landed(GLOBEX))


def test_one_tenants_refused_credentials_pause_that_tenant_only(relay: Relay) -> None:
    acme = relay.sims[ACME]
    acme.faults(reject_credentials=True)
    acme.expire_tokens()
    try:
        relay.post_all(ACME, range(500, 505))
        wait_for(lambda: paused(relay) is not None, 30, "acme paused")
        relay.post_all(GLOBEX, range(600, 610))

        wait_for(lambda: sum(1 for key in relay.landed(GLOBEX) if key[1] >= 600) == 10, 30, "globex lands")
        reason = paused(relay)
        assert reason is not None and ACME in reason and GLOBEX not in reason, reason
        assert not any(rating_id >= 500 for _, rating_id in relay.landed(ACME))
    finally:
        acme.faults(reject_credentials=False)

    wait_for(lambda: sum(1 for key in relay.landed(ACME) if key[1] >= 500) == 5, 40, "acme lands again")
    assert set((relay.landed(ACME) + relay.landed(GLOBEX)).values()) == {1}
    wait_for(lambda: paused(relay) is None, 30, "the pause lifted")


def paused(relay: Relay) -> str | None:
    """What `relay status` says the worker holds back, and for which tenant."""
    (worker,) = relay.status()["workers"]
    reason: str | None = worker["paused"]
    return reason
