"""The console's quarantine and links pages through HTTP: lists, a webhook's page, and every action's line."""

import csv
import io
import json

import aiohttp
import pytest
from markupsafe import escape
from structlog.testing import capture_logs

from relay.linkfile import Link, links_to_csv
from tests.conftest import AUTH, BACKENDS, fixture_bytes
from tests.forwarding import rating_webhook
from tests.test_admin import ago, delivery_row, links, seed, seed_quarantined, through_store
from tests.test_console_deliveries_pages import HOSTILE, page_of, post
from tests.test_console_deliveries_pages import console as console  # the fixture

pytestmark = pytest.mark.backends(*BACKENDS)


async def quarantined(console, body: bytes) -> int:
    answer = await (await console.post("/webhooks/bringg", data=body, headers=AUTH)).json()
    assert answer["status"] == "quarantined", answer
    return int(answer["id"])


async def followed(console, answer) -> str:
    assert answer.status == 303
    return await page_of(console, answer.headers["Location"])


# Quarantine


async def test_the_quarantine_lists_waiting_webhooks_with_their_reasons_and_dismissed_ones_when_asked(
    console,
):
    waiting = await quarantined(console, rating_webhook(2, "ORD-2", stars=9))
    dismissed = await quarantined(console, rating_webhook(3, "ORD-3", stars=0))
    await console.post("/webhooks/bringg", data=rating_webhook(1, "ORD-1"), headers=AUTH)
    await post(console, f"/console/quarantine/{dismissed}/dismiss", reason="a test from the sandbox")

    listed = await page_of(console, "/console/quarantine")
    asked = await page_of(console, "/console/quarantine?show=dismissed")

    assert f'href="/console/quarantine/{waiting}"' in listed
    assert f'href="/console/quarantine/{dismissed}"' not in listed
    assert "rating.rating: stars must be 1..5, got 9" in listed
    assert f'href="/console/quarantine/{dismissed}"' in asked and "a test from the sandbox" in asked
    assert f'href="/console/quarantine/{waiting}"' not in asked


async def test_a_webhook_page_shows_its_body_pretty_printed_and_escaped_with_its_reasons(console):
    body = json.dumps({"webhook_type": "rating_submitted", "merchant_id": 1, "comment": HOSTILE}).encode()
    held = await quarantined(console, body)

    page = await page_of(console, f"/console/quarantine/{held}")

    assert str(escape(json.dumps(json.loads(body), indent=2))) in page
    assert HOSTILE not in page and "<script>" not in page
    assert "rating: missing" in page
    assert f'action="/console/quarantine/{held}/reprocess"' in page
    assert f'action="/console/quarantine/{held}/dismiss"' in page


async def test_dismissing_from_the_console_keeps_the_reason_and_logs_the_admin_line(console):
    held = await quarantined(console, rating_webhook(2, "ORD-2", stars=9))

    unexplained = await post(console, f"/console/quarantine/{held}/dismiss", reason="   ")
    assert "Not dismissed" in await followed(console, unexplained)
    with capture_logs() as logs:
        dismissed = await post(console, f"/console/quarantine/{held}/dismiss", reason="test order")
    page = await followed(console, dismissed)

    assert "Webhook" in page and 'id="dismissed-reason">test order<' in page
    assert "/dismiss" not in page  # no more buttons: it is closed
    assert [(line["event"], line["webhook_id"], line["reason"]) for line in logs] == [
        ("admin.webhook_dismissed", held, "test order")
    ]


async def test_reprocessing_from_the_console_accepts_a_body_now_usable_and_logs_the_admin_line(console):
    held = seed_quarantined(
        console, fixture_bytes("bringg/rating_submitted.json"), errors=["old"], received_at=ago(hours=1)
    )

    with capture_logs() as logs:
        reprocessed = await post(console, f"/console/quarantine/{held}/reprocess")
    page = await followed(console, reprocessed)

    [line] = [line for line in logs if line["event"] == "admin.webhook_reprocessed"]
    assert (line["webhook_id"], line["outcome"]) == (held, "accepted")
    assert f"Webhook {held} reprocessed: accepted, delivery {line['delivery_id']}." in page
    assert delivery_row(console, line["delivery_id"])["state"] == "pending"


# Links


async def test_a_link_added_changed_found_by_order_id_and_deleted_from_the_console_logs_each_line(console):
    unmatched = seed(console, state="unmatched", merchant_id=3, external_id="ORD 7/A")
    with capture_logs() as logs:
        added = await post(
            console, "/console/links/save", merchant_id="3", external_id=" ORD 7/A ", inquiry_id="70"
        )
        after_adding = await followed(console, added)
        changed = await post(
            console, "/console/links/save", merchant_id="3", external_id="ORD 7/A", inquiry_id="71"
        )
        found = await page_of(console, "/console/links?external_id=ORD+7/A")
        deleted = await post(console, "/console/links/delete", merchant_id="3", external_id="ORD 7/A")
        after_deleting = await followed(console, deleted)

    assert "Saved: merchant 3&#39;s order ORD 7/A belongs to inquiry 70; it woke 1 unmatched" in after_adding
    assert changed.status == 303
    assert delivery_row(console, unmatched)["state"] == "pending"
    assert ">ORD 7/A<" in found and ">71<" in found
    assert "Deleted the link of merchant 3&#39;s order ORD 7/A." in after_deleting
    assert links(console) == []
    assert [line["event"] for line in logs] == ["admin.link_saved", "admin.link_saved", "admin.link_deleted"]
    refused = await post(console, "/console/links/save", merchant_id="3", external_id="X", inquiry_id="seven")
    assert "Not saved: inquiry_id" in await followed(console, refused)


async def test_a_csv_uploaded_saves_its_good_rows_names_each_bad_line_and_downloads_the_same_rows(console):
    text = "merchant_id,external_id,inquiry_id\n1,ORD-1,11\n2,=SUM(A1),22\n3,ORD-3,not-a-number\n"
    form = aiohttp.FormData()
    form.add_field("csrf_token", console.csrf)
    form.add_field("file", text.encode(), filename="links.csv", content_type="text/csv")

    with capture_logs() as logs:
        uploaded = await console.post("/console/links/import", data=form)
    page = await uploaded.text()
    downloaded = await console.get("/console/links/export.csv")

    assert uploaded.status == 200, page
    assert "Saved 2 links from links.csv; woke 0 unmatched deliveries; 1 bad lines." in page
    assert '<td class="num">4</td>' in page and "inquiry_id must be a positive whole number" in page
    assert [(line["event"], line["saved"], line["problems"]) for line in logs] == [
        ("admin.links_imported", 2, 1)
    ]
    assert downloaded.headers["Content-Disposition"] == 'attachment; filename="links.csv"'
    exported = await downloaded.text()
    assert exported == links_to_csv([Link(1, "ORD-1", 11), Link(2, "=SUM(A1)", 22)])
    assert list(csv.reader(io.StringIO(exported)))[2] == ["2", "'=SUM(A1)", "22"]


async def test_a_csv_without_its_columns_saves_nothing_and_says_why(console):
    form = aiohttp.FormData()
    form.add_field("csrf_token", console.csrf)
    form.add_field("file", b"order,inquiry\nORD-1,11\n", filename="wrong.csv", content_type="text/csv")

    uploaded = await console.post("/console/links/import", data=form)

    assert uploaded.status == 400
    assert "missing column merchant_id, external_id" in await uploaded.text()
    assert through_store(console, lambda store: store.list_links()) == []
