"""The console in a real browser: a relay process with its Quivo stand-in, Chromium driven by Playwright.

tests/conftest.py loads the fixtures below for every module; a module of the console's browser flows is
marked `pytest.mark.backends(*BACKENDS)`: each flow then runs on SQLite and on a fresh database of the test
run's throwaway PostgreSQL. Tests are plain (sync) functions; they wait through Playwright's auto-waiting
`expect`, or `wait_for` on the relay, never a fixed sleep.
"""

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from scripts.console_screenshots import CHROMIUM, CHROMIUM_ARGS
from tests.chaos.harness import Sim, http_call, relay_env, wait_for
from tests.conftest import AUTH
from tests.forwarding import rating_webhook
from tests.processes import free_port, relay_process, wait_until_ready

ADMIN_TOKEN = "console-browser-admin-token-0123456789"
SHOTS = Path(__file__).resolve().parents[1] / "var" / "console"
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


@dataclass
class ConsoleRelay:
    """`relay serve` (with its worker) on the test's database, delivering to its own Quivo stand-in."""

    url: str
    backend: str
    sim: Sim
    process: subprocess.Popen[str]
    log_path: Path

    def webhook(self, body: bytes, *, tenant_path: str = "") -> tuple[int, Any]:
        """POST a webhook with Bringg's credential, as Bringg sends it; its status and JSON answer."""
        headers = {**AUTH, "Content-Type": "application/json"}
        status, _, answer = http_call("POST", f"{self.url}/webhooks/bringg{tenant_path}", body, headers)
        return status, answer

    def rating(self, rating_id: int, external_id: str, **fields: Any) -> Any:
        """A rating_submitted webhook (tests.forwarding's) the relay took (202): its answer."""
        status, answer = self.webhook(rating_webhook(rating_id, external_id, **fields))
        assert status == 202, (status, answer)
        return answer

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A call to the admin API (to arrange or check what a page should show)."""
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        status, _, answer = http_call(method, f"{self.url}/admin{path}", data, headers)
        return status, answer

    def wait_for_state(self, delivery_id: int, state: str, timeout: float = 20) -> None:
        """Until the delivery is in `state` (read through the admin API)."""
        wait_for(
            lambda: self.admin("GET", f"/deliveries/{delivery_id}")[1]["delivery"]["state"] == state,
            timeout,
            f"delivery {delivery_id} {state}",
        )

    def events(self, name: str) -> list[dict[str, Any]]:
        """The relay's JSON log lines of that event."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [event for event in map(json.loads, filter(_is_json, lines)) if event.get("event") == name]


def _is_json(line: str) -> bool:
    return line.startswith("{")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, launched once for the module's tests."""
    if not CHROMIUM.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Chromium at {CHROMIUM} (`make chromium`)", pytrace=False)
        pytest.skip(f"no Chromium at {CHROMIUM} (`make chromium`)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def console_quivo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """One Quivo stand-in for the module's relays (each test starts it afresh: `console`)."""
    with Sim.running(tmp_path_factory.mktemp("quivo")) as sim:
        yield sim


@pytest.fixture
def console(backend: str, database_url: str, console_quivo: Sim, tmp_path: Path) -> Iterator[ConsoleRelay]:
    """A relay process with the console (RELAY_ADMIN_TOKEN set) on the test's backend, delivering to the
    stand-in, which has forgotten every earlier test's ratings and faults."""
    sim = console_quivo
    http_call("POST", f"{sim.url}/_sim/reset")
    port = free_port()
    env = relay_env(tmp_path, sim.url, port, DATABASE_URL=database_url, RELAY_ADMIN_TOKEN=ADMIN_TOKEN)
    log_path = tmp_path / "relay.log"
    with relay_process("serve", env=env, cwd=tmp_path, log_path=log_path) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/readyz?scope=intake", process)
        yield ConsoleRelay(url, backend, sim, process, log_path)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()[-3000:]
        # Whatever the flows did, the token never reached the relay's log.
        assert ADMIN_TOKEN not in log_path.read_text()


def sign_in(page: Page, token: str = ADMIN_TOKEN) -> None:
    """Sign in on the console's form, as a person does: from the page that asks for it."""
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def page(browser: Browser, console: ConsoleRelay) -> Iterator[Page]:
    """A fresh browser session (its own cookies) signed in to the console, on the overview."""
    context = browser.new_context(base_url=console.url, viewport=VIEWPORT)
    try:
        opened = context.new_page()
        opened.goto("/console")
        sign_in(opened)
        expect(opened.get_by_role("heading", name="Overview", level=1)).to_be_visible()
        yield opened
    finally:
        context.close()


@pytest.fixture
def screenshot(backend: str) -> Callable[[Page, str], Path]:
    """`screenshot(page, name)`: the whole page saved as var/console/<name>-<backend>.png, for a person."""

    def take(page: Page, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}-{backend}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
