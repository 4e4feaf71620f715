"""The console's quarantine and links in a real browser, on each backend: a quarantined webhook reprocessed
once its cause is fixed, another dismissed with a reason, a links CSV uploaded and downloaded."""

import csv
import io
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.chaos.harness import Sim, http_call, relay_env, wait_for
from tests.conftest import BACKENDS
from tests.console_harness import ADMIN_TOKEN, ConsoleRelay
from tests.forwarding import rating_webhook
from tests.processes import free_port, relay_process, wait_until_ready

pytestmark = pytest.mark.backends(*BACKENDS)

TENANTS = """\
[tenants.default]
merchants = {merchants}
[tenants.default.bringg]
webhook_tokens = [{{ env = "BRINGG_WEBHOOK_TOKEN" }}]
[tenants.default.quivo]
api_key = {{ env = "QUIVO_API_KEY" }}
username = "sim-user"
password = {{ env = "QUIVO_PASSWORD" }}
"""


@pytest.fixture
def tenants_file(tmp_path: Path) -> Path:
    """The relay's one tenant, which sends for merchant 1 only (until a test adds one)."""
    path = tmp_path / "tenants.toml"
    path.write_text(TENANTS.format(merchants=[1]))
    return path


@pytest.fixture
def console(
    backend: str, database_url: str, console_quivo: Sim, tmp_path: Path, tenants_file: Path
) -> Iterator[ConsoleRelay]:
    """The harness's relay, its tenant read from a tenants file (RELAY_TENANTS_FILE) that SIGHUP reloads."""
    http_call("POST", f"{console_quivo.url}/_sim/reset")
    port = free_port()
    env = relay_env(
        tmp_path,
        console_quivo.url,
        port,
        DATABASE_URL=database_url,
        RELAY_ADMIN_TOKEN=ADMIN_TOKEN,
        RELAY_TENANTS_FILE=str(tenants_file),
    )
    log_path = tmp_path / "relay.log"
    with relay_process("serve", env=env, cwd=tmp_path, log_path=log_path) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/readyz?scope=intake", process)
        yield ConsoleRelay(url, backend, console_quivo, process, log_path)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()[-3000:]
        assert ADMIN_TOKEN not in log_path.read_text()


def quarantined(console: ConsoleRelay, body: bytes) -> int:
    status, answer = console.webhook(body)
    assert (status, answer["status"]) == (202, "quarantined"), answer
    return int(answer["id"])


def open_quarantined(page: Page, webhook_id: int, reason: str) -> None:
    """From the nav to the webhook's page, through the quarantine's list showing why it is there."""
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Quarantine").click()
    row = page.locator("table.webhooks tbody tr", has_text=reason)
    expect(row).to_have_count(1)
    row.get_by_role("link", name=str(webhook_id)).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Webhook {webhook_id} quarantined")


def test_a_quarantined_webhook_is_reprocessed_from_the_console_once_its_cause_is_fixed(
    page: Page, console: ConsoleRelay, tenants_file: Path, screenshot
) -> None:
    reason = "merchant 2 is not one of tenant default's merchants"
    webhook_id = quarantined(console, rating_webhook(7001, "INQ-7001", merchant_id=2))
    open_quarantined(page, webhook_id, reason)
    expect(page.locator("#webhook-body")).to_contain_text('"merchant_id": 2')

    # The cause: the tenant did not send for merchant 2. Fixed in its file, which the relay reloads on SIGHUP.
    tenants_file.write_text(TENANTS.format(merchants=[1, 2]))
    console.process.send_signal(signal.SIGHUP)
    wait_for(lambda: bool(console.events("tenants.reloaded")), 10, "the tenants file reloaded")
    page.get_by_role("button", name="Reprocess").click()

    notice = page.get_by_role("status")
    expect(notice).to_contain_text(f"Webhook {webhook_id} reprocessed: accepted, delivery")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Webhook {webhook_id} accepted")
    [line] = console.events("admin.webhook_reprocessed")
    assert (line["webhook_id"], line["outcome"]) == (webhook_id, "accepted")
    console.wait_for_state(line["delivery_id"], "delivered")
    assert [rating["inquiry_id"] for rating in console.sim.ratings()] == [7001]
    screenshot(page, "quarantine-reprocessed")


def test_a_quarantined_webhook_is_dismissed_with_a_reason_and_leaves_the_waiting_list(
    page: Page, console: ConsoleRelay, screenshot
) -> None:
    webhook_id = quarantined(console, rating_webhook(7002, "INQ-7002", stars=9))
    open_quarantined(page, webhook_id, "stars must be 1..5, got 9")

    page.get_by_label("Why dismiss it").fill("a test order from the Bringg sandbox")
    page.get_by_role("button", name="Dismiss").click()

    expect(page.get_by_role("status")).to_contain_text(f"Webhook {webhook_id} dismissed")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Webhook {webhook_id} dismissed")
    expect(page.locator("#dismissed-reason")).to_have_text("a test order from the Bringg sandbox")
    [line] = console.events("admin.webhook_dismissed")
    assert (line["webhook_id"], line["reason"]) == (webhook_id, "a test order from the Bringg sandbox")
    screenshot(page, "quarantine-dismissed")
    page.get_by_role("link", name="Quarantine", exact=True).first.click()
    expect(page.get_by_text("No webhook is waiting in quarantine.")).to_be_visible()
    page.get_by_label("Show").select_option("dismissed")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("table.webhooks tbody tr")).to_contain_text("a test order from the Bringg sandbox")
    assert console.admin("GET", "/stats")[1]["webhooks"]["quarantined"] == 0


def test_a_links_csv_uploaded_is_downloaded_with_the_same_rows(
    page: Page, console: ConsoleRelay, tmp_path: Path, screenshot
) -> None:
    rows = [["1", "ORD-1", "11"], ["1", "=cmd|' /C calc'!A0", "12"], ["1", "ORD 3", "13"]]
    uploaded = tmp_path / "links.csv"
    with uploaded.open("w", newline="") as file:
        csv.writer(file).writerows([["merchant_id", "external_id", "inquiry_id"], *rows, ["1", "ORD-4", "x"]])

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Links").click()
    page.get_by_label("Links file").set_input_files(uploaded)
    page.get_by_role("button", name="Upload").click()

    expect(page.locator("#import-result")).to_have_text(
        "Saved 3 links from links.csv; woke 0 unmatched deliveries; 1 bad lines."
    )
    expect(page.get_by_role("table")).to_contain_text("inquiry_id must be a positive whole number")
    [line] = console.events("admin.links_imported")
    assert (line["saved"], line["problems"]) == (3, 1)
    screenshot(page, "links-uploaded")
    page.get_by_role("link", name="Back to the links").click()
    expect(page.locator("table.links tbody tr")).to_have_count(3)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the CSV").click()
    downloaded = Path(download.value.path()).read_text()

    read = list(csv.reader(io.StringIO(downloaded)))
    # The formula-like order id leaves behind a `'` (a spreadsheet shows it instead of running it), which
    # the import takes off again: the same rows either way.
    assert read[0] == ["merchant_id", "external_id", "inquiry_id"]
    assert sorted(read[1:]) == sorted(
        [["1", "'" + rows[1][1], "12"] if row is rows[1] else row for row in rows]
    )
    screenshot(page, "links")
