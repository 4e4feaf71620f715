"""Prometheus metrics: counters moved as the relay works, and gauges read from the database when scraped."""

import bisect
import functools
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from relay.keys import STORE
from relay.ops.fresh import Fresh
from relay.ops.health import WORKER_SILENT_AFTER_S, worker_beats
from relay.ops.shared_metrics import count_in_files, every_process
from relay.store.api import Store
from relay.store.records import Backlog

WEBHOOK_OUTCOMES = (
    "accepted",
    "superseded",
    "duplicate",
    "ignored",
    "quarantined",
    "unauthorized",
    "too_large",
    "too_slow",
    "store_failed",
    "unknown_tenant",
)
DELIVERY_OUTCOMES = (
    "delivered",
    "reconciled",
    "retry_scheduled",
    "dead",
    "unmatched",
    "superseded",
    "released",
    "paused",
    "deferred",
    "inquiry_busy",
    "lease_lost",
)
# fmt: off
# From a fast Quivo answer to a delivery that waited out a day of retries.
LATENCY_BUCKETS_S = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 10800, 21600, 43200, 86400,
)
# fmt: on


@dataclass(frozen=True)
class _StoreReading:
    """What the database said at the last refresh."""

    deliveries_by_state: dict[str, int]
    backlog: Backlog
    worker_heartbeat_age_s: float | None
    workers_live: int


class _StoreGauges:
    """A collector for the gauges read from the database: it can leave out a value nobody knows."""

    def __init__(self) -> None:
        self.reading: _StoreReading | None = None

    def describe(self) -> Iterator[Metric]:
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.reading)

    def _families(self, reading: _StoreReading | None) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(
            "relay_deliveries", "Deliveries in the database, by state.", labels=["state"]
        )
        backlog_age = GaugeMetricFamily(
            "relay_backlog_age_seconds",
            "Seconds the oldest undelivered rating has waited since it was accepted (or replayed); "
            "0 when none waits. Unmatched ones are not counted.",
        )
        worker_lag = GaugeMetricFamily(
            "relay_worker_lag_seconds",
            "Seconds since the earliest due delivery fell due without the worker taking it; 0 when none is.",
        )
        heartbeat = GaugeMetricFamily(
            "relay_worker_heartbeat_age_seconds",
            "Seconds since any worker last went round its loop (the freshest heartbeat); absent until one "
            "ever has, and once every worker stopped cleanly.",
        )
        # One gauge for them all, not one series per worker: a worker's id is new at every start, so series
        # labelled with it would pile up in Prometheus with each deploy. `relay status` names them.
        live = GaugeMetricFamily(
            "relay_workers_live",
            f"Workers that beat within the last {WORKER_SILENT_AFTER_S:g} s: those delivering now.",
        )
        if reading is not None:
            live.add_metric([], reading.workers_live)
            for state, count in reading.deliveries_by_state.items():
                by_state.add_metric([state], count)
            backlog_age.add_metric([], reading.backlog.age_s or 0.0)
            worker_lag.add_metric([], reading.backlog.worker_lag_s or 0.0)
            if reading.worker_heartbeat_age_s is not None:
                heartbeat.add_metric([], reading.worker_heartbeat_age_s)
        yield from (by_state, backlog_age, worker_lag, heartbeat, live)


class _Tallies:
    """Counts kept as plain integers, added to their counters whenever the registry is read (it reads this
    collector first): a counter's inc() validates, checks and locks at every call, most of what counting a
    webhook cost. Counted and read in the event loop's thread, as the relay counts and answers scrapes."""

    def __init__(self) -> None:
        self._tallies: list[tuple[Counter, list[int]]] = []

    def counting(self, counter: Counter) -> Callable[..., list[int]]:
        """The tally of each series of `counter`, by its label values: a one-item list whose item counts for
        the series until the registry is next read."""

        def tally_of(*labels: str) -> list[int]:
            tally = [0]
            self._tallies.append((counter.labels(*labels), tally))
            return tally

        return functools.cache(tally_of)

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        for series, tally in self._tallies:
            if tally[0]:
                series.inc(tally[0])
                tally[0] = 0
        return iter(())


# How prometheus-client spells a bucket's bound in `le` ("0.05", "1.0", "+Inf"); it ships untyped.
_spelled_bound: Callable[[float], str] = floatToGoString


class _Histogram:
    """A histogram without labels, counted per bucket in plain numbers and read as prometheus-client's
    Histogram reads: its observe() locks and walks the buckets at every call, most of what timing cost."""

    def __init__(self, name: str, documentation: str, bounds: Sequence[float]) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = (*bounds, math.inf)
        self._counts = [0] * len(self._bounds)
        # Added in the order observe() would have added them: the same float to the bit.
        self._sum = 0.0
        self._created = time.time()

    def observe(self, value: float) -> None:
        """Counted in the first bucket whose bound is at least `value`."""
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation)
        cumulative = itertools.accumulate(self._counts)
        buckets = [(_spelled_bound(le), n) for le, n in zip(self._bounds, cumulative, strict=True)]
        family.add_metric([], buckets, self._sum)
        family.add_sample(f"{self._name}_created", {}, self._created)
        yield family


