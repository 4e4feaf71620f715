"""The delivery loop: claims due deliveries and posts each onto its Quivo inquiry, exactly once."""

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from relay.domain.delivery import DeliveryState
from relay.domain.matching import inquiry_id_from_external_id
from relay.domain.message import quivo_rating, render_message
from relay.domain.rating import Rating
from relay.domain.retry import Verdict, leaves_send_unsure, retry_delay, verdict_for_status
from relay.ops.metrics import RelayMetrics
from relay.pacing import QUIVO_ACCOUNT, Pacer, RelayBudget
from relay.quivo.client import LoginFailed, QuivoAnswer, QuivoClient, QuivoError, QuivoNoAnswer
from relay.settings import Settings
from relay.store.api import Store, StoreUnavailable
from relay.store.operations import prune
from relay.store.records import (
    LEASE_LOST,
    AccountPause,
    AttemptAction,
    AttemptRecord,
    ClaimedDelivery,
    Outcome,
    WorkerBeat,
)

log = structlog.get_logger("relay.delivery")

# Unmatched deliveries look for a newly added link at least this often.
MAINTENANCE_INTERVAL_S = 10.0
# Deliveries claimed per Quivo call slot: the spare ones wait on a slot, their leases far from running out.
CLAIM_AHEAD = 2
# After the store fails to watch for new work, look again this long later (the sweep covers the gap).
NEW_WORK_RETRY_S = 1.0
# How often the worker records that it is alive (in the database, for /readyz and /metrics).
HEARTBEAT_INTERVAL_S = 5.0
# Retention runs at start and then hourly; a short pause between batches leaves the writer to ingest.
RETENTION_INTERVAL_S = 3600.0
RETENTION_PAUSE_S = 0.05
# Retention and the unmatched sweep run on one worker at a time: the one holding the duty, renewing it at each
# run. A hold lasts a few runs, so a late run keeps it, and another worker takes over once its holder died.
RETENTION_DUTY_S = 2 * RETENTION_INTERVAL_S
SWEEP_DUTY_S = 3 * MAINTENANCE_INTERVAL_S
# Pauses other workers set (refused credentials, a 429's Retry-After) are read this often, at most.
PAUSES_READ_INTERVAL_S = 1.0
# Another worker's send holds the inquiry: look again this much later. A call takes well under a second
# while its holder's lease lasts minutes, so waiting out the lease would delay ratings for nothing.
INQUIRY_BUSY_RETRY_S = 1.0
INQUIRY_BUSY = "another worker's call to this inquiry was in flight"
# While Quivo refuses our credentials, try logging in again this often, at most.
LOGIN_PROBE_MAX_S = 60.0
# Calls failed this many times in a row (pauses of 0.5, 1 and 2 s between): Quivo is down, not one inquiry.
OUTAGE_FAILURES = 3
ERROR_EXCERPT_CHARS = 300
UNMATCHED_TOO_LONG = "no Quivo inquiry found for this order within RELAY_UNMATCHED_TTL"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Attempt:
    """What one pass over a claimed delivery did, so far."""

    delivery: ClaimedDelivery
    rating: Rating
    inquiry_id: int
    # The lease the delivery is this worker's under: its claim's, then each renewal's before a call.
    leased_until: datetime
    calls: list[AttemptRecord] = field(default_factory=list)
    send_started: bool = False


