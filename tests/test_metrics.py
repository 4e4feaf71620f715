"""`/metrics` through HTTP: counters move when reported, gauges follow the database, apps never share."""

import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay.keys import STORE
from relay.ops.fresh import FRESH_FOR_S
from relay.ops.metrics import LATENCY_BUCKETS_S, METRICS, RelayMetrics, routes
from relay.settings import Settings
from relay.store import create_store
from relay.store.api import Store
from relay.store.records import Row, WorkerBeat
from relay.store.sqlite.store import SqliteStore
from tests.beats import worker_beat
from tests.conftest import BACKENDS

RATING_IDS = itertools.count(1)
# The gauges read the store: each test that reads one runs on every backend.
pytestmark = pytest.mark.backends(*BACKENDS)


@pytest.fixture
async def store(make_settings: Callable[..., Settings]) -> AsyncIterator[Store]:
    """An opened store on the test's database, closed after the test."""
    opened = create_store(make_settings().database_url, timeout_s=5, pool_size=1)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def client(aiohttp_client, store):
    app = web.Application()
    app[STORE] = store
    # A clock two seconds on at every reading: no store reading is fresh at the next scrape.
    app[METRICS] = RelayMetrics(clock=itertools.count(0, 2 * FRESH_FOR_S).__next__)
    app.add_routes(routes)
    return await aiohttp_client(app)