class RelayMetrics:
    """The relay's metrics, in a registry of their own so that two applications never share counts.

    With `shared`, the directory the processes of one `relay serve --processes N` count in, its counters and
    histogram keep their values in this process's files there, and a scrape shows every process's sum.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, shared: Path | None = None) -> None:
        self.shared = shared
        if shared is not None:
            count_in_files()
        self.registry = CollectorRegistry()
        self._tallies = _Tallies()
        self.registry.register(self._tallies)
        self._webhooks = Counter(
            "relay_webhooks_received",
            "Webhooks received, by what became of each and the tenant whose URL they came to "
            "('' for a URL naming no tenant).",
            ["outcome", "tenant"],
            registry=self.registry,
        )
        # Not relay_deliveries_total: relay_deliveries is the gauge of rows by state, another family.
        self._deliveries = Counter(
            "relay_delivery_outcomes",
            "Delivery passes finished, by outcome and the delivery's tenant.",
            ["outcome", "tenant"],
            registry=self.registry,
        )
        self._quivo_requests = Counter(
            "relay_quivo_requests",
            "Requests made to Quivo, by action, HTTP status ('none' when no answer came) and the tenant "
            "whose account it is.",
            ["action", "status", "tenant"],
            registry=self.registry,
        )
        latency = (
            "relay_delivery_latency_seconds",
            "From a webhook accepted to its rating delivered on Quivo.",
        )
        self._latency: _Histogram | Histogram
        if shared is None:
            self._latency = _Histogram(*latency, LATENCY_BUCKETS_S)
            self.registry.register(self._latency)
        else:
            # Its counts go to the files as they come: _Histogram's stay in this process.
            self._latency = Histogram(*latency, buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self._store = _StoreGauges()
        # Anyone can scrape: a flood of scrapes still reads the database once a second (see relay.ops.fresh).
        self._store_reads: Fresh[_StoreReading] = Fresh(clock=clock)
        self.registry.register(self._store)
        # The store's gauges read here alone: every process reads the same database.
        self._scraped = self.registry if shared is None else every_process(shared, self._store)
        # Each series resolved once, and counted in its tally: labels() validates, locks and builds its key at
        # every call. Outcomes are few and tenants those configured (or '' for none), so the caches stay as
        # small as the series.
        self._webhook_tally = self._tallies.counting(self._webhooks)
        self._delivery_tally = self._tallies.counting(self._deliveries)
        self._quivo_tally = self._tallies.counting(self._quivo_requests)
        # Series alerted on exist at 0 from the first scrape, so rate() and increase() see their first rise.
        self._webhooks.labels("unknown_tenant", "")

    def count_tenants(self, tenants: Iterable[str]) -> None:
        """Each tenant's webhook and delivery series exist at 0 from now on (at start, and for a tenant a
        reload adds)."""
        for tenant in tenants:
            for outcome in WEBHOOK_OUTCOMES:
                if outcome != "unknown_tenant":
                    self._webhooks.labels(outcome, tenant)
            for outcome in DELIVERY_OUTCOMES:
                self._deliveries.labels(outcome, tenant)

    def webhook_received(self, outcome: str, *, tenant: str) -> None:
        """One webhook answered on a tenant's URL: accepted, duplicate, quarantined, unauthorized, ..."""
        self._webhook_tally(outcome, tenant)[0] += 1

    def delivery_finished(self, outcome: str, *, tenant: str) -> None:
        """One pass over a claimed delivery of the tenant's ended: delivered, retry_scheduled, dead, ..."""
        self._delivery_tally(outcome, tenant)[0] += 1

    def quivo_requests_of(self, tenant: str) -> Callable[[str, int | None], None]:
        """What counts the calls to one tenant's Quivo account: each call (login, post_rating, get_inquiry)
        and its status, None when none came back."""

        def observe(action: str, status: int | None) -> None:
            self._quivo_tally(action, "none" if status is None else str(status), tenant)[0] += 1

        return observe

    def delivery_latency(self, seconds: float) -> None:
        """How long a rating took from its webhook being accepted to its delivery on Quivo."""
        self._latency.observe(seconds)

    async def refresh_from(self, store: Store) -> None:
        """The gauges' values from the store, read at most once a second whoever asks."""
        self._store.reading = await self._store_reads.get(lambda: _read_store(store))

    def share(self) -> None:
        """Add what was counted since to the counters (to this process's files, when shared)."""
        self._tallies.collect()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        # Reading self.registry adds the tallies first; the shared registry reads the files alone.
        if self.shared is not None:
            self.share()
        # generate_latest writes the 0.0.4 text format; CONTENT_TYPE_LATEST now names 1.0.0 in this library.
        return generate_latest(self._scraped), CONTENT_TYPE_PLAIN_0_0_4


async def _read_store(store: Store) -> _StoreReading:
    """Deliveries by state, the backlog, the workers' heartbeats: what the store gauges show."""
    now = datetime.now(UTC)
    beat, live = await worker_beats(store, now=now)
    return _StoreReading(
        deliveries_by_state=await store.deliveries_by_state(),
        backlog=await store.read_backlog(now=now),
        worker_heartbeat_age_s=None if beat is None else (now - beat.beat_at).total_seconds(),
        workers_live=len(live),
    )


METRICS = web.AppKey("metrics", RelayMetrics)

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus scrape: the counters as they stand and the store gauges read within the last second."""
    relay_metrics = request.config_dict[METRICS]
    await relay_metrics.refresh_from(request.config_dict[STORE])
    body, content_type = relay_metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})
