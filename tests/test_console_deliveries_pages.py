"""The console's deliveries through HTTP: the list, one delivery's page, replay, cancel and bulk replay."""

import html
import json
import re

import pytest
from structlog.testing import capture_logs

from relay.app import create_app
from relay.pages import deliveries
from tests.conftest import AUTH, BACKENDS
from tests.test_admin import ago, delivery_row, seed, seed_attempt
from tests.test_console_auth import TOKEN, signed_in

pytestmark = pytest.mark.backends(*BACKENDS)

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)> & \"quoted\""


@pytest.fixture
async def console(aiohttp_client, make_settings):
    """A relay with the console, signed in; `console.csrf` is the session's CSRF token."""
    client = await aiohttp_client(create_app(make_settings(relay_admin_token=TOKEN), run_worker=False))
    assert (await signed_in(client)).status == 303
    page = await (await client.get("/console/deliveries")).text()
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert found, page
    client.csrf = found[1]
    return client


async def page_of(console, path: str, status: int = 200) -> str:
    answer = await console.get(path)
    text = await answer.text()
    assert answer.status == status, text
    return text


def listed_ids(page: str) -> list[int]:
    return [int(found) for found in re.findall(r'<td><a href="/console/deliveries/(\d+)">', page)]


async def post(console, path: str, **form: str):
    """A form posted with the session's CSRF token; the redirect is not followed."""
    return await console.post(path, data={"csrf_token": console.csrf, **form}, allow_redirects=False)


async def test_the_list_filters_by_search_state_and_merchant_and_keeps_the_filter_in_its_form(console):
    dead = seed(console, state="dead", external_id="ORD-404", merchant_id=3)
    other = seed(console, state="pending", external_id="ORD-405", merchant_id=3)
    by_rating = seed(console, state="pending", rating_id=404, external_id="ORD-1")

    everything = await page_of(console, "/console/deliveries")
    searched = await page_of(console, "/console/deliveries?search=ORD-404")
    by_number = await page_of(console, "/console/deliveries?search=404")
    filtered = await page_of(console, "/console/deliveries?state=pending&merchant_id=3")

    assert listed_ids(everything) == [by_rating, other, dead]
    assert listed_ids(searched) == [dead]
    assert 'name="search" type="search" value="ORD-404"' in searched
    assert listed_ids(by_number) == [by_rating]
    assert listed_ids(filtered) == [other]
    assert 'value="pending" checked' in filtered and 'value="dead" checked' not in filtered


async def test_the_list_pages_from_newest_to_oldest(console, monkeypatch):
    monkeypatch.setattr(deliveries, "PAGE_SIZE", 2)
    ids = [seed(console, state="dead") for _ in range(3)]

    first = await page_of(console, "/console/deliveries?state=dead")
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', first)
    assert older, first
    second = await page_of(console, html.unescape(older[1]))

    assert listed_ids(first) == ids[:0:-1]
    assert listed_ids(second) == [ids[0]]
    assert 'rel="next"' not in second and ">Newest</a>" in second


async def test_a_filter_that_cannot_be_read_is_named_with_400(console):
    page = await page_of(console, "/console/deliveries?merchant_id=abc&since=soon", status=400)
    assert "That filter cannot be read: merchant_id:" in page


async def test_a_delivery_page_shows_the_rating_webhook_message_and_each_call_to_quivo(console):
    delivery_id = seed(console, state="dead", external_id="ORD-9", inquiry_id=901, attempts=1)
    seed_attempt(
        console,
        delivery_id,
        started_at=ago(seconds=30),
        duration_ms=42,
        status_code=404,
        outcome="dead",
        error='{"message": "inquiry 901 not found"}',
    )

    page = await page_of(console, f"/console/deliveries/{delivery_id}")

    assert "<h1>Delivery" in page and "ORD-9" in page
    # The raw webhook, indented as JSON.
    assert "\n  &#34;webhook_type&#34;: &#34;rating_submitted&#34;," in page
    assert "<td>404</td>" in page and "inquiry 901 not found" in html.unescape(page)
    assert "[bringg:1:" in page  # the message as sent ends with its reference tag
    assert f'action="/console/deliveries/{delivery_id}/replay"' in page
    assert f'action="/console/deliveries/{delivery_id}/cancel"' in page


async def test_a_delivered_delivery_offers_neither_replay_nor_cancel(console):
    delivery_id = seed(console, state="delivered")
    page = await page_of(console, f"/console/deliveries/{delivery_id}")
    assert "/replay" not in page and "/cancel" not in page


async def test_an_unknown_delivery_is_a_404_page(console):
    await page_of(console, "/console/deliveries/99999", status=404)
    await page_of(console, "/console/deliveries/99999999999999999999", status=404)


