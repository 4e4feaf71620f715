"""Tenants for operators, through the real CLI and admin API: filtered by tenant and shown with it."""

import json
import random
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.app import create_app
from relay.domain.delivery import DELIVERY_STATES
from relay.keys import SETTINGS, STORE
from relay.sim.app import create_sim_app
from relay.sim.state import SimState
from tests.conftest import BACKENDS
from tests.forwarding import Quivo, forwarding_settings, rating_webhook, wait_for_delivery
from tests.processes import run_relay
from tests.test_tenants_intake import (
    ACME_MERCHANT,
    ACME_TOKENS,
    GLOBEX_JWT_SECRET,
    GLOBEX_MERCHANT,
    TWO_TENANTS,
    bearer,
    rating_body,
    signed_jwt,
    tenants_file,
)

pytestmark = pytest.mark.backends(*BACKENDS)
Client = TestClient[web.Request, web.Application]

TOKEN = "admin-token-for-tenants-5e2a9c71"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def relay(aiohttp_client, make_settings, tmp_path) -> Client:
    settings = make_settings(relay_tenants_file=tenants_file(tmp_path, TWO_TENANTS), relay_admin_token=TOKEN)
    return await aiohttp_client(create_app(settings, run_worker=False))


async def rating_of(relay: Client, tenant: str, rating_id: int) -> int:
    """A webhook on the tenant's own URL with its own credential; the id of the delivery it made."""
    merchant, credential = {
        "acme": (ACME_MERCHANT, ACME_TOKENS[0]),
        "globex": (GLOBEX_MERCHANT, signed_jwt(GLOBEX_JWT_SECRET)),
    }[tenant]
    response = await relay.post(
        f"/webhooks/bringg/{tenant}", data=rating_body(merchant, rating_id), headers=bearer(credential)
    )
    answer = await response.json()
    assert response.status == 202, answer
    return int(answer["delivery_id"])


