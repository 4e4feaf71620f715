"""The console's deliveries in a real browser, on each backend: a delivery dead on a 404 found by its order
id and replayed once its link is fixed, a bulk replay after its confirmation, a hostile comment kept text."""

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.chaos.harness import Sim
from tests.conftest import BACKENDS
from tests.console_harness import ConsoleRelay

pytestmark = pytest.mark.backends(*BACKENDS)

# An inquiry the stand-in does not have: Quivo answers 404 for it, and the relay gives the delivery up.
MISSING = 404404
DEAD_ORDER = f"INQ-{MISSING}"
HOSTILE = "<script>alert('script')</script><img src=x onerror=alert('img')>"


@pytest.fixture(scope="module")
def console_quivo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """The harness's stand-in, but one that answers 404 for the inquiry MISSING (a reset keeps that)."""
    with Sim.running(tmp_path_factory.mktemp("quivo"), "--missing-inquiries", str(MISSING)) as sim:
        yield sim


def dead_on_a_404(console: ConsoleRelay, rating_id: int, merchant_id: int = 1) -> int:
    """A rating whose order names the missing inquiry, once the relay has given its delivery up."""
    delivery_id: int = console.rating(rating_id, DEAD_ORDER, merchant_id=merchant_id)["delivery_id"]
    console.wait_for_state(delivery_id, "dead")
    return delivery_id


def fix_link(console: ConsoleRelay, merchant_id: int, inquiry_id: int) -> None:
    status, answer = console.admin("PUT", f"/links/{merchant_id}/{DEAD_ORDER}", {"inquiry_id": inquiry_id})
    assert status == 200, answer


def ratings_on(console: ConsoleRelay, inquiry_id: int) -> int:
    return sum(1 for rating in console.sim.ratings() if rating["inquiry_id"] == inquiry_id)


def test_a_delivery_dead_on_a_404_is_found_by_its_order_id_and_replayed_once_its_link_is_fixed(
    page: Page, console: ConsoleRelay, screenshot
) -> None:
    delivery_id = dead_on_a_404(console, 9001)

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Deliveries").click()
    page.get_by_label("Order id, rating id or inquiry id").fill(DEAD_ORDER)
    page.get_by_role("button", name="Show").click()
    rows = page.locator("table.deliveries tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("dead")
    rows.first.get_by_role("link", name=str(delivery_id)).click()

    expect(page.get_by_role("heading", level=1)).to_have_text(f"Delivery {delivery_id} dead")
    calls = page.get_by_role("region", name="Calls to Quivo")
    expect(calls.locator("tbody tr").last).to_contain_text("404")
    expect(calls).to_contain_text("Customer inquiry not found")

    fix_link(console, 1, 505)
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status")).to_contain_text(f"Delivery {delivery_id} (was dead) replayed")
    console.wait_for_state(delivery_id, "delivered")
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Delivery {delivery_id} delivered")
    expect(calls.locator("tbody tr").last).to_contain_text("200")
    screenshot(page, "delivery-replayed")

    assert ratings_on(console, 505) == 1
    assert [line["delivery_id"] for line in console.events("admin.delivery_replayed")] == [delivery_id]


def test_a_bulk_replay_states_how_many_match_and_replays_them(
    page: Page, console: ConsoleRelay, screenshot
) -> None:
    dead = [dead_on_a_404(console, rating_id, merchant_id=3) for rating_id in (9101, 9102, 9103)]
    elsewhere = dead_on_a_404(console, 9104, merchant_id=4)
    fix_link(console, 3, 506)

    page.goto("/console/deliveries")
    page.get_by_label("Merchant id").fill("3")
    page.get_by_role("checkbox", name="dead").check()
    page.get_by_role("button", name="Show").click()
    expect(page.locator("table.deliveries tbody tr")).to_have_count(3)
    page.get_by_role("button", name="Replay every dead or unmatched delivery this filter matches…").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Replay 3 deliveries?")
    screenshot(page, "bulk-replay-confirmation")
    page.get_by_role("button", name="Replay 3 deliveries").click()

    expect(page.get_by_role("status")).to_contain_text("Replayed 3 deliveries")
    for delivery_id in dead:
        console.wait_for_state(delivery_id, "delivered")
    page.reload()
    expect(page.locator("table.deliveries tbody tr")).to_have_count(0)
    page.get_by_role("checkbox", name="dead").uncheck()
    page.get_by_role("button", name="Show").click()
    expect(page.locator("table.deliveries tbody tr").filter(has_text="delivered")).to_have_count(3)
    screenshot(page, "bulk-replay-done")

    assert ratings_on(console, 506) == 3
    assert console.admin("GET", f"/deliveries/{elsewhere}")[1]["delivery"]["state"] == "dead"
    [line] = console.events("admin.deliveries_replayed")
    assert (line["replayed"], line["filter"]["merchant_id"]) == (3, 3)


def test_a_hostile_comment_shows_as_text_and_runs_nothing(
    page: Page, console: ConsoleRelay, screenshot
) -> None:
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    body = {
        "webhook_type": "rating_submitted",
        "merchant_id": 1,
        "rating": {
            "id": 9201,
            "rating": 1,
            "comment": HOSTILE,
            "task": {"id": 92010, "external_id": "INQ-9201"},
        },
    }
    status, answer = console.webhook(json.dumps(body).encode())
    assert status == 202, answer

    page.goto("/console/deliveries?search=INQ-9201")
    comment = page.locator("table.deliveries tbody tr td.comment")
    expect(comment).to_have_text(HOSTILE)
    screenshot(page, "hostile-comment-list")
    page.get_by_role("link", name=str(answer["delivery_id"])).click()
    expect(page.locator("dd.comment")).to_have_text(HOSTILE)
    expect(page.locator("pre.webhook")).to_contain_text(HOSTILE)
    screenshot(page, "hostile-comment-delivery")

    # Nothing of the comment became markup: no element it names exists, and no dialog opened.
    assert page.locator("main script, main img").count() == 0
    assert dialogs == []
