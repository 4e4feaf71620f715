"""The console's door in a real browser, on each backend: a wrong token, signing in, a form without its
CSRF token."""

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from relay.domain.delivery import DELIVERY_STATES
from tests.conftest import BACKENDS
from tests.console_harness import VIEWPORT, ConsoleRelay, sign_in

pytestmark = pytest.mark.backends(*BACKENDS)


def test_a_wrong_token_is_refused(browser: Browser, console: ConsoleRelay, screenshot) -> None:
    context = browser.new_context(base_url=console.url, viewport=VIEWPORT)
    try:
        tab = context.new_page()
        tab.goto("/console")
        expect(tab).to_have_url(f"{console.url}/console/sign-in?next=/console")
        with tab.expect_response(lambda answer: answer.request.method == "POST") as posted:
            sign_in(tab, "not-the-admin-token-0123456789")
        assert posted.value.status == 401
        expect(tab.get_by_role("alert")).to_have_text("That token is not the admin token.")
        expect(tab.get_by_label("Admin token")).to_be_visible()
        screenshot(tab, "sign-in-refused")
        tab.goto("/console")
        expect(tab.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        context.close()
    assert len(console.events("console.sign_in_refused")) == 1


def test_signing_in_shows_the_overview(page: Page, console: ConsoleRelay, screenshot) -> None:
    expect(page).to_have_url(f"{console.url}/console")
    expect(page.get_by_role("navigation", name="Console")).to_contain_text("Overview")
    delivered = console.rating(1, "INQ-101")["delivery_id"]
    unmatched = console.rating(2, "ORDER-2")["delivery_id"]  # no link, no pattern match
    console.webhook(b'{"webhook_type": "rating_submitted", "merchant_id": 1}')  # quarantined
    console.wait_for_state(delivered, "delivered")
    console.wait_for_state(unmatched, "unmatched")
    page.reload()
    states = page.get_by_role("table", name="Deliveries by state")
    counts = {state: 0 for state in DELIVERY_STATES} | {"delivered": 1, "unmatched": 1}
    expect(states.get_by_role("row", name="Deliveries").get_by_role("cell")).to_have_text(
        [str(counts[state]) for state in DELIVERY_STATES]
    )
    expect(page.locator("#quarantined-count")).to_have_text("1")
    expect(page.get_by_role("img", name=re.compile("3 and 1 in all"))).to_be_visible()
    expect(page.get_by_role("table", name="Workers")).to_contain_text(re.compile(r"\d+s ago"))
    screenshot(page, "overview")
    # By keyboard: the first Tab offers to skip the nav.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    # On a phone: nothing wider than the screen but the tables, which scroll sideways on their own.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "overview-phone")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("Signed out.")
    page.goto("/console")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_form_without_its_csrf_token_is_refused(page: Page, console: ConsoleRelay, screenshot) -> None:
    sign_out = page.locator("form.sign-out")
    sign_out.evaluate("form => form.querySelector('input[name=csrf_token]').remove()")
    with page.expect_response(lambda answer: answer.request.method == "POST") as posted:
        sign_out.get_by_role("button", name="Sign out").click()
    assert posted.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("403 Forbidden")
    expect(page.get_by_role("alert")).to_contain_text("CSRF token is missing or wrong")
    screenshot(page, "csrf-refused")
    # Nothing happened: still signed in.
    page.goto("/console")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    assert len(console.events("console.csrf_refused")) == 1