def cli(relay: Client, *args: str, tenants: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`relay ARGS` on the relay's database, as an operator runs it beside the relay (its tenants file,
    unless another is given)."""
    settings = relay.app[SETTINGS]
    tenants = tenants or settings.relay_tenants_file
    env = {"DATABASE_URL": settings.database_url, "RELAY_TENANTS_FILE": str(tenants)}
    return run_relay(*args, env=env, cwd=Path(str(tenants)).parent)


def cli_json(relay: Client, *args: str, tenants: Path | None = None) -> Any:
    result = cli(relay, *args, "--json", tenants=tenants)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def admin(relay: Client, method: str, path: str, **kwargs: Any) -> Any:
    headers = {**ADMIN, **kwargs.pop("headers", {})}
    response = await relay.request(method, path, headers=headers, **kwargs)
    answer = await response.json()
    assert response.status == 200, answer
    return answer


async def test_deliveries_and_webhooks_list_by_tenant_and_show_it(relay):
    acme = [await rating_of(relay, "acme", rating_id) for rating_id in (1, 2)]
    globex = await rating_of(relay, "globex", 3)

    listed = cli_json(relay, "deliveries", "list", "--tenant", "acme")
    table = cli(relay, "deliveries", "list", "--tenant", "globex")
    by_api = await admin(relay, "GET", "/admin/deliveries", params={"tenant": "globex"})
    webhooks = await admin(relay, "GET", "/admin/webhooks", params={"tenant": "acme"})
    nobody = await admin(relay, "GET", "/admin/deliveries", params={"tenant": "initech"})
    bad = await relay.get("/admin/deliveries", params={"tenant": "Not A Slug"}, headers=ADMIN)

    assert [(item["id"], item["tenant"]) for item in listed["items"]] == [
        (acme[1], "acme"),
        (acme[0], "acme"),
    ]
    header, *rows = [re.split(r"\s{2,}", line.strip()) for line in table.stdout.splitlines()]
    assert header[:3] == ["ID", "TENANT", "STATE"]
    assert [row[:2] for row in rows] == [[str(globex), "globex"]]
    assert [(item["id"], item["tenant"]) for item in by_api["items"]] == [(globex, "globex")]
    assert {item["tenant"] for item in webhooks["items"]} == {"acme"} and len(webhooks["items"]) == 2
    assert nobody["items"] == []
    assert (bad.status, (await bad.json())["field"]) == (400, "tenant")


async def test_replay_by_tenant_takes_only_that_tenants_deliveries(relay):
    acme = [await rating_of(relay, "acme", rating_id) for rating_id in (1, 2)]
    globex = [await rating_of(relay, "globex", rating_id) for rating_id in (3, 4)]
    for delivery_id in (*acme, *globex):
        await admin(relay, "POST", f"/admin/deliveries/{delivery_id}/cancel")

    by_cli = cli_json(relay, "replay", "--state", "dead", "--tenant", "acme")
    after_cli = await states(relay)
    by_api = await admin(relay, "POST", "/admin/deliveries/replay", params={"tenant": "globex"}, json={})

    assert by_cli["replayed"] == 2 and after_cli == {
        **dict.fromkeys(acme, "pending"),
        **dict.fromkeys(globex, "dead"),
    }
    assert by_api["replayed"] == 2 and await states(relay) == dict.fromkeys((*acme, *globex), "pending")


async def test_a_replay_body_and_query_naming_two_tenants_replays_nothing(relay):
    acme = await rating_of(relay, "acme", 1)
    await admin(relay, "POST", f"/admin/deliveries/{acme}/cancel")

    both = await admin(
        relay, "POST", "/admin/deliveries/replay", params={"tenant": "globex"}, json={"tenant": "acme"}
    )
    matching = await admin(
        relay, "POST", "/admin/deliveries/replay", params={"tenant": "acme"}, json={"tenant": "acme"}
    )

    assert (both["replayed"], matching["replayed"]) == (0, 1)


async def states(relay: Client) -> dict[int, str]:
    page = await admin(relay, "GET", "/admin/deliveries")
    return {item["id"]: item["state"] for item in page["items"]}


def by_state(**counts: int) -> dict[str, int]:
    return {state: counts.get(state, 0) for state in DELIVERY_STATES}


async def test_status_shows_each_tenants_deliveries_and_names_a_removed_tenant_whose_wait(
    relay, aiohttp_client, make_settings, tmp_path
):
    for rating_id in (1, 2):
        await rating_of(relay, "acme", rating_id)
    globex = await rating_of(relay, "globex", 3)
    await admin(relay, "POST", f"/admin/deliveries/{globex}/cancel")
    await rating_of(relay, "globex", 4)
    acme_only = tmp_path / "acme-only" / "tenants.toml"
    acme_only.parent.mkdir()
    acme_only.write_text(TWO_TENANTS.split("[tenants.globex]")[0], encoding="utf-8")
    acme_only.chmod(0o600)
    removed = await aiohttp_client(
        create_app(make_settings(relay_tenants_file=acme_only, relay_admin_token=TOKEN), run_worker=False)
    )

    both = cli(relay, "status")
    both_stats = await admin(relay, "GET", "/admin/stats")
    one = cli(removed, "status")
    one_document = cli_json(removed, "status")
    one_stats = await admin(removed, "GET", "/admin/stats")

    tenants = {"acme": by_state(pending=2), "globex": by_state(pending=1, dead=1)}
    assert both.returncode == 0, both.stderr
    lines = [re.split(r"\s{2,}", line.strip()) for line in both.stdout.splitlines()]
    header = lines.index(["TENANT", *(state.upper() for state in DELIVERY_STATES)])
    assert lines[header + 1 : header + 3] == [
        [name, *(str(tenants[name][state]) for state in DELIVERY_STATES)] for name in ("acme", "globex")
    ]
    assert "not configured" not in both.stdout
    assert (both_stats["tenants"], both_stats["tenants_not_configured"]) == (tenants, [])
    assert "tenant globex  1 waiting, tenant not configured" in one.stdout
    assert (one_document["tenants"], one_document["tenants_not_configured"]) == (tenants, ["globex"])
    assert (one_stats["tenants"], one_stats["tenants_not_configured"]) == (tenants, ["globex"])


# Links


def links_csv(folder: Path, name: str, rows: str) -> Path:
    path = folder / name
    path.write_text(rows, encoding="utf-8")
    return path


def refused(imported: subprocess.CompletedProcess[str]) -> list[str]:
    """The rows an import refused, by file and line (its progress line aside)."""
    return [line for line in imported.stderr.splitlines() if ".csv:" in line]


async def test_links_import_holds_each_row_to_its_tenant_and_export_filters_by_tenant(relay, tmp_path):
    mixed = links_csv(
        tmp_path,
        "mixed.csv",
        "merchant_id,external_id,inquiry_id,tenant\n"
        f"{ACME_MERCHANT},ORD-1,501,acme\n"
        f"{GLOBEX_MERCHANT},ORD-2,502,acme\n"
        f"{GLOBEX_MERCHANT},ORD-3,503,\n"
        "9999,ORD-4,504,\n",
    )
    plain = links_csv(
        tmp_path, "plain.csv", f"merchant_id,external_id,inquiry_id\n{ACME_MERCHANT},ORD-5,505\n"
    )

    imported = cli(relay, "links", "import", str(mixed))
    for_globex = cli(relay, "links", "import", str(plain), "--tenant", "globex")
    for_acme = cli(relay, "links", "import", str(plain), "--tenant", "acme")
    acme = cli(relay, "links", "export", "--tenant", "acme")
    everyone = cli(relay, "links", "export")
    unknown = cli(relay, "links", "export", "--tenant", "initech")

    assert imported.returncode == 1
    assert refused(imported) == [
        f"{mixed}:3: merchant {GLOBEX_MERCHANT} is not one of tenant acme's merchants",
        f"{mixed}:5: merchant 9999 is none of the tenants' merchants",
    ]
    assert "saved 2 links" in imported.stdout
    assert (for_globex.returncode, refused(for_globex)) == (
        1,
        [f"{plain}:2: merchant {ACME_MERCHANT} is not one of tenant globex's merchants"],
    )
    assert for_acme.returncode == 0, for_acme.stderr
    assert acme.stdout.splitlines() == [
        "merchant_id,external_id,inquiry_id,tenant",
        f"{ACME_MERCHANT},ORD-1,501,acme",
        f"{ACME_MERCHANT},ORD-5,505,acme",
    ]
    assert everyone.stdout.splitlines()[1:] == [
        f"{ACME_MERCHANT},ORD-1,501",
        f"{ACME_MERCHANT},ORD-5,505",
        f"{GLOBEX_MERCHANT},ORD-3,503",
    ]
    assert unknown.returncode == 2 and "initech" in unknown.stderr


async def test_admin_links_are_held_to_their_tenant_and_listed_by_tenant(relay):
    csv_rows = f"merchant_id,external_id,inquiry_id\n{ACME_MERCHANT},ORD-1,501\n{GLOBEX_MERCHANT},ORD-2,502\n"
    by_csv = await admin(
        relay,
        "POST",
        "/admin/links",
        params={"tenant": "acme"},
        data=csv_rows,
        headers={**ADMIN, "Content-Type": "text/csv"},
    )
    foreign = await relay.post(
        "/admin/links",
        json=[{"merchant_id": GLOBEX_MERCHANT, "external_id": "ORD-3", "inquiry_id": 503, "tenant": "acme"}],
        headers=ADMIN,
    )
    nobodys = await relay.put("/admin/links/9999/ORD-4", json={"inquiry_id": 504}, headers=ADMIN)
    wrong = await relay.put(
        f"/admin/links/{GLOBEX_MERCHANT}/ORD-5",
        params={"tenant": "acme"},
        json={"inquiry_id": 505},
        headers=ADMIN,
    )
    right = await admin(
        relay,
        "PUT",
        f"/admin/links/{GLOBEX_MERCHANT}/ORD-6",
        params={"tenant": "globex"},
        json={"inquiry_id": 506},
    )
    globex = await admin(relay, "GET", "/admin/links", params={"tenant": "globex"})
    acme = await admin(relay, "GET", "/admin/links", params={"tenant": "acme", "limit": 1})

    assert (by_csv["saved"], by_csv["problems"]) == (
        1,
        [{"line": 3, "reason": f"merchant {GLOBEX_MERCHANT} is not one of tenant acme's merchants"}],
    )
    assert (foreign.status, (await foreign.json())["detail"]) == (
        409,
        f"[0]: merchant {GLOBEX_MERCHANT} is not one of tenant acme's merchants",
    )
    assert (nobodys.status, (await nobodys.json())["detail"]) == (
        409,
        "merchant 9999 is none of the tenants' merchants",
    )
    assert wrong.status == 409 and right["inquiry_id"] == 506
    assert [item["external_id"] for item in globex["items"]] == ["ORD-6"]
    assert [item["external_id"] for item in acme["items"]] == ["ORD-1"] and acme["next_cursor"] is None


# Metrics


async def test_delivery_outcomes_and_quivo_calls_are_counted_per_tenant(
    aiohttp_client, aiohttp_server, make_settings, tmp_path
):
    sims = {}
    for name in ("acme", "globex"):
        state = SimState(rng=random.Random(7))
        sims[name] = Quivo(state, str((await aiohttp_server(create_sim_app(state))).make_url("")).rstrip("/"))
    quivo_tables = "".join(
        f"""
