"""Two tenants through real processes, each onto its own Quivo stand-in, on SQLite and PostgreSQL."""

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.chaos.harness import http_call, wait_for
from tests.conftest import BACKENDS
from tests.tenant_relays import ACME, ADMIN, GLOBEX, MERCHANTS, TOKENS, Relay, two_tenant_relay


@pytest.fixture(scope="module", params=BACKENDS)
def relay(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """Both tenants' relay for the module's tests, once per backend."""
    backend: str = request.param
    cwd = tmp_path_factory.mktemp(f"tenants-{backend}")
    with two_tenant_relay(
        backend, cwd, lambda: request.getfixturevalue("postgres_server"), [ACME, GLOBEX]
    ) as relay:
        yield relay


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
