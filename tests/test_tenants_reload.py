"""SIGHUP reloads the tenants file in every relay process, through real processes on both backends."""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import http_call, wait_for
from tests.conftest import BACKENDS
from tests.tenant_relays import ACME, ADMIN, GLOBEX, MERCHANTS, Relay, two_tenant_relay

pytestmark = pytest.mark.backends(*BACKENDS)


@pytest.fixture
def relay(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Relay]:
    """A relay started with acme alone in its file; globex's stand-in waits for its tenant."""
    with two_tenant_relay(
        backend, tmp_path, lambda: request.getfixturevalue("postgres_server"), [ACME]
    ) as relay:
        yield relay


class Sender:
    """Posts acme's ratings one after another on a thread until stopped; keeps every answer's status."""

    def __init__(self, relay: Relay, first: int) -> None:
        self.statuses: dict[int, int] = {}
        self._relay, self._next = relay, first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def __enter__(self) -> "Sender":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _send(self) -> None:
        while not self._stop.is_set():
            self.statuses[self._next] = self._relay.post(ACME, self._next)[0]
            self._next += 1


def test_a_reload_adds_a_tenant_while_webhooks_flow_and_none_is_refused_or_lost(relay: Relay) -> None:
    assert relay.post(GLOBEX, 1)[0] == 404  # not a tenant yet

    with Sender(relay, first=100) as sender:
        wait_for(lambda: len(sender.statuses) >= 5, 20, "acme's ratings flowing")
        relay.write_tenants([ACME, GLOBEX])
        relay.reload("tenants.reloaded")
        relay.post_all(GLOBEX, range(200, 205))
        sent_during = len(sender.statuses)
        wait_for(lambda: len(sender.statuses) >= sent_during + 5, 20, "acme's ratings still flowing")

    assert set(sender.statuses.values()) == {202}, sender.statuses
    acme = {(MERCHANTS[ACME], rating_id) for rating_id in sender.statuses}
    wait_for(lambda: set(relay.landed(ACME)) == acme, 30, "every acme rating on acme's stand-in")
    wait_for(lambda: len(relay.landed(GLOBEX)) == 5, 30, "globex's ratings on globex's stand-in")
    assert set(relay.landed(GLOBEX)) == {(MERCHANTS[GLOBEX], rating_id) for rating_id in range(200, 205)}
    assert set((relay.landed(ACME) + relay.landed(GLOBEX)).values()) == {1}
    assert [[event["tenants"] for event in found] for found in relay.events("tenants.reloaded")] == [
        [[ACME, GLOBEX]]
    ] * len(relay.processes)


def test_a_file_that_does_not_validate_changes_nothing_and_says_why_once(relay: Relay) -> None:
    # globex claims acme's merchant: a merchant belongs to one tenant only.
    relay.write_tenants([ACME, GLOBEX], extra=f"\n[tenants.initech]\nmerchants = [{MERCHANTS[ACME]}]\n")

    relay.reload("tenants.reload_refused")

    for found in relay.events("tenants.reload_refused"):
        (refused,) = found
        assert refused["level"] == "error" and any("1001" in problem for problem in refused["problems"])
    assert relay.events("tenants.reloaded") == [[]] * len(relay.processes)
    assert relay.post(GLOBEX, 1)[0] == 404  # the running tenants stay: acme alone
    relay.post_all(ACME, range(300, 303))
    wait_for(lambda: len(relay.landed(ACME)) == 3, 30, "acme still delivering")


def test_a_removed_tenants_deliveries_wait_and_go_on_when_it_returns(relay: Relay) -> None:
    relay.write_tenants([ACME, GLOBEX])
    relay.reload("tenants.reloaded")
    globex = relay.sims[GLOBEX]
    # Refused credentials hold its deliveries without spending their attempts.
    globex.faults(reject_credentials=True)
    relay.post_all(GLOBEX, range(200, 203))
    wait_for(lambda: GLOBEX in (relay.status()["workers"][0]["paused"] or ""), 20, "globex paused")

    relay.write_tenants([ACME])
    relay.reload("tenants.reloaded")
    globex.healthy()
    assert relay.post(GLOBEX, 204)[0] == 404
    # acme's ratings going through show the worker went round since: globex's waited, unclaimed.
    relay.post_all(ACME, range(100, 103))
    wait_for(lambda: len(relay.landed(ACME)) == 3, 30, "acme delivering")
    assert relay.landed(GLOBEX) == {}
    waiting = http_call("GET", f"{relay.url}/admin/deliveries", headers=ADMIN)[2]["items"]
    assert sorted(item["state"] for item in waiting if item["tenant"] == GLOBEX) == ["pending"] * 3
    assert relay.status()["workers"][0]["paused"] is None  # a removed tenant's pause is not the worker's

    relay.write_tenants([ACME, GLOBEX])
    relay.reload("tenants.reloaded")

    wait_for(lambda: len(relay.landed(GLOBEX)) == 3, 30, "globex's ratings delivered on its return")
    assert relay.landed(GLOBEX) == {(MERCHANTS[GLOBEX], rating_id): 1 for rating_id in range(200, 203)}