class Worker:
    """Claims due deliveries under a lease and runs each through reconcile, send and outcome."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        client: QuivoClient,
        metrics: RelayMetrics,
        *,
        wake: asyncio.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.metrics = metrics
        self._wake = wake or asyncio.Event()
        self._rng = rng or random.Random()
        # QUIVO_MAX_CONCURRENCY bounds calls in flight; claiming ahead keeps store round trips off that path.
        self._quivo_slots = asyncio.Semaphore(settings.quivo_max_concurrency)
        self._pacer = Pacer(settings.quivo_max_rps, max_pause_s=settings.relay_retry_max_s)
        # Should this worker die mid-send, Quivo may still commit that send up to the settle time later:
        # a lease (from a claim, or renewed before a call) outlasts the calls and then the settle time.
        self._lease = timedelta(seconds=settings.quivo_lease_s + settings.relay_unsure_settle_s)
        # Beside other workers, the rate, the holds on inquiries and the pauses are the relay's, in the store;
        # alone on a database (SQLite), the worker's own pacer and lock per inquiry keep them, commit-free.
        self._budget = None if store.single_worker else RelayBudget(store, settings.quivo_max_rps)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._inquiries_in_flight: dict[int, tuple[asyncio.Lock, int]] = {}
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._last_maintenance = 0.0
        self._last_beat = 0.0
        self._paused_changed = False
        self.paused_reason: str | None = None
        self._paused_since = 0.0
        self._pause_to_share: AccountPause | None = None
        self._last_pauses_read = float("-inf")
        self._identity = _identity()
        self._probe_delay_s = 1.0
        self._next_probe_at = 0.0
        self._quivo_back = False
        self._freed_on_a_read = False
        self.last_heartbeat: float | None = None

    # The loop ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until stop() is called."""
        await self.store.retry_unmatched(now=utc_now())
        self._watch_task = asyncio.create_task(self._watch_new_work(), name="relay-new-work-watch")
        log.info(
            "worker.started", concurrency=self.settings.quivo_max_concurrency, rps=self.settings.quivo_max_rps
        )
        while not self._stopping.is_set():
            self.last_heartbeat = time.time()
            # Cleared before looking, so whatever happens from here on wakes the wait below.
            self._wake.clear()
            try:
                await self._maintain()
                if self.paused_reason is not None:
                    await self._probe_login()
                    continue
                if self._quivo_back:
                    await self._release_outage_holds()
                wanted, claimed, lease_until = await self._claim()
                if not claimed and self._pacer.failures_in_a_row and not self._in_flight:
                    await self._probe_outage()
            except StoreUnavailable as error:
                log.error("worker.store_unavailable", error=str(error))
                await self._sleep(self.settings.relay_sweep_interval_s)
                continue
            except Exception:
                log.exception("worker.loop_error")
                await self._sleep(self.settings.relay_sweep_interval_s)
                continue
            for delivery in claimed:
                task = asyncio.create_task(
                    self._deliver(delivery, lease_until), name=f"delivery-{delivery.id}"
                )
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if wanted and len(claimed) == wanted:
                continue  # a full batch: more may be due right now
            await self._sleep(
                min(self.settings.relay_sweep_interval_s, self._pacer.paused_for() or float("inf"))
            )

    def start(self) -> None:
        """Run the loop, and retention, in the background until stop()."""
        self._loop_task = asyncio.create_task(self.run(), name="relay-worker")
        self._retention_task = asyncio.create_task(self._retention(), name="relay-retention")

    async def stop(self) -> None:
        """Stop claiming; let sends in flight finish within the grace time; release the rest."""
        self._stopping.set()
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        # After the loop: the loop starts the commit watch, so only now is it surely there if ever.
        for task in (self._retention_task, self._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        late: set[asyncio.Task[None]] = set()
        if self._in_flight:
            _, late = await asyncio.wait(set(self._in_flight), timeout=self.settings.relay_shutdown_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await self._leave()
        log.info("worker.stopped", released=len(late))

    @property
    def worker_id(self) -> str:
        """This worker's name in the store's registry: host, pid and a random part."""
        return self._identity.worker_id

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

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("worker.delivery_crashed", error=repr(task.exception()))

    async def _claim(self) -> tuple[int, list[ClaimedDelivery], datetime]:
        """How many deliveries the worker could take now, those it took, and when their leases end."""
        now = utc_now()
        lease_until = now + self._lease
        free = CLAIM_AHEAD * self.settings.quivo_max_concurrency - len(self._in_flight)
        if free <= 0 or self._pacer.paused_for() > 0:
            return 0, [], lease_until
        claimed = await self.store.claim_due(now=now, lease_until=lease_until, limit=free)
        return free, claimed, lease_until

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _maintain(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_INTERVAL_S or self._paused_changed:
            self._last_beat, self._paused_changed = now, False
            # In the database, so a web process beside a separate worker can tell whether it lives.
            await self.store.beat(
                replace(self._identity, beat_at=utc_now(), paused_reason=self.paused_reason)
            )
        await self._follow_pauses()
        if now - self._last_maintenance < MAINTENANCE_INTERVAL_S:
            return
        self._last_maintenance = now
        wall = utc_now()
        until = wall + timedelta(seconds=SWEEP_DUTY_S)
        if not await self.store.take_duty("unmatched_sweep", self.worker_id, now=wall, until=until):
            return  # another worker sweeps for the relay
        swept = await self.store.sweep_unmatched(
            now=wall, expire_before=wall - self.settings.relay_unmatched_ttl
        )
        woken, expired = swept.woken, swept.expired
        if woken or expired:
            log.info("worker.unmatched_swept", woken=len(woken), expired=len(expired))
        # One `delivery.dead` per dead delivery, however it died: what an alert on deaths counts.
        for dead in expired:
            self.metrics.delivery_finished("dead")
            log.error(
                "delivery.dead",
                delivery_id=dead.id,
                merchant_id=dead.merchant_id,
                rating_id=dead.rating_id,
                inquiry_id=None,
                attempt=dead.attempts,
                state="dead",
                error=UNMATCHED_TOO_LONG,
            )

    async def _follow_pauses(self) -> None:
        """Share this worker's pause with every other, and hold whatever pause another worker shared."""
        await self._share_pause()
        if time.monotonic() - self._last_pauses_read < PAUSES_READ_INTERVAL_S:
            return
        self._last_pauses_read = time.monotonic()
        now = utc_now()
        pauses = [
            pause for pause in await self.store.account_pauses(now=now) if pause.account == QUIVO_ACCOUNT
        ]
        refused = next((pause for pause in pauses if pause.until is None), None)
        if refused is not None:
            self._pause(refused.reason, share=False)
        elif self.paused_reason is not None and self._pause_to_share is None:
            self._resume()  # another worker's login went through and lifted the pause
        for pause in pauses:
            if pause.until is not None:
                self._pacer.pause_for((pause.until - now).total_seconds())

    async def _share_pause(self) -> None:
        pause = self._pause_to_share
        if pause is not None:
            await self.store.pause_account(pause)
            if self._pause_to_share is pause:
                self._pause_to_share = None

    async def _watch_new_work(self) -> None:
        """Wake the loop when another process may have made deliveries due: a web process, the CLI.

        A wake that finds nothing due costs one look for due deliveries, which writes nothing.
        """
        while True:
            try:
                async for _ in self.store.new_work():
                    self._wake.set()
            except StoreUnavailable:
                pass  # the loop reports an unusable store; the sweep finds what a missed wake would have
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
        """Prune finished records past RELAY_RETENTION_DAYS in small batches beside ingest."""
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

    async def _probe_login(self) -> None:
        """While paused: log in again when the probe is due, looking at the shared pauses meanwhile.

        Probes back off from 1 s to a minute: revoked credentials may take an operator hours to fix. Any
        paused worker may probe; the first that gets in lifts the pause for all. Only stop() and the pauses'
        reading cut the wait short: webhooks wake the loop, and must not each become a login.
        """
        wait_s = min(self._next_probe_at - time.monotonic(), PAUSES_READ_INTERVAL_S)
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait_s)
        if self._stopping.is_set() or time.monotonic() < self._next_probe_at:
            return
        try:
            # A real login, even with a token at hand: the pause may come from another worker's refusal.
            await self.client.login_again()
        except QuivoError as error:
            self._probe_delay_s = min(LOGIN_PROBE_MAX_S, self._probe_delay_s * 2)
            self._next_probe_at = time.monotonic() + self._probe_delay_s
            log.warning("worker.paused", reason=self.paused_reason, probe_error=str(error))
            return
        await self.store.lift_pause(QUIVO_ACCOUNT)
        self._pause_to_share = None
        self._resume()

    def _resume(self) -> None:
        paused_s = round(time.monotonic() - self._paused_since, 1)
        log.info("worker.resumed", was_paused_for=paused_s, reason=self.paused_reason)
        self.paused_reason = None
        self._paused_changed = True
        self._probe_delay_s = 1.0
        self._wake.set()

    # Quivo outages ----------------------------------------------------------------------------------

    def _in_outage(self) -> bool:
        return self._pacer.failures_in_a_row >= OUTAGE_FAILURES

    def _quivo_answered(self, *, rating_taken: bool) -> None:
        """A call got a real answer: an outage, if one ran, is over.

        A read alone frees what the outage held once, then not again until a rating goes through: Quivo may
        answer reads while it still fails ratings, and each freeing costs every held delivery an attempt.
        """
        if rating_taken:
            self._freed_on_a_read = False
        if self._in_outage() and not self._freed_on_a_read:
            self._quivo_back = True
            self._freed_on_a_read = not rating_taken
            self._wake.set()
        self._pacer.note_success()

    async def _probe_outage(self) -> None:
        """Nothing due while Quivo fails: one read of an inquiry a held delivery waits on tests the water.

        The pacer spaces probes (OUTAGE_PROBE_MAX_S at most), and a read spends no delivery's attempts.
        A probe that fails counts as a failure, so a real outage soon counts as one (OUTAGE_FAILURES).
        """
        if self._pacer.paused_for() > 0:
            return
        inquiry_id = await self.store.inquiry_held_by_outage(now=utc_now())
        if inquiry_id is None:
            return
        async with self._quivo_slots:
            if await self._turn(max_wait_s=0) is not None:
                return
            try:
                answer = await self.client.get_inquiry(inquiry_id)
            except LoginFailed as error:
                self._pause(error.reason)
                return
            except QuivoError:
                self._pacer.note_failure()
                return
        if answer.status == 429:
            self._hold_calls(self._delay(1, answer.retry_after))
        elif verdict_for_status(answer.status) is Verdict.RETRY:
            self._pacer.note_failure()
        else:
            self._quivo_answered(rating_taken=False)

    async def _release_outage_holds(self) -> None:
        """Quivo answers again: what waited out the outage on backoff goes now, not at its next backoff."""
        self._quivo_back = False
        made_due = await self.store.due_after_outage(now=utc_now())
        if made_due:
            log.info("worker.quivo_back", made_due=made_due)

    # One delivery -----------------------------------------------------------------------------------

    async def _deliver(self, delivery: ClaimedDelivery, lease_until: datetime) -> None:
        try:
            await self._deliver_once(delivery, lease_until)
        except StoreUnavailable as error:
            # The outcome could not be written (a full or locked disk): the lease runs out and the delivery
            # is claimed again, read back first if a send went out. A store fault, not a bug in the relay.
            log.error("worker.store_unavailable", delivery_id=delivery.id, error=str(error))

    async def _deliver_once(self, delivery: ClaimedDelivery, lease_until: datetime) -> None:
        started = time.perf_counter()
        rating = Rating.model_validate_json(delivery.rating_json)
        inquiry_id = delivery.inquiry_id or inquiry_id_from_external_id(
            rating.external_id, self.settings.relay_inquiry_id_pattern
        )
        if inquiry_id is None:
            if _age(delivery) > self.settings.relay_unmatched_ttl:
                reason = "no Quivo inquiry found for this order within RELAY_UNMATCHED_TTL"
                outcome = Outcome(
                    delivery.id, "dead", delivery.attempts, delivery.unconfirmed, last_error=reason
                )
                await self._record(outcome, delivery, lease_until, rating, started, "delivery.dead")
                return
            outcome = Outcome(delivery.id, "unmatched", delivery.attempts, delivery.unconfirmed)
            await self._record(outcome, delivery, lease_until, rating, started, "delivery.unmatched")
            return
        # The lock orders this worker's ratings for one inquiry as claimed; the hold keeps other workers off.
        async with self._inquiry_turn(inquiry_id):
            attempt = _Attempt(delivery, rating, inquiry_id, lease_until)
            try:
                outcome, event = await self._attempt(attempt)
                await self._settle(attempt, outcome)
            except _LeaseLost:
                self._lease_lost(delivery, inquiry_id, started)
                return
            except _InquiryBusy:
                later = utc_now() + timedelta(seconds=INQUIRY_BUSY_RETRY_S)
                outcome = replace(self._release(attempt), next_attempt_at=later, last_error=INQUIRY_BUSY)
                outcome, event = outcome, "delivery.inquiry_busy"
            except (LoginFailed, _AccountPaused) as error:
                if isinstance(error, LoginFailed):
                    self._pause(error.reason)
                    await self._share_pause()
                # Due again only once every worker has read the pause: none claims it to call meanwhile.
                later = utc_now() + timedelta(seconds=PAUSES_READ_INTERVAL_S)
                outcome, event = replace(self._release(attempt), next_attempt_at=later), "delivery.paused"
            except _PausedTooLong as too_long:
                later = utc_now() + timedelta(seconds=too_long.wait_s)
                outcome, event = replace(self._release(attempt), next_attempt_at=later), "delivery.deferred"
            except asyncio.CancelledError:
                released = self._release(attempt)
                await self._record(
                    released, delivery, attempt.leased_until, rating, started, "delivery.released"
                )
                raise
            await self._record(outcome, delivery, attempt.leased_until, rating, started, event)

    async def _settle(self, attempt: _Attempt, outcome: Outcome) -> None:
        """A send left unanswered may still be running at Quivo: keep its inquiry (the lock, the hold)
        until the settle time since it went out has passed, so no other send to it goes out meanwhile.
        The lease covers it: it lasts the settle time beyond the calls' own."""
        if not (attempt.send_started and outcome.unconfirmed and outcome.state == "retrying"):
            return
        sent_at = attempt.calls[-1].started_at
        left_s = self.settings.relay_unsure_settle_s - (utc_now() - sent_at).total_seconds()
        if left_s > 0:
            await asyncio.sleep(left_s)

    async def _take_turn(self, attempt: _Attempt) -> None:
        """Right before a call: renew the lease, so it outlasts this call and the settle time after it,
        and hold the inquiry as long. A delivery that waited its turn past its lease may have been
        claimed again meanwhile (by another worker, or this one): then it is no longer this pass's."""
        now = utc_now()
        until = now + self._lease
        turn = await self.store.take_turn(
            attempt.delivery.id, attempt.inquiry_id, leased_until=attempt.leased_until, now=now, until=until
        )
        if turn == "lost":
            raise _LeaseLost()
        attempt.leased_until = until
        if turn == "busy":
            raise _InquiryBusy()

    @contextlib.asynccontextmanager
    async def _inquiry_turn(self, inquiry_id: int) -> AsyncIterator[None]:
        # Never two calls in flight for one inquiry: its ratings land in the order they were claimed.
        lock, users = self._inquiries_in_flight.get(inquiry_id, (asyncio.Lock(), 0))
        self._inquiries_in_flight[inquiry_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._inquiries_in_flight[inquiry_id]
            if users == 1:
                del self._inquiries_in_flight[inquiry_id]
            else:
                self._inquiries_in_flight[inquiry_id] = (lock, users - 1)

    async def _attempt(self, attempt: _Attempt) -> tuple[Outcome, str]:
        delivery = attempt.delivery
        if delivery.unconfirmed:
            checked = await self._reconcile(attempt)
            if checked is not None:
                return checked
        exhausted = self._exhausted(delivery)
        if exhausted is not None:
            return self._outcome(attempt, "dead", last_error=exhausted), "delivery.dead"
        message = render_message(attempt.rating, self.settings.relay_message_template)
        value = quivo_rating(
            attempt.rating.stars, self.settings.quivo_rating_min, self.settings.quivo_rating_max
        )
        answer = await self._call(
            attempt, "send", lambda: self.client.post_rating(attempt.inquiry_id, value, message)
        )
        attempts = delivery.attempts + 1
        if isinstance(answer, QuivoError):
            unconfirmed = isinstance(answer, QuivoNoAnswer)
            self._pacer.note_failure()
            return self._retry(
                attempt, attempts, unconfirmed, None, _excerpt(str(answer)) or type(answer).__name__
            )
        verdict = verdict_for_status(answer.status)
        if verdict is Verdict.DELIVERED:
            self._quivo_answered(rating_taken=True)
            current = answer.current_rating
            outcome = self._outcome(
                attempt,
                "delivered",
                attempts=attempts,
                unconfirmed=False,
                last_status=answer.status,
                current_rating=current,
            )
            return outcome, "delivery.delivered"
        if verdict is Verdict.DEAD:
            outcome = self._outcome(
                attempt,
                "dead",
                attempts=attempts,
                unconfirmed=False,
                last_status=answer.status,
                last_error=_excerpt(answer.body_excerpt) or f"Quivo answered {answer.status}",
            )
            return outcome, "delivery.dead"
        if answer.status == 429:
            self._hold_calls(self._delay(attempts, answer.retry_after))
        elif verdict is Verdict.RETRY:
            self._pacer.note_failure()
        # REAUTH here means a fresh token was refused too: retry later like any passing refusal.
        unsure = leaves_send_unsure(answer.status)
        return self._retry(attempt, attempts, unsure, answer, _excerpt(answer.body_excerpt))

    async def _reconcile(self, attempt: _Attempt) -> tuple[Outcome, str] | None:
        """An earlier send may have landed: look for our tag before sending again. None means: send."""
        answer = await self._call(attempt, "reconcile", lambda: self.client.get_inquiry(attempt.inquiry_id))
        delivery = attempt.delivery
        if isinstance(answer, QuivoError):
            # No answer to the read proves nothing either way: still unsure, never sent blindly.
            self._pacer.note_failure()
            return self._retry(attempt, delivery.attempts, True, None, _excerpt(str(answer)))
        verdict = verdict_for_status(answer.status)
        if verdict is Verdict.DEAD:
            # 404 and other refusals to read: the send will say what Quivo thinks of this inquiry.
            attempt.calls[-1] = replace(attempt.calls[-1], outcome="read refused")
            return None
        inquiry = answer.inquiry
        if verdict is Verdict.DELIVERED and inquiry is not None:
            self._quivo_answered(rating_taken=False)
            found = inquiry.has_rating_message_with(attempt.rating.reference_tag)
            # The read's record says what it found: a 2xx alone reads as "delivered" to an operator.
            attempt.calls[-1] = replace(attempt.calls[-1], outcome="tag found" if found else "tag not found")
            if found:
                outcome = self._outcome(
                    attempt,
                    "delivered",
                    unconfirmed=False,
                    last_status=answer.status,
                    current_rating=inquiry.current_rating,
                )
                return outcome, "delivery.reconciled"
            return None
        # No inquiry to look at (5xx, 429, a fresh token refused, a 2xx that does not parse): still unsure.
        if verdict is Verdict.RETRY:
            self._pacer.note_failure()
        error = _excerpt(answer.body_excerpt) or f"Quivo answered {answer.status} without a readable inquiry"
        return self._retry(attempt, delivery.attempts, True, answer, error)

    async def _call(
        self, attempt: _Attempt, action: AttemptAction, call: Callable[[], Awaitable[QuivoAnswer]]
    ) -> QuivoAnswer | QuivoError:
        async with self._quivo_slots:
            if self.paused_reason is not None:
                raise _AccountPaused()  # another worker's login was refused: this one's token waits too
            # Before the wait for the rate, whose end the call must follow closely: the lease renewed
            # here still outlasts that wait (half a lease at most), the call and the settle time.
            await self._take_turn(attempt)
            wait_s = await self._turn(max_wait_s=self.settings.quivo_lease_s / 2)
            if wait_s is not None:
                raise _PausedTooLong(wait_s)
            if action == "send":
                attempt.send_started = True
            started_at, started = utc_now(), time.perf_counter()
            result: QuivoAnswer | QuivoError
            try:
                result = await call()
            except LoginFailed:
                attempt.send_started = False  # a refused login means the call itself never went out
                raise
            except QuivoError as error:
                result = error
        duration_ms = round((time.perf_counter() - started) * 1000)
        if isinstance(result, QuivoError):
            record = AttemptRecord(
                action, started_at, duration_ms, None, type(result).__name__, _excerpt(str(result))
            )
        else:
            record = AttemptRecord(
                action,
                started_at,
                duration_ms,
                result.status,
                verdict_for_status(result.status).value,
                None if result.status < 300 else _excerpt(result.body_excerpt),
            )
        attempt.calls.append(record)
        return result

    async def _turn(self, *, max_wait_s: float) -> float | None:
        """Wait for this call's turn, this worker's and the relay's; None once it came, else how long
        the call would have had to wait (more than max_wait_s)."""
        if not await self._pacer.wait_turn(max_wait_s=max_wait_s):
            return self._pacer.paused_for()
        if self._budget is not None and (away_s := await self._budget.wait_turn(max_wait_s=max_wait_s)):
            return away_s
        return None

    def _exhausted(self, delivery: ClaimedDelivery) -> str | None:
        if delivery.attempts >= self.settings.relay_max_attempts:
            return f"gave up after {delivery.attempts} attempts (RELAY_MAX_ATTEMPTS)"
        age = _age(delivery)
        if age > self.settings.relay_max_age:
            return f"gave up after {age} waiting (RELAY_MAX_AGE)"
        return None

    def _delay(self, attempts: int, retry_after: str | None) -> float:
        return retry_delay(
            max(attempts, 1),
            retry_after=retry_after,
            now=utc_now(),
            base=self.settings.relay_retry_base_s,
            cap=self.settings.relay_retry_max_s,
            rng=self._rng,
        )

    def _retry(
        self,
        attempt: _Attempt,
        attempts: int,
        unconfirmed: bool,
        answer: QuivoAnswer | None,
        error: str | None,
    ) -> tuple[Outcome, str]:
        delay = self._delay(attempts, answer.retry_after if answer else None)
        if unconfirmed and attempt.send_started:
            # Quivo may still commit the send it did not answer: read the inquiry once it had time to.
            delay = max(delay, self.settings.relay_unsure_settle_s)
        outcome = self._outcome(
            attempt,
            "retrying",
            attempts=attempts,
            unconfirmed=unconfirmed,
            next_attempt_at=utc_now() + timedelta(seconds=delay),
            last_status=answer.status if answer else None,
            last_error=error,
        )
        return outcome, "delivery.retry_scheduled"

    def _release(self, attempt: _Attempt) -> Outcome:
        """Give the delivery back without spending an attempt; a send already started stays unconfirmed."""
        delivery = attempt.delivery
        # A send cut short may still be committed: it is read back only after the settle time.
        settle_s = self.settings.relay_unsure_settle_s if attempt.send_started else 0.0
        return self._outcome(
            attempt,
            "retrying" if delivery.attempts else "pending",
            unconfirmed=delivery.unconfirmed or attempt.send_started,
            attempts=delivery.attempts + (1 if attempt.send_started else 0),
            next_attempt_at=utc_now() + timedelta(seconds=settle_s),
            last_error=self.paused_reason,
        )

    def _outcome(self, attempt: _Attempt, state: DeliveryState, **changes: Any) -> Outcome:
        base = Outcome(
            attempt.delivery.id,
            state,
            attempts=attempt.delivery.attempts,
            unconfirmed=attempt.delivery.unconfirmed,
            inquiry_id=attempt.inquiry_id,
            calls=attempt.calls,
        )
        return replace(base, **changes)

    def _pause(self, reason: str, *, share: bool = True) -> None:
        """Hold claims and calls until a login goes through; `share`: this worker's own refusal, which
        every other worker is to hold too (the loop writes it)."""
        if self.paused_reason is None:
            log.error("worker.paused", reason=reason)
            self._paused_changed = True
            self._paused_since = time.monotonic()
            self._next_probe_at = self._paused_since + self._probe_delay_s
            if share:
                self._pause_to_share = AccountPause(QUIVO_ACCOUNT, reason, until=None)
        self.paused_reason = reason
        self._wake.set()

    def _hold_calls(self, delay_s: float) -> None:
        """Quivo asked for a pause (429): this worker's calls wait it out, and every other worker's too."""
        self._pacer.pause_for(delay_s)
        if self.paused_reason is None and self._pause_to_share is None:
            until = utc_now() + timedelta(seconds=self._pacer.paused_for())
            self._pause_to_share = AccountPause(QUIVO_ACCOUNT, "Quivo answered 429", until=until)
            self._wake.set()

    async def _record(
        self,
        outcome: Outcome,
        delivery: ClaimedDelivery,
        leased_until: datetime,
        rating: Rating,
        started: float,
        event: str,
    ) -> None:
        state = await self.store.record_outcome(outcome, leased_until=leased_until, now=utc_now())
        if state == LEASE_LOST:
            self._lease_lost(delivery, outcome.inquiry_id, started)
            return
        if state == "superseded" and outcome.state != "superseded":
            event = "delivery.superseded"
        self.metrics.delivery_finished(event.removeprefix("delivery."))
        if state == "delivered":
            self.metrics.delivery_latency(_age(delivery).total_seconds())
        last = outcome.calls[-1] if outcome.calls else None
        emit = log.error if state == "dead" else log.warning if state == "retrying" else log.info
        emit(
            event,
            delivery_id=delivery.id,
            merchant_id=delivery.merchant_id,
            rating_id=delivery.rating_id,
            inquiry_id=outcome.inquiry_id,
            attempt=outcome.attempts,
            state=state,
            status_code=last.status_code if last else None,
            error=outcome.last_error,
            next_attempt_at=outcome.next_attempt_at.isoformat() if outcome.next_attempt_at else None,
            current_rating=outcome.current_rating,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def _lease_lost(self, delivery: ClaimedDelivery, inquiry_id: int | None, started: float) -> None:
        """The delivery was claimed again after its lease ran out: this pass writes nothing more of it."""
        self.metrics.delivery_finished("lease_lost")
        log.warning(
            "delivery.lease_lost",
            delivery_id=delivery.id,
            merchant_id=delivery.merchant_id,
            rating_id=delivery.rating_id,
            inquiry_id=inquiry_id,
            attempt=delivery.attempts,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


def _identity() -> WorkerBeat:
    """Who this worker is in the store's registry; each beat fills in its time and pause."""
    host, started = socket.gethostname(), utc_now()
    worker_id = f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return WorkerBeat(worker_id, host, os.getpid(), started_at=started, beat_at=started)


class _PausedTooLong(Exception):
    """Quivo asked for a pause, or the relay's rate gives a slot, later than the lease can wait out."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(wait_s)
        self.wait_s = wait_s


class _LeaseLost(Exception):
    """The delivery's lease ran out while it waited its turn, and a claim took it again: hands off."""


class _InquiryBusy(Exception):
    """Another worker's send holds the delivery's inquiry: no call to it may go out now."""


class _AccountPaused(Exception):
    """Deliveries are paused (refused credentials, here or on another worker): no call goes out."""


def _age(delivery: ClaimedDelivery) -> timedelta:
    return utc_now() - delivery.age_from


def _excerpt(text: str | None) -> str | None:
    if not text:
        return None
    return text if len(text) <= ERROR_EXCERPT_CHARS else text[: ERROR_EXCERPT_CHARS - 1] + "…"