async def scrape(client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


async def insert_deliveries(
    store: Store,
    state: str,
    next_attempt_at: datetime | None,
    count: int,
    *,
    created_at: datetime | None = None,
) -> None:
    """Deliveries written as `relay db copy` writes rows, beside the relay's own writes."""
    now = datetime.now(UTC)
    rows: list[Row] = []
    for _ in range(count):
        number = next(RATING_IDS)
        rows.append(
            {
                "id": number,
                "webhook_id": 1,
                "merchant_id": 1,
                "rating_id": number,
                "version": "",
                "stars": 4,
                "rating": "{}",
                "state": state,
                "next_attempt_at": next_attempt_at,
                "created_at": created_at or now,
                "updated_at": now,
            }
        )
    await store.import_rows("deliveries", rows)


async def test_counters_move_as_work_is_reported(client):
    metrics = client.app[METRICS]
    metrics.webhook_received("accepted", tenant="default")
    metrics.webhook_received("accepted", tenant="default")
    metrics.delivery_finished("dead", tenant="default")
    metrics.quivo_requests_of("acme")("send", 201)
    metrics.quivo_requests_of("default")("login", None)
    metrics.delivery_latency(1.5)

    values = await scrape(client)

    assert values[key("relay_webhooks_received_total", outcome="accepted", tenant="default")] == 2
    assert values[key("relay_delivery_outcomes_total", outcome="dead", tenant="default")] == 1
    assert values[key("relay_quivo_requests_total", action="send", status="201", tenant="acme")] == 1
    assert values[key("relay_quivo_requests_total", action="login", status="none", tenant="default")] == 1
    assert values[key("relay_delivery_latency_seconds_count")] == 1
    assert values[key("relay_delivery_latency_seconds_bucket", le="1.0")] == 0
    assert values[key("relay_delivery_latency_seconds_bucket", le="2.5")] == 1


async def test_each_scrape_shows_every_count_so_far_once(client):
    metrics = client.app[METRICS]
    accepted = key("relay_webhooks_received_total", outcome="accepted", tenant="default")
    sent = key("relay_quivo_requests_total", action="send", status="201", tenant="acme")
    observe = metrics.quivo_requests_of("acme")
    metrics.webhook_received("accepted", tenant="default")
    observe("send", 201)

    first = await scrape(client)
    again = await scrape(client)
    for _ in range(3):
        metrics.webhook_received("accepted", tenant="default")
        observe("send", 201)
    later = await scrape(client)

    assert (first[accepted], again[accepted], later[accepted]) == (1, 1, 4)
    assert (first[sent], again[sent], later[sent]) == (1, 1, 4)
    assert metrics.registry.get_sample_value(accepted[0], dict(accepted[1])) == 4


async def test_alerted_series_exist_at_zero_from_the_first_scrape(client):
    client.app[METRICS].count_tenants(["default", "acme"])

    values = await scrape(client)

    for tenant in ("default", "acme"):
        assert values[key("relay_webhooks_received_total", outcome="quarantined", tenant=tenant)] == 0
        assert values[key("relay_webhooks_received_total", outcome="store_failed", tenant=tenant)] == 0
        assert values[key("relay_delivery_outcomes_total", outcome="dead", tenant=tenant)] == 0
        assert values[key("relay_delivery_outcomes_total", outcome="retry_scheduled", tenant=tenant)] == 0


async def test_scrape_is_prometheus_text(client):
    response = await client.get("/metrics")

    assert response.content_type == "text/plain"
    assert "version=0.0.4" in response.headers["Content-Type"]
    assert "# TYPE relay_deliveries gauge" in await response.text()


async def test_deliveries_gauge_counts_rows_by_state_every_state_present(client, store):
    await insert_deliveries(store, "pending", datetime.now(UTC) + timedelta(hours=1), 3)
    await insert_deliveries(store, "dead", None, 1)

    values = await scrape(client)

    assert values[key("relay_deliveries", state="pending")] == 3
    assert values[key("relay_deliveries", state="dead")] == 1
    assert values[key("relay_deliveries", state="delivered")] == 0
    assert values[key("relay_deliveries", state="superseded")] == 0


async def test_backlog_age_is_how_long_the_oldest_undelivered_rating_has_waited(client, store):
    nothing_waits = await scrape(client)
    now = datetime.now(UTC)
    # Backing off, not due for minutes: it has still waited since it was accepted.
    await insert_deliveries(
        store, "retrying", now + timedelta(minutes=5), 1, created_at=now - timedelta(hours=2)
    )
    await insert_deliveries(store, "pending", now, 1, created_at=now - timedelta(minutes=10))
    # Waiting for a link, not for Quivo: not in the backlog; nor are finished ones.
    await insert_deliveries(store, "unmatched", None, 1, created_at=now - timedelta(days=2))
    await insert_deliveries(store, "dead", None, 1, created_at=now - timedelta(days=3))

    waiting = await scrape(client)

    assert nothing_waits[key("relay_backlog_age_seconds")] == 0
    assert 7200 <= waiting[key("relay_backlog_age_seconds")] < 7260


async def test_worker_lag_is_how_long_the_earliest_due_delivery_has_been_due(client, store):
    nothing_due = await scrape(client)
    await insert_deliveries(store, "retrying", datetime.now(UTC) + timedelta(minutes=5), 1)  # not yet due
    await insert_deliveries(store, "pending", datetime.now(UTC) - timedelta(minutes=10), 1)
    await insert_deliveries(store, "retrying", datetime.now(UTC) - timedelta(minutes=1), 1)

    overdue = await scrape(client)

    assert nothing_due[key("relay_worker_lag_seconds")] == 0
    assert 600 <= overdue[key("relay_worker_lag_seconds")] < 660


async def test_worker_heartbeat_age_appears_once_a_worker_beats(client, store):
    before = await scrape(client)
    await store.beat(worker_beat(datetime.now(UTC) - timedelta(seconds=5)))

    after = await scrape(client)

    assert key("relay_worker_heartbeat_age_seconds") not in before
    assert 5 <= after[key("relay_worker_heartbeat_age_seconds")] < 60


async def test_live_workers_gauge_counts_the_workers_that_beat_within_a_minute(client, store):
    now = datetime.now(UTC)
    before = await scrape(client)
    for worker_id, ago_s in (("first", 2), ("second", 10), ("gone", 300)):
        beat = worker_beat(now - timedelta(seconds=ago_s))
        await store.beat(WorkerBeat(worker_id, beat.host, beat.pid, beat.started_at, beat.beat_at))

    after = await scrape(client)

    assert (before[key("relay_workers_live")], after[key("relay_workers_live")]) == (0, 2)
    assert 2 <= after[key("relay_worker_heartbeat_age_seconds")] < 10


def test_two_applications_never_share_counts():
    first, second = RelayMetrics(), RelayMetrics()

    first.webhook_received("accepted", tenant="default")
    second.count_tenants(["default"])
    first.delivery_latency(0.2)

    accepted = {"outcome": "accepted", "tenant": "default"}
    assert first.registry.get_sample_value("relay_webhooks_received_total", accepted) == 1
    assert second.registry.get_sample_value("relay_webhooks_received_total", accepted) == 0
    assert second.registry.get_sample_value("relay_delivery_latency_seconds_count") == 0


def test_latency_reads_as_a_histogram_observed_one_value_at_a_time():
    # Values on, between, below and beyond the bounds, with sums whose float rounding depends on the order.
    batches = [[0.05, 0.050001, 0.0, 2.5, 86400.0, 86400.5, 1e9], [0.1, 0.2, 0.3, 7.0, -1.0], [], [1 / 3] * 5]
    reference = CollectorRegistry()
    histogram = Histogram(
        "relay_delivery_latency_seconds",
        "From a webhook accepted to its rating delivered on Quivo.",
        buckets=LATENCY_BUCKETS_S,
        registry=reference,
    )
    metrics = RelayMetrics()

    def latency(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (sample.name, sample.labels.get("le", "")): sample.value
            for family in registry.collect()
            if family.name == "relay_delivery_latency_seconds"
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    for batch in batches:
        for seconds in batch:
            histogram.observe(seconds)
            metrics.delivery_latency(seconds)
        # Compared to the bit, after each batch: every scrape shows what observe() would have shown.
        assert latency(metrics.registry) == latency(reference)
    assert latency(reference)[("relay_delivery_latency_seconds_count", "")] == 17
    # The same lines on /metrics, its creation time apart.
    assert _text_without_created(metrics.registry) == _text_without_created(reference)


def _text_without_created(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return [
        line.split(" ")[0] if "_created" in line else line
        for line in lines
        if "relay_delivery_latency_seconds" in line
    ]


# Query plans are SQLite's to show.
@pytest.mark.backends("sqlite")
async def test_gauge_reads_walk_indexes(client, store):
    assert isinstance(store, SqliteStore)  # the plans are SQLite's
    reader = store.database.reader
    statements: list[str] = []
    await reader.set_trace_callback(statements.append)

    await client.app[METRICS].refresh_from(store)
    await reader.set_trace_callback(None)  # type: ignore[arg-type]  # sqlite3 takes None: stop tracing

    assert len(statements) == 4
    # The registry of workers holds a row per worker process, not per rating: read whole, it costs nothing.
    for sql in (sql for sql in statements if "FROM workers" not in sql):
        plan = [row[3] for row in await reader.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}")]
        # The lag's `tenants`, a row per tenant each found by a seek, is no table.
        walks = [
            step for step in plan if step.startswith(("SCAN", "SEARCH")) and step.split()[1] != "tenants"
        ]
        assert all("INDEX" in step or "PRIMARY KEY" in step for step in walks), (sql, plan)
        assert not [step for step in plan if "TEMP B-TREE" in step], (sql, plan)
