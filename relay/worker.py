"""A delivering process's worker: a delivery loop per tenant, and what the process does once for them all."""

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import replace
from datetime import timedelta

import structlog

from relay.ops.metrics import RelayMetrics
from relay.quivo.client import QuivoClient
from relay.settings import Settings
from relay.store.api import Store, StoreUnavailable
from relay.store.operations import prune
from relay.store.records import WorkerBeat
from relay.tenant_worker import UNMATCHED_TOO_LONG, TenantWorker, utc_now
from relay.tenants.tenant import Tenant

log = structlog.get_logger("relay.delivery")

# How often the worker records that it is alive (in the database, for /readyz and /metrics).
HEARTBEAT_INTERVAL_S = 5.0
# Unmatched deliveries look for a newly added link at least this often.
MAINTENANCE_INTERVAL_S = 10.0
# Retention runs at start and then hourly; a short pause between batches leaves the writer to ingest.
RETENTION_INTERVAL_S = 3600.0
RETENTION_PAUSE_S = 0.05
# Retention and the unmatched sweep run on one worker at a time: the one holding the duty, renewing it at each
# run. A hold lasts a few runs, so a late run keeps it, and another worker takes over once its holder died.
RETENTION_DUTY_S = 2 * RETENTION_INTERVAL_S
SWEEP_DUTY_S = 3 * MAINTENANCE_INTERVAL_S
# After the store fails to watch for new work, look again this long later (the sweep covers the gap).
NEW_WORK_RETRY_S = 1.0

# Opens a tenant's Quivo session for as long as its delivery loop runs.
Connect = Callable[[Tenant], AbstractAsyncContextManager[QuivoClient]]


