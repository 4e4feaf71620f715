"""The delivery actions every front shares, and the search the console lists by: through the API and CLI."""

import json

import pytest
from structlog.testing import capture_logs

from relay.keys import SETTINGS
from tests.conftest import BACKENDS
from tests.processes import run_relay
from tests.test_admin import ADMIN, delivery_row, relay, seed

pytestmark = pytest.mark.backends(*BACKENDS)

__all__ = ["relay"]  # the admin API's fixture, shared


async def test_the_admin_listing_searches_by_order_rating_or_inquiry_id_and_by_rating_id(relay):
    by_rating = seed(relay, rating_id=4242, external_id="ORD-A")
    by_order = seed(relay, rating_id=7, external_id="4242", merchant_id=2)
    by_inquiry = seed(relay, rating_id=8, external_id="ORD-C", inquiry_id=4242, state="dead")
    seed(relay, rating_id=9, external_id="ORD-4242")

    async def listed(query: str) -> list[int]:
        answer = await relay.get(f"/admin/deliveries?{query}", headers=ADMIN)
        assert answer.status == 200, await answer.text()
        return [item["id"] for item in (await answer.json())["items"]]

    assert await listed("search=4242") == [by_inquiry, by_order, by_rating]
    assert await listed("search=+4242+&state=dead") == [by_inquiry]
    assert await listed("rating_id=4242") == [by_rating]
    refused = await relay.get("/admin/deliveries?rating_id=x", headers=ADMIN)
    assert (refused.status, (await refused.json())["field"]) == (400, "rating_id")


async def test_a_bulk_replay_by_search_replays_what_the_search_finds_and_logs_it(relay):
    found = seed(relay, state="dead", external_id="ORD-77")
    other = seed(relay, state="dead", external_id="ORD-78")

    with capture_logs() as logs:
        answer = await relay.post("/admin/deliveries/replay?search=ORD-77", headers=ADMIN)

    assert answer.status == 200
    assert (await answer.json())["replayed"] == 1
    assert [delivery_row(relay, d)["state"] for d in (found, other)] == ["pending", "dead"]
    [line] = [line for line in logs if line["event"] == "admin.deliveries_replayed"]
    assert line["filter"] == {"state": ["dead", "unmatched"], "search": "ORD-77"}


def test_a_replay_from_the_cli_logs_the_admin_line_on_stderr_and_keeps_stdout_the_answer(relay, tmp_path):
    delivery_id = seed(relay, state="dead")
    env = {"DATABASE_URL": relay.app[SETTINGS].database_url, "LOG_FORMAT": "json"}

    result = run_relay("replay", str(delivery_id), "--json", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["delivery"]["state"] == "pending"
    [line] = [json.loads(text) for text in result.stderr.splitlines() if "admin.delivery_replayed" in text]
    assert (line["delivery_id"], line["was"], line["logger"]) == (delivery_id, "dead", "relay.admin")