async def test_a_hostile_comment_is_text_on_the_list_and_the_delivery_page(console):
    body = json.dumps(
        {
            "webhook_type": "rating_submitted",
            "merchant_id": 1,
            "rating": {"id": 77, "rating": 2, "comment": HOSTILE, "task": {"id": 770, "external_id": "O-77"}},
        }
    )
    stored = await console.post("/webhooks/bringg", data=body, headers=AUTH)
    assert stored.status == 202, await stored.text()

    listing = await page_of(console, "/console/deliveries?search=O-77")
    [delivery_id] = listed_ids(listing)
    page = await page_of(console, f"/console/deliveries/{delivery_id}")

    for shown in (listing, page):
        assert "<script>" not in shown and "<img" not in shown
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in shown


async def test_replay_from_the_page_moves_it_to_pending_logs_the_admin_line_and_says_so(console):
    delivery_id = seed(console, state="dead")

    with capture_logs() as logs:
        answer = await post(console, f"/console/deliveries/{delivery_id}/replay")

    assert answer.status == 303
    assert answer.headers["Location"] == f"/console/deliveries/{delivery_id}"
    assert delivery_row(console, delivery_id)["state"] == "pending"
    [line] = [line for line in logs if line["event"] == "admin.delivery_replayed"]
    assert (line["delivery_id"], line["was"]) == (delivery_id, "dead")
    shown = await page_of(console, answer.headers["Location"])
    assert f"Delivery {delivery_id} (was dead) replayed" in shown


async def test_a_replay_the_state_refuses_changes_nothing_and_says_why(console):
    delivery_id = seed(console, state="delivered")

    with capture_logs() as logs:
        answer = await post(console, f"/console/deliveries/{delivery_id}/replay")

    assert answer.status == 303
    assert delivery_row(console, delivery_id)["state"] == "delivered"
    assert not [line for line in logs if line["event"].startswith("admin.")]
    shown = await page_of(console, answer.headers["Location"])
    assert f"Nothing changed: delivery {delivery_id} is delivered" in shown


async def test_cancel_from_the_page_makes_it_dead_and_logs_the_admin_line(console):
    delivery_id = seed(console, state="pending")

    with capture_logs() as logs:
        answer = await post(console, f"/console/deliveries/{delivery_id}/cancel")

    assert answer.status == 303
    row = delivery_row(console, delivery_id)
    assert (row["state"], row["last_error"]) == ("dead", "cancelled by operator")
    assert [line["was"] for line in logs if line["event"] == "admin.delivery_cancelled"] == ["pending"]


async def test_an_action_without_the_csrf_token_is_refused_and_changes_nothing(console):
    delivery_id = seed(console, state="dead")
    answer = await console.post(f"/console/deliveries/{delivery_id}/replay", allow_redirects=False)
    assert answer.status == 403
    assert delivery_row(console, delivery_id)["state"] == "dead"


async def test_bulk_replay_states_how_many_match_then_replays_them_on_confirmation(console):
    matching = [seed(console, state="dead", merchant_id=5) for _ in range(3)]
    elsewhere = seed(console, state="dead", merchant_id=6)
    delivered = seed(console, state="delivered", merchant_id=5)
    listing = await page_of(console, "/console/deliveries?merchant_id=5&since=1h")
    assert 'action="/console/deliveries/replay"' in listing

    asked = await post(console, "/console/deliveries/replay", merchant_id="5", since="1h")
    confirmation = await asked.text()

    assert asked.status == 200, confirmation
    assert "<h1>Replay 3 deliveries?</h1>" in confirmation
    assert {delivery_row(console, d)["state"] for d in matching} == {"dead"}
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', confirmation))
    assert fields["since"].startswith("20") and fields["confirm"] == "yes"  # the instant as counted

    with capture_logs() as logs:
        done = await post(console, "/console/deliveries/replay", **fields)

    assert done.status == 303
    states = [delivery_row(console, d)["state"] for d in (*matching, elsewhere, delivered)]
    assert states == ["pending", "pending", "pending", "dead", "delivered"]
    [line] = [line for line in logs if line["event"] == "admin.deliveries_replayed"]
    assert (line["replayed"], line["filter"]["merchant_id"]) == (3, 5)
    assert "Replayed 3 deliveries" in await page_of(console, done.headers["Location"])


async def test_a_filter_naming_a_state_that_never_replays_offers_no_bulk_replay(console):
    seed(console, state="delivered")
    for query in ("state=delivered", "merchant_id=1"):
        listing = await page_of(console, f"/console/deliveries?{query}")
        assert 'action="/console/deliveries/replay"' not in listing
    refused = await post(console, "/console/deliveries/replay", state="delivered")
    assert refused.status == 400