class Worker:
    """One delivery loop per tenant (relay/tenant_worker.py); once for them all, this process's heartbeat
    in the workers' registry, retention and the unmatched sweep (when it holds those duties), and waking
    the loops when another process stored new work."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: RelayMetrics,
        tenants: Sequence[Tenant],
        connect: Connect,
        *,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self._tenants = list(tenants)
        self._connect = connect
        # Set by a webhook stored in this process, and by the watch for other processes' work.
        self._wake = wake or asyncio.Event()
        self.tenant_workers: dict[str, TenantWorker] = {}
        # Each loop's Quivo session, closed when its loop stops (at the end, or when a reload drops it).
        self._sessions: dict[str, AsyncExitStack] = {}
        # Loops start, stop and restart one change at a time: the first start, then each reload in turn.
        self._changing = asyncio.Lock()
        self._identity = _identity()
        self._stopping = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_beat = float("-inf")
        self._last_maintenance = float("-inf")

    @property
    def worker_id(self) -> str:
        """This worker's name in the store's registry: host, pid and a random part."""
        return self._identity.worker_id

    @property
    def paused_reason(self) -> str | None:
        """Why deliveries are held, naming the tenants paused when there are several; None when none is."""
        paused = {name: one.paused_reason for name, one in self.tenant_workers.items() if one.paused_reason}
        if not paused:
            return None
        if len(self.tenant_workers) == 1:
            return next(iter(paused.values()))
        return "; ".join(f"{name}: {reason}" for name, reason in sorted(paused.items()))

    @property
    def last_heartbeat(self) -> float | None:
        """When the slowest of the delivery loops last went round (None until every one has)."""
        rounds = [one.last_round for one in self.tenant_workers.values()]
        if not rounds or None in rounds:
            return None
        return min(round_ for round_ in rounds if round_ is not None)

    def start(self) -> None:
        """Run the delivery loops, the heartbeat, retention and the sweep in the background until stop()."""
        self._tasks = [
            asyncio.create_task(self._run(), name="relay-worker"),
            asyncio.create_task(self._retention(), name="relay-retention"),
        ]

    async def stop(self) -> None:
        """Stop claiming; let sends in flight finish within the grace time; release the rest; leave."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._changing:
            released = await self._stop_loops(list(self.tenant_workers))
        await self._leave()
        log.info("worker.stopped", released=released)

    async def _run(self) -> None:
        try:
            await self.store.retry_unmatched(now=utc_now())
        except StoreUnavailable as error:
            log.error("worker.store_unavailable", error=str(error))
        async with self._changing:
            for tenant in self._tenants:
                if tenant.name not in self.tenant_workers:  # a reload may have come first
                    await self._start_loop(tenant)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_new_work())
            group.create_task(self._pass_on_wakes())
            group.create_task(self._maintain())

    async def reload(self, tenants: Sequence[Tenant]) -> None:
        """Follow a reloaded tenants file: loops for new tenants, changed ones restarted, removed ones
        stopped as stop() stops them (a removed tenant's deliveries wait, unclaimed, for its return)."""
        async with self._changing:
            if self._stopping.is_set():
                return  # the process is leaving: its loops stop with it
            wanted = {tenant.name: tenant for tenant in tenants}
            running = {tenant.name: tenant for tenant in self._tenants}
            # A frozen dataclass: any changed value (a secret, a limit, the account) restarts the loop.
            await self._stop_loops([name for name, tenant in running.items() if wanted.get(name) != tenant])
            self._tenants = list(tenants)
            for tenant in self._tenants:
                if tenant.name not in self.tenant_workers:
                    await self._start_loop(tenant)
            self._beat_now.set()  # a stopped loop's pause leaves the beat at once

    async def _start_loop(self, tenant: Tenant) -> None:
        sessions = AsyncExitStack()
        client = await sessions.enter_async_context(self._connect(tenant))
        one = TenantWorker(
            self.settings, tenant, self.store, client, self.metrics, on_pause_change=self._beat_now.set
        )
        self._sessions[tenant.name] = sessions
        self.tenant_workers[tenant.name] = one
        one.start()

    async def _stop_loops(self, names: Sequence[str]) -> int:
        """Stop these tenants' loops together, gracefully, then close their sessions; how many released."""
        stopping = [self.tenant_workers.pop(name) for name in names if name in self.tenant_workers]
        released = sum(await asyncio.gather(*(one.stop() for one in stopping)))
        for name in names:
            if (sessions := self._sessions.pop(name, None)) is not None:
                await sessions.aclose()
        return released

    async def _maintain(self) -> None:
        """The heartbeat every few seconds (and at once when a pause begins or ends), and the sweep."""
        while True:
            asked = self._beat_now.is_set()
            self._beat_now.clear()
            try:
                await self._beat(asked=asked)
                await self._sweep()
            except StoreUnavailable as error:
                log.error("worker.store_unavailable", error=str(error))
            # asyncio.timeout, not wait_for: a stop's cancel arriving as the event is set must not be lost.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.relay_sweep_interval_s):
                    await self._beat_now.wait()

    async def _beat(self, *, asked: bool) -> None:
        now = time.monotonic()
        if now - self._last_beat < HEARTBEAT_INTERVAL_S and not asked:
            return
        self._last_beat = now
        # In the database, so a web process beside a separate worker can tell whether it lives.
        await self.store.beat(replace(self._identity, beat_at=utc_now(), paused_reason=self.paused_reason))

    async def _sweep(self) -> None:
        """Unmatched deliveries whose link was saved go again; those waiting too long die (one worker)."""
        now = time.monotonic()
        if now - self._last_maintenance < MAINTENANCE_INTERVAL_S:
            return
        self._last_maintenance = now
        wall = utc_now()
        until = wall + timedelta(seconds=SWEEP_DUTY_S)
        if not await self.store.take_duty("unmatched_sweep", self.worker_id, now=wall, until=until):
            return  # another worker sweeps for the relay
        # Each tenant's deliveries by its own RELAY_UNMATCHED_TTL; a removed tenant's wait for its return.
        ttls = {tenant.name: wall - tenant.unmatched_ttl for tenant in self._tenants}
        swept = await self.store.sweep_unmatched(now=wall, expire_before=ttls)
        woken, expired = swept.woken, swept.expired
        if woken or expired:
            log.info("worker.unmatched_swept", woken=len(woken), expired=len(expired))
        if woken:
            self._wake.set()
        # One `delivery.dead` per dead delivery, however it died: what an alert on deaths counts.
        for dead in expired:
            self.metrics.delivery_finished("dead", tenant=dead.tenant)
            log.error(
                "delivery.dead",
                tenant=dead.tenant,
                delivery_id=dead.id,
                merchant_id=dead.merchant_id,
                rating_id=dead.rating_id,
                inquiry_id=None,
                attempt=dead.attempts,
                state="dead",
                error=UNMATCHED_TOO_LONG,
            )

    async def _pass_on_wakes(self) -> None:
        """Each delivery loop clears its own wake: one shared event would let one loop swallow another's."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            for one in self.tenant_workers.values():
                one.wake()

    async def _watch_new_work(self) -> None:
        """Wake the loops when another process may have made deliveries due: a web process, the CLI.

        A wake that finds nothing due costs one look for due deliveries, which writes nothing.
        """
        while True:
            try:
                async for _ in self.store.new_work():
                    self._wake.set()
            except StoreUnavailable:
                pass  # the loops report an unusable store; the sweep finds what a missed wake would have
            await asyncio.sleep(NEW_WORK_RETRY_S)

    async def _retention(self) -> None:
        """Prune finished records past RELAY_RETENTION_DAYS, hourly, in small batches beside ingest."""
        while True:
            try:
                now = utc_now()
                until = now + timedelta(seconds=RETENTION_DUTY_S)
                if await self.store.take_duty("retention", self.worker_id, now=now, until=until):
                    await self._prune()
            except Exception as error:
                # Retention must never die quietly: the next hour tries again.
                log.error("retention.failed", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(RETENTION_INTERVAL_S)

    async def _prune(self) -> None:
        older_than = utc_now() - timedelta(days=self.settings.relay_retention_days)
        pruned = await prune(self.store, older_than=older_than, pause_s=RETENTION_PAUSE_S)
        if pruned.deliveries or pruned.webhooks:
            log.info(
                "retention.pruned",
                deliveries=pruned.deliveries,
                attempts=pruned.attempts,
                webhooks=pruned.webhooks,
                older_than=older_than.isoformat(),
            )

    async def _leave(self) -> None:
        """A clean stop: out of the registry at once, and its duties free for another worker now."""
        now = utc_now()
        try:
            for duty in ("retention", "unmatched_sweep"):
                # Holding it again until now ends this worker's hold; another worker's is left as it is.
                await self.store.take_duty(duty, self.worker_id, now=now, until=now)
            await self.store.forget_worker(self.worker_id)
        except StoreUnavailable as error:
            # Its beat goes stale and its holds run out: the relay learns of the stop a little later.
            log.error("worker.store_unavailable", error=str(error))


def _identity() -> WorkerBeat:
    """Who this worker is in the store's registry; each beat fills in its time and pause."""
    host, started = socket.gethostname(), utc_now()
    worker_id = f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return WorkerBeat(worker_id, host, os.getpid(), started_at=started, beat_at=started)
