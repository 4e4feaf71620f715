"""Dismissing a quarantined webhook with a reason, and reprocessing, through the admin API and the CLI."""

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.conftest import BACKENDS, fixture_bytes
from tests.forwarding import rating_webhook
from tests.test_admin import (
    ADMIN,
    PROBLEM,
    ago,
    every_delivery,
    get,
    post,
    seed_quarantined,
    webhook,
)
from tests.test_admin import (
    relay as relay,  # the fixture
)
from tests.test_cli_ops import relay as run
from tests.test_cli_ops import relay_json
from tests.test_cli_ops import store as store  # the fixture

pytestmark = pytest.mark.backends(*BACKENDS)

REASON = "a test order from the Bringg sandbox"


async def quarantined(relay: Any) -> int:
    held = await webhook(relay, rating_webhook(2, "ORD-2", stars=9))
    assert held["status"] == "quarantined", held
    return int(held["id"])


# The admin API


async def test_a_dismissed_webhook_is_kept_with_its_reason_and_no_longer_counts_as_quarantined(relay):
    waiting = await quarantined(relay)
    dismissed = await quarantined(relay)

    with capture_logs() as logs:
        status, answer = await post(
            relay, f"/admin/webhooks/{dismissed}/dismiss", json={"reason": f" {REASON} "}
        )

    assert status == 200, answer
    assert (answer["id"], answer["status"], answer["dismissed_reason"]) == (dismissed, "dismissed", REASON)
    assert answer["dismissed_at"] is not None and answer["errors"] == [
        "rating.rating: stars must be 1..5, got 9"
    ]
    assert answer["body"] == rating_webhook(2, "ORD-2", stars=9).decode()
    dismissals = [line for line in logs if line["event"] == "admin.webhook_dismissed"]
    assert dismissals == [
        {
            "event": "admin.webhook_dismissed",
            "log_level": "info",
            "webhook_id": dismissed,
            "tenant": "default",
            "reason": REASON,
        }
    ]
    _, stats = await get(relay, "/admin/stats")
    assert (stats["webhooks"]["quarantined"], stats["webhooks"]["dismissed"]) == (1, 1)
    _, waiting_ones = await get(relay, "/admin/webhooks", status="quarantined")
    _, dismissed_ones = await get(relay, "/admin/webhooks", status="dismissed")
    assert [item["id"] for item in waiting_ones["items"]] == [waiting]
    assert [(item["id"], item["dismissed_reason"]) for item in dismissed_ones["items"]] == [
        (dismissed, REASON)
    ]
    _, shown = await get(relay, f"/admin/webhooks/{dismissed}")
    assert (shown["status"], shown["dismissed_reason"]) == ("dismissed", REASON)


async def test_a_dismissed_webhook_is_not_reprocessed_nor_dismissed_again(relay):
    # Valid today, as if an older relay had quarantined it: reprocessing would deliver it.
    held = seed_quarantined(
        relay,
        fixture_bytes("bringg/rating_submitted.json"),
        errors=["an old reason"],
        received_at=ago(hours=1),
    )
    await post(relay, f"/admin/webhooks/{held}/dismiss", json={"reason": REASON})

    reprocessed = await relay.post(f"/admin/webhooks/{held}/reprocess", headers=ADMIN)
    again = await relay.post(f"/admin/webhooks/{held}/dismiss", json={"reason": "another"}, headers=ADMIN)

    assert (reprocessed.status, reprocessed.content_type) == (409, PROBLEM)
    assert (await reprocessed.json())["webhook_status"] == "dismissed"
    assert (again.status, (await again.json())["webhook_status"]) == (409, "dismissed")
    assert every_delivery(relay) == []
    _, shown = await get(relay, f"/admin/webhooks/{held}")
    assert (shown["status"], shown["dismissed_reason"]) == ("dismissed", REASON)


async def test_only_a_quarantined_webhook_is_dismissed(relay):
    accepted = await webhook(relay, rating_webhook(1, "ORD-1"))

    refused = await relay.post(
        f"/admin/webhooks/{accepted['id']}/dismiss", json={"reason": "x"}, headers=ADMIN
    )
    unknown = await relay.post("/admin/webhooks/404/dismiss", json={"reason": "x"}, headers=ADMIN)

    assert (refused.status, (await refused.json())["webhook_status"]) == (409, "accepted")
    assert (unknown.status, unknown.content_type) == (404, PROBLEM)


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"reason": ""}',
        b'{"reason": "   "}',
        b'{"reason": 7}',
        b'{"reason": "two\\nlines"}',
        json.dumps({"reason": "x" * 501}).encode(),
        b'{"reason": "x", "by": "me"}',
    ],
)
async def test_a_dismissal_says_why_in_a_line(relay, body):
    held = await quarantined(relay)

    refused = await relay.post(f"/admin/webhooks/{held}/dismiss", data=body, headers=ADMIN)

    assert (refused.status, refused.content_type) == (400, PROBLEM)
    _, shown = await get(relay, f"/admin/webhooks/{held}")
    assert shown["status"] == "quarantined"


# The CLI


def test_relay_webhooks_dismiss_closes_it_logs_the_admin_line_and_status_stops_counting_it(store):
    held = seed_quarantined(store, b"{}", errors=["not a rating"], received_at=ago(minutes=3))

    dismissed = run(store, "webhooks", "dismiss", str(held), "--reason", REASON)
    again = run(store, "webhooks", "dismiss", str(held), "--reason", REASON)
    unexplained = run(store, "webhooks", "dismiss", str(held), "--reason", " ")
    document = relay_json(store, "status")

    assert dismissed.returncode == 0, dismissed.stderr
    assert dismissed.stdout == f"webhook {held}: dismissed ({REASON})\n"
    [line] = [json.loads(line) for line in dismissed.stderr.splitlines()]
    assert (line["event"], line["webhook_id"], line["reason"]) == ("admin.webhook_dismissed", held, REASON)
    assert (again.returncode, again.stderr) == (
        1,
        f"relay: webhook {held} is dismissed: only quarantined ones are dismissed\n",
    )
    assert (unexplained.returncode, unexplained.stderr) == (
        2,
        "relay: --reason: say why the webhook is dismissed\n",
    )
    assert (document["webhooks"]["quarantined"], document["webhooks"]["dismissed"]) == (0, 1)


def test_relay_webhooks_reprocess_accepts_a_body_now_usable_and_refuses_a_dismissed_one(store):
    usable = seed_quarantined(
        store, fixture_bytes("bringg/rating_submitted.json"), errors=["old"], received_at=ago(hours=1)
    )
    dismissed = seed_quarantined(store, b"{}", errors=["not a rating"], received_at=ago(hours=1))
    run(store, "webhooks", "dismiss", str(dismissed), "--reason", REASON)

    reprocessed = run(store, "webhooks", "reprocess", str(usable))
    refused = run(store, "webhooks", "reprocess", str(dismissed))

    assert reprocessed.returncode == 0, reprocessed.stderr
    [delivery] = every_delivery(store)
    assert reprocessed.stdout.startswith(f"webhook {usable}: accepted, delivery {delivery.id}; ")
    [line] = [json.loads(line) for line in reprocessed.stderr.splitlines()]
    assert (line["event"], line["outcome"], line["delivery_id"]) == (
        "admin.webhook_reprocessed",
        "accepted",
        delivery.id,
    )
    assert (refused.returncode, refused.stderr) == (
        1,
        f"relay: webhook {dismissed} is dismissed: only quarantined ones are reprocessed\n",
    )
