"""The console's overview through HTTP, on each backend: what it shows, and every stored value as text."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from relay.app import create_app
from relay.domain.delivery import DELIVERY_STATES
from relay.keys import STORE
from relay.pages.chart import HEIGHT, LEFT, TOP, activity_chart
from relay.store.activity import MinuteActivity
from relay.store.records import AccountPause, WorkerBeat
from tests.conftest import AUTH, BACKENDS
from tests.forwarding import rating_webhook
from tests.test_store_contract import inbound, rating

TOKEN = "console-overview-admin-token-0123456789"
HOSTILE = "<script>alert(1)</script>"
pytestmark = pytest.mark.backends(*BACKENDS)


@pytest.fixture
async def console(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(relay_admin_token=TOKEN), run_worker=False))
    answer = await client.post("/console/sign-in", data={"token": TOKEN}, allow_redirects=False)
    assert answer.status == 303
    return client


async def overview_page(console) -> str:
    answer = await console.get("/console")
    assert answer.status == 200
    return await answer.text()


def section(page: str, heading_id: str) -> str:
    """The text of one <section> of the page, by its heading's id."""
    found = re.search(rf'<section aria-labelledby="{heading_id}">(.*?)</section>', page, re.S)
    assert found, heading_id
    return found[1]


def cells(html: str) -> list[str]:
    return [
        re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", html, re.S)
    ]


async def test_an_empty_relay(console):
    page = await overview_page(console)
    assert "none due" in page and "none waiting" in page
    assert "No worker has ever run on this database" in section(page, "workers")
    assert "None: every account takes calls." in section(page, "pauses")
    assert "None." in section(page, "quarantine")
    assert "Tenant" not in cells(section(page, "states"))  # one tenant: no table per tenant
    assert "(0)" in section(page, "activity")


async def test_what_the_overview_shows(console):
    store = console.app[STORE]
    now = datetime.now(UTC)
    for rating_id in (1, 2):
        answer = await console.post(
            "/webhooks/bringg", data=rating_webhook(rating_id, f"INQ-{rating_id}"), headers=AUTH
        )
        assert answer.status == 202
    hostile = b'{"webhook_type": "rating_submitted", "merchant_id": 1, "rating": "' + HOSTILE.encode() + b'"}'
    assert (await console.post("/webhooks/bringg", data=hostile, headers=AUTH)).status == 202
    await store.record_webhook(
        inbound(rating(3), at=now, tenant="acme"), recheck_before=now - timedelta(days=1)
    )
    await store.beat(
        WorkerBeat("worker-1", HOSTILE, 4242, now - timedelta(minutes=5), now, "Quivo " + HOSTILE)
    )
    await store.beat(WorkerBeat("worker-0", "old-host", 1, now - timedelta(days=2), now - timedelta(hours=1)))
    await store.pause_account(AccountPause("quivo-acme", "401 " + HOSTILE, until=now + timedelta(minutes=2)))

    page = await overview_page(console)

    states = cells(section(page, "states"))
    assert states[:8] == ["Tenant", *DELIVERY_STATES]
    assert states[states.index("acme (not configured)") :][:3] == ["acme (not configured)", "1", "0"]
    assert states[states.index("default") :][:2] == ["default", "2"]
    assert states[states.index("All tenants") :][:2] == ["All tenants", "3"]
    assert "Tenant acme: 1 waiting, tenant not configured" in section(page, "states")
    assert re.search(r'id="worker-lag">\d+s<', page) and re.search(r'id="backlog-age">\d+s<', page)
    assert 'id="quarantined-count">1<' in page
    assert "(4)" in section(page, "activity") and "4 and 0 in all" in page
    workers = cells(section(page, "workers"))
    assert "worker-1" in workers and "worker-0" not in workers  # silent for an hour: not live
    assert f"Quivo {HOSTILE}".replace("<", "&lt;").replace(">", "&gt;") in section(page, "workers")
    assert "quivo-acme" in cells(section(page, "pauses"))
    assert "in 1m" in section(page, "pauses") or "in 2m" in section(page, "pauses")
    quarantine = section(page, "quarantine")
    assert "All 1 quarantined webhooks" in quarantine
    assert "rating: Input should be an object" in cells(quarantine)
    # Every value that came from outside is text: no tag of it reaches the page.
    assert HOSTILE not in page
    assert page.count("&lt;script&gt;") >= 3


async def test_the_chart_draws_each_minute_against_the_busiest():
    start = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
    minutes = [
        MinuteActivity(start + timedelta(minutes=n), webhooks, delivered)
        for n, (webhooks, delivered) in enumerate([(0, 0), (4, 1), (2, 2)])
    ]

    chart = activity_chart(minutes)

    assert (chart.peak, chart.first, chart.last) == (4, "01:00", "01:02")
    assert (chart.total_webhooks, chart.total_delivered) == (6, 3)
    bottom, mid = chart.bottom, (chart.bottom + TOP) / 2
    assert (
        chart.webhooks
        == f"{LEFT}.0,{bottom}.0 {(LEFT + chart.right) / 2:.1f},{TOP}.0 {chart.right}.0,{mid:.1f}"
    )
    assert chart.delivered.split()[1] == f"{(LEFT + chart.right) / 2:.1f},{bottom - (bottom - TOP) / 4:.1f}"
    assert chart.height == HEIGHT
    assert activity_chart(minutes[:1]).peak == 1  # nothing yet: a flat line at 0, not a division by 0