[tenants.{name}.quivo]
base_url = "{sim.url}"
api_key = "{sim.state.api_key}"
username = "{sim.state.username}"
password = "{sim.state.password}"
"""
        for name, sim in sims.items()
    )
    settings = make_settings(
        **forwarding_settings(sims["acme"]),
        relay_tenants_file=tenants_file(tmp_path, TWO_TENANTS + quivo_tables),
    )
    running = await aiohttp_client(create_app(settings, run_worker=True))
    response = await running.post(
        "/webhooks/bringg/acme",
        data=rating_webhook(5, "INQ-77", merchant_id=ACME_MERCHANT),
        headers=bearer(ACME_TOKENS[0]),
    )
    await wait_for_delivery(running.app[STORE], (await response.json())["delivery_id"])

    metrics = await (await running.get("/metrics")).text()

    assert 'relay_delivery_outcomes_total{outcome="delivered",tenant="acme"} 1.0' in metrics
    assert 'relay_delivery_outcomes_total{outcome="delivered",tenant="globex"} 0.0' in metrics
    assert re.search(
        r'relay_quivo_requests_total\{action="post_rating",status="20\d",tenant="acme"\} 1\.0', metrics
    )
    assert 'tenant="globex"' not in "".join(
        line for line in metrics.splitlines() if line.startswith("relay_quivo_requests_total")
    )
