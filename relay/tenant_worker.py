"""One tenant's delivery loop: claims its due deliveries and posts each onto its inquiry, exactly once."""

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import structlog
from pydantic import ValidationError

from relay.claim_ahead import LEAST_PER_SLOT, ClaimAhead
from relay.domain.delivery import DeliveryState
from relay.domain.matching import inquiry_id_from_external_id
from relay.domain.message import quivo_rating, render_message
from relay.domain.rating import Rating
from relay.domain.rating_json import read_rating
from relay.domain.retry import Verdict, leaves_send_unsure, retry_delay, verdict_for_status
from relay.jsonline import encode, spell
from relay.logs import spelled_writer
from relay.ops.metrics import RelayMetrics
from relay.outcomes import OutcomeRecorder
from relay.pacing import Pacer, RelayBudget
from relay.quivo.client import LoginFailed, QuivoAnswer, QuivoClient, QuivoError, QuivoNoAnswer
from relay.settings import Settings
from relay.store.api import Store, StoreUnavailable
from relay.store.records import (
    LEASE_LOST,
    AccountPause,
    AttemptAction,
    AttemptRecord,
    ClaimedDelivery,
    Outcome,
    Turn,
    TurnAsk,
)
from relay.tenants.tenant import Tenant

log = structlog.get_logger("relay.delivery")

# A claim waits until this share of the call slots' worth is free: claims (and the turns taken right after
# them) come in batches sharing a store round trip each, not one round trip per finished delivery.
CLAIM_BATCH_SHARE = 0.5
# A claim, and a turn taken ahead of the wait for a call slot, lease this share longer than a lease: a call
# within that time finds a whole lease left, as a renewal would have made it, and goes without one.
TURN_FRESH_SHARE = 0.05
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


@dataclass(slots=True)
class _Claim:
    """A claimed delivery as its pass begins: read, and its turn and send slot when taken ahead."""

    delivery: ClaimedDelivery
    # The claim's lease, or the turn's when one was taken (and not lost).
    leased_until: datetime
    rating: Rating | None = None
    inquiry_id: int | None = None
    turn: Turn | None = None
    slot: datetime | None = None


@dataclass(slots=True)
class _Attempt:
    """What one pass over a claimed delivery did, so far."""

    delivery: ClaimedDelivery
    rating: Rating
    inquiry_id: int
    # The lease the delivery is this worker's under: its claim's, then each renewal's before a call.
    leased_until: datetime
    calls: list[AttemptRecord] = field(default_factory=list)
    send_started: bool = False
    # The relay's send slot reserved for the first call, with the turn taken ahead; None once used.
    slot: datetime | None = None


class TenantWorker:
    """Claims one tenant's due deliveries under a lease and runs each through reconcile, send and outcome.

    The tenant's Quivo account is its own: its session, pacing, call slots, pause and outage. A worker
    process runs one per tenant (relay/worker.py).
    """

    def __init__(
        self,
        settings: Settings,
        tenant: Tenant,
        store: Store,
        client: QuivoClient,
        metrics: RelayMetrics,
        *,
        on_pause_change: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.tenant = tenant
        self.store = store
        self.client = client
        self.metrics = metrics
        self._on_pause_change = on_pause_change
        self._log = log.bind(tenant=tenant.name)
        # The same logger without the tenant bound, which writes a line its caller spelled (_record's).
        self._spelling_log = log.bind()
        self._tenant_member = f'"tenant": {spell(tenant.name)}, '
        self._wake = asyncio.Event()
        self._rng = rng or random.Random()
        account = tenant.quivo
        # QUIVO_MAX_CONCURRENCY bounds calls in flight; claiming ahead keeps store round trips off that path.
        self._quivo_slots = asyncio.Semaphore(account.max_concurrency)
        self._pacer = Pacer(account.max_rps, max_pause_s=settings.relay_retry_max_s)
        # Should this worker die mid-send, Quivo may still commit that send up to the settle time later:
        # a lease (from a claim, or renewed before a call) outlasts the calls and then the settle time.
        self._lease = timedelta(seconds=settings.quivo_lease_s + settings.relay_unsure_settle_s)
        self._turn_ahead = self._lease * (1 + TURN_FRESH_SHARE)
        # How long a call may wait for its turn: its lease, renewed before the wait, outlasts it.
        self._turn_wait_s = settings.quivo_lease_s / 2
        self._claim_ahead = ClaimAhead(account.max_concurrency)
        self._claim_batch = max(1, round(CLAIM_BATCH_SHARE * account.max_concurrency))
        # Beside other workers, the rate, the holds on inquiries and the pauses are the relay's, in the store;
        # alone on a database (SQLite), the worker's own pacer and lock per inquiry keep them, commit-free.
        self._budget = (
            None if store.single_worker else RelayBudget(store, account.max_rps, account=tenant.name)
        )
        # A claim's calls reserve their slots together, ahead, where a claim's worth of slots spans a second
        # at most (a claim grows past three slots' worth only to what the worker finishes in a tenth of a
        # second, which the rate bounds). At lower rates the budget, not round trips, bounds the calls, and
        # slots reserved ahead would push every worker's calls past what a lease can wait.
        self._slots_ahead = self._budget is not None and (
            account.max_rps >= LEAST_PER_SLOT * account.max_concurrency
        )
        self._in_flight: set[asyncio.Task[None]] = set()
        # Of those, the passes whose outcome waits for its commit.
        self._settling = 0
        # Deliveries finishing together record their outcomes in one store call.
        self._outcomes = OutcomeRecorder(store, utc_now)
        self._inquiries_in_flight: dict[int, _InquiryLock] = {}
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self.paused_reason: str | None = None
        self._paused_since = 0.0
        self._pause_to_share: AccountPause | None = None
        self._last_pauses_read = float("-inf")
        self._probe_delay_s = 1.0
        self._next_probe_at = 0.0
        self._quivo_back = False
        self._freed_on_a_read = False
        # When the loop last went round: a loop stuck for long makes the process unready.
        self.last_round: float | None = None

    # The loop ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until stop() is called."""
        account = self.tenant.quivo
        self._log.info("worker.started", concurrency=account.max_concurrency, rps=account.max_rps)
        while not self._stopping.is_set():
            self.last_round = time.time()
            # Cleared before looking, so whatever happens from here on wakes the wait below.
            self._wake.clear()
            try:
                await self._follow_pauses()
                if self.paused_reason is not None:
                    await self._probe_login()
                    continue
                if self._quivo_back:
                    await self._release_outage_holds()
                wanted, claimed, lease_until = await self._claim()
                if not claimed and self._pacer.failures_in_a_row and not self._in_flight:
                    await self._probe_outage()
            except StoreUnavailable as error:
                self._log.error("worker.store_unavailable", error=str(error))
                await self._sleep(self.settings.relay_sweep_interval_s)
                continue
            except Exception:
                self._log.exception("worker.loop_error")
                await self._sleep(self.settings.relay_sweep_interval_s)
                continue
            for claim in await self._ahead(claimed, lease_until):
                task = asyncio.create_task(self._deliver(claim), name=f"delivery-{claim.delivery.id}")
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if wanted and len(claimed) == wanted:
                continue  # a full batch: more may be due right now
            await self._sleep(
                min(self.settings.relay_sweep_interval_s, self._pacer.paused_for() or float("inf"))
            )

    def start(self) -> None:
        """Run the loop in the background until stop()."""
        self._loop_task = asyncio.create_task(self.run(), name=f"relay-worker-{self.tenant.name}")

    def wake(self) -> None:
        """Look for due deliveries now: new ones may have arrived."""
        self._wake.set()

    async def stop(self) -> int:
        """Stop claiming; let sends in flight finish within the grace time; release the rest (how many)."""
        self._stopping.set()
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        late: set[asyncio.Task[None]] = set()
        if self._in_flight:
            _, late = await asyncio.wait(set(self._in_flight), timeout=self.settings.relay_shutdown_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        # A pass cancelled while its outcome was being recorded no longer waits for that record: this does.
        await self._outcomes.wait_recorded()
        return len(late)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._claim_ahead.finished()
        if not self._in_flight or self._room() >= self._claim_batch:
            self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            self._log.error("worker.delivery_crashed", error=repr(task.exception()))

    async def _claim(self) -> tuple[int, list[ClaimedDelivery], datetime]:
        """How many deliveries the worker could take now, those it took, and when their leases end."""
        now = utc_now()
        # As long as a turn taken ahead would make it: that turn, moments from now, need not renew it.
        lease_until = now + self._turn_ahead
        self._claim_ahead.update()
        free = self._room()
        if free < self._claim_batch or self._pacer.paused_for() > 0:
            return 0, [], lease_until
        claimed = await self.store.claim_due(self.tenant.name, now=now, lease_until=lease_until, limit=free)
        return free, claimed, lease_until

    def _room(self) -> int:
        """How many more deliveries the worker may claim now."""
        # One whose calls are done and whose outcome waits for its commit holds no slot: it takes no room
        # here, up to as many again (what a store slow to commit outcomes lets pile up stays bounded).
        cap = self._claim_ahead.cap
        return cap - len(self._in_flight) + min(self._settling, cap)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _follow_pauses(self) -> None:
        """Share this worker's pause with every other, and hold whatever pause another worker shared."""
        await self._share_pause()
        if time.monotonic() - self._last_pauses_read < PAUSES_READ_INTERVAL_S:
            return
        self._last_pauses_read = time.monotonic()
        now = utc_now()
        pauses = [
            pause for pause in await self.store.account_pauses(now=now) if pause.account == self.tenant.name
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
            self._log.warning("worker.paused", reason=self.paused_reason, probe_error=str(error))
            return
        await self.store.lift_pause(self.tenant.name)
        self._pause_to_share = None
        self._resume()

    def _resume(self) -> None:
        paused_s = round(time.monotonic() - self._paused_since, 1)
        self._log.info("worker.resumed", was_paused_for=paused_s, reason=self.paused_reason)
        self.paused_reason = None
        self._on_pause_change()
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
        inquiry_id = await self.store.inquiry_held_by_outage(self.tenant.name, now=utc_now())
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
        made_due = await self.store.due_after_outage(self.tenant.name, now=utc_now())
        if made_due:
            self._log.info("worker.quivo_back", made_due=made_due)

    async def _ahead(self, claimed: list[ClaimedDelivery], lease_until: datetime) -> list[_Claim]:
        """The claimed deliveries read, and the turns of those that call Quivo first for their inquiry
        taken together: one store round trip for them all, and one for their send slots, instead of one
        each at its call. A delivery whose turn is not taken here (its inquiry is in use in this worker, or
        the store failed) takes it once its inquiry is free."""
        claims = [_Claim(delivery, lease_until) for delivery in claimed]
        asking: dict[int, _Claim] = {}
        for claim in claims:
            with contextlib.suppress(ValidationError):  # the delivery's own pass meets and reports it
                claim.rating = read_rating(claim.delivery.rating_json)
                claim.inquiry_id = claim.delivery.inquiry_id or inquiry_id_from_external_id(
                    claim.rating.external_id, self.tenant.inquiry_id_pattern
                )
            inquiry_id = claim.inquiry_id
            if inquiry_id is None or inquiry_id in asking or inquiry_id in self._inquiries_in_flight:
                continue
            if claim.delivery.unconfirmed or self._exhausted(claim.delivery) is None:
                asking[inquiry_id] = claim
        if not asking:
            return claims
        # The claim's lease, taken moments ago, is as long as a turn taken now would make it: kept as it is.
        now, until = utc_now(), lease_until
        asks = [TurnAsk(claim.delivery.id, inquiry_id, lease_until) for inquiry_id, claim in asking.items()]
        try:
            turns = await self.store.take_turns(asks, now=now, until=until)
            going = []
            for claim, turn in zip(asking.values(), turns, strict=True):
                claim.turn = turn
                if turn != "lost":
                    claim.leased_until = until
                if turn == "go":
                    going.append(claim)
            if self._slots_ahead and self._budget is not None and going:
                for claim, slot in zip(going, await self._budget.reserve(len(going)), strict=True):
                    claim.slot = slot
        except StoreUnavailable as error:
            self._log.error("worker.store_unavailable", error=str(error))
        return claims

    # One delivery -----------------------------------------------------------------------------------

    async def _deliver(self, claim: _Claim) -> None:
        try:
            await self._deliver_once(claim)
        except StoreUnavailable as error:
            # The outcome could not be written (a full or locked disk): the lease runs out and the delivery
            # is claimed again, read back first if a send went out. A store fault, not a bug in the relay.
            self._log.error("worker.store_unavailable", delivery_id=claim.delivery.id, error=str(error))

    async def _deliver_once(self, claim: _Claim) -> None:
        started = time.perf_counter()
        delivery, lease_until, inquiry_id = claim.delivery, claim.leased_until, claim.inquiry_id
        rating = claim.rating or read_rating(delivery.rating_json)
        if inquiry_id is None:
            if _age(delivery) > self.tenant.unmatched_ttl:
                reason = UNMATCHED_TOO_LONG
                outcome = Outcome(
                    delivery.id, "dead", delivery.attempts, delivery.unconfirmed, last_error=reason
                )
                await self._record(outcome, delivery, lease_until, rating, started, "delivery.dead")
                return
            outcome = Outcome(delivery.id, "unmatched", delivery.attempts, delivery.unconfirmed)
            await self._record(outcome, delivery, lease_until, rating, started, "delivery.unmatched")
            return
        # The lock orders this worker's ratings for one inquiry as claimed; the hold keeps other workers off.
        async with _InquiryTurn(self._inquiries_in_flight, inquiry_id):
            attempt = _Attempt(delivery, rating, inquiry_id, lease_until, slot=claim.slot)
            try:
                if claim.turn is not None:
                    self._follow_turn(attempt, claim.turn, lease_until)
                elif delivery.unconfirmed or self._exhausted(delivery) is None:
                    # Before the wait for a call slot: then a call right after it needs no renewal.
                    await self._take_turn(attempt, lease=self._turn_ahead)
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

    async def _take_turn(self, attempt: _Attempt, *, lease: timedelta) -> None:
        """Renew the lease, so it outlasts the calls to come and the settle time after them, and hold the
        inquiry as long. A delivery that waited its turn past its lease may have been claimed again
        meanwhile (by another worker, or this one): then it is no longer this pass's."""
        now = utc_now()
        until = now + lease
        renewal = self.store.take_turn(
            attempt.delivery.id, attempt.inquiry_id, leased_until=attempt.leased_until, now=now, until=until
        )
        taking = asyncio.ensure_future(renewal)
        try:
            turn = await asyncio.shield(taking)
        except asyncio.CancelledError:
            # A stop cancelled the wait, not the renewal, which commits all the same: the release that follows
            # must name the lease the row then holds, or it finds the lease lost and leaves the row `sending`.
            with contextlib.suppress(Exception):
                self._follow_turn(attempt, await taking, until)
            raise
        self._follow_turn(attempt, turn, until)

    def _follow_turn(self, attempt: _Attempt, turn: Turn, until: datetime) -> None:
        """The turn taken: the attempt goes on under the lease until `until`, or stops here."""
        if turn == "lost":
            raise _LeaseLost()
        attempt.leased_until = until
        if turn == "busy":
            raise _InquiryBusy()

    async def _attempt(self, attempt: _Attempt) -> tuple[Outcome, str]:
        delivery = attempt.delivery
        if delivery.unconfirmed:
            checked = await self._reconcile(attempt)
            if checked is not None:
                return checked
        exhausted = self._exhausted(delivery)
        if exhausted is not None:
            return self._outcome(attempt, "dead", last_error=exhausted), "delivery.dead"
        message = render_message(attempt.rating, self.tenant.message_template)
        value = quivo_rating(attempt.rating.stars, self.tenant.quivo.rating_min, self.tenant.quivo.rating_max)
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
            # here still outlasts that wait (half a lease at most), the call and the settle time. A turn
            # taken ahead moments ago left a whole lease still to run: as good as renewed now.
            if attempt.leased_until - utc_now() < self._lease:
                await self._take_turn(attempt, lease=self._lease)
            slot, attempt.slot = attempt.slot, None
            wait_s = await self._turn(max_wait_s=self._turn_wait_s, slot=slot)
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

    async def _turn(self, *, max_wait_s: float, slot: datetime | None = None) -> float | None:
        """Wait for this call's turn, this worker's and the relay's (in `slot` when reserved ahead); None
        once it came, else how long the call would have had to wait (more than max_wait_s)."""
        # The pacer's own wait taken here, not in a coroutine of its own: one fewer for every call.
        wait_s = self._pacer.take_turn(max_wait_s=max_wait_s)
        if wait_s is None:
            return self._pacer.paused_for()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        if self._budget is None:
            return None
        if slot is None:
            [slot] = await self._budget.reserve()
        return await self._budget.wait_for(slot, max_wait_s=max_wait_s) or None

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

    def _outcome(
        self,
        attempt: _Attempt,
        state: DeliveryState,
        *,
        attempts: int | None = None,
        unconfirmed: bool | None = None,
        next_attempt_at: datetime | None = None,
        last_status: int | None = None,
        last_error: str | None = None,
        current_rating: float | None = None,
    ) -> Outcome:
        """The attempt's outcome: its delivery's attempts and unconfirmed flag unless given, its calls."""
        delivery = attempt.delivery
        # Positional, not through a dict of keywords: one is made for every delivery.
        return Outcome(
            delivery.id,
            state,
            delivery.attempts if attempts is None else attempts,
            delivery.unconfirmed if unconfirmed is None else unconfirmed,
            next_attempt_at,
            attempt.inquiry_id,
            last_status,
            last_error,
            current_rating,
            attempt.calls,
        )

    def _pause(self, reason: str, *, share: bool = True) -> None:
        """Hold claims and calls until a login goes through; `share`: this worker's own refusal, which
        every other worker is to hold too (the loop writes it)."""
        if self.paused_reason is None:
            self._log.error("worker.paused", reason=reason)
            self._on_pause_change()
            self._paused_since = time.monotonic()
            self._next_probe_at = self._paused_since + self._probe_delay_s
            if share:
                self._pause_to_share = AccountPause(self.tenant.name, reason, until=None)
        self.paused_reason = reason
        self._wake.set()

    def _hold_calls(self, delay_s: float) -> None:
        """Quivo asked for a pause (429): this worker's calls wait it out, and every other worker's too."""
        self._pacer.pause_for(delay_s)
        if self.paused_reason is None and self._pause_to_share is None:
            until = utc_now() + timedelta(seconds=self._pacer.paused_for())
            self._pause_to_share = AccountPause(self.tenant.name, "Quivo answered 429", until=until)
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
        self._settling += 1
        if self._room() == self._claim_batch:
            self._wake.set()  # room enough for a claim now
        try:
            state = await self._outcomes.record(outcome, leased_until=leased_until)
        finally:
            self._settling -= 1
        if state == LEASE_LOST:
            self._lease_lost(delivery, outcome.inquiry_id, started)
            return
        if state == "superseded" and outcome.state != "superseded":
            event = "delivery.superseded"
        self.metrics.delivery_finished(event.removeprefix("delivery."), tenant=self.tenant.name)
        if state == "delivered":
            self.metrics.delivery_latency(_age(delivery).total_seconds())
        last = outcome.calls[-1] if outcome.calls else None
        level = "error" if state == "dead" else "warning" if state == "retrying" else "info"
        status_code = last.status_code if last else None
        next_attempt_at = outcome.next_attempt_at.isoformat() if outcome.next_attempt_at else None
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        write = spelled_writer(self._spelling_log, level)
        if write is not None:
            # The line every delivery writes, spelled here at a fraction of the cost of the call below, which
            # would write it alike (tests/test_worker_lines.py).
            members = self._tenant_member + outcome_members(
                delivery, outcome, state, status_code, next_attempt_at, duration_ms
            )
            write(event, members)
            return
        # The same level as a method, spelled so that tests/test_docs.py reads the events off the call.
        emit = (
            self._log.error
            if state == "dead"
            else self._log.warning
            if state == "retrying"
            else self._log.info
        )
        emit(
            event,
            delivery_id=delivery.id,
            merchant_id=delivery.merchant_id,
            rating_id=delivery.rating_id,
            inquiry_id=outcome.inquiry_id,
            attempt=outcome.attempts,
            state=state,
            status_code=status_code,
            error=outcome.last_error,
            next_attempt_at=next_attempt_at,
            current_rating=outcome.current_rating,
            duration_ms=duration_ms,
        )

    def _lease_lost(self, delivery: ClaimedDelivery, inquiry_id: int | None, started: float) -> None:
        """The delivery was claimed again after its lease ran out: this pass writes nothing more of it."""
        self.metrics.delivery_finished("lease_lost", tenant=self.tenant.name)
        self._log.warning(
            "delivery.lease_lost",
            delivery_id=delivery.id,
            merchant_id=delivery.merchant_id,
            rating_id=delivery.rating_id,
            inquiry_id=inquiry_id,
            attempt=delivery.attempts,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


@dataclass(slots=True)
class _InquiryLock:
    """One inquiry's lock, and how many of this worker's deliveries hold it or wait for it."""

    lock: asyncio.Lock
    users: int = 0


class _InquiryTurn:
    """Never two calls in flight for one inquiry: this worker's deliveries for it go one at a time, in the
    order they were claimed. Its lock lives in `locks` only while some delivery uses it."""

    __slots__ = ("_held", "_inquiry_id", "_locks")

    def __init__(self, locks: dict[int, _InquiryLock], inquiry_id: int) -> None:
        self._locks = locks
        self._inquiry_id = inquiry_id
        held = locks.get(inquiry_id)
        if held is None:
            held = locks[inquiry_id] = _InquiryLock(asyncio.Lock())
        held.users += 1
        self._held = held

    async def __aenter__(self) -> None:
        try:
            await self._held.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *_: object) -> None:
        self._held.lock.release()
        self._leave()

    def _leave(self) -> None:
        self._held.users -= 1
        if not self._held.users:
            del self._locks[self._inquiry_id]


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


def outcome_members(
    delivery: ClaimedDelivery,
    outcome: Outcome,
    state: str,
    status_code: int | None,
    next_attempt_at: str | None,
    duration_ms: float,
) -> str:
    """A delivery's line's keys after `tenant` and their values, as JSON members in the order of _record's
    call, spelled as jsonline.encode spells them (ids and counts are ints, the duration a finite float)."""
    inquiry_id, error, current = outcome.inquiry_id, outcome.last_error, outcome.current_rating
    return (
        f'"delivery_id": {delivery.id:d}, "merchant_id": {delivery.merchant_id:d}, '
        f'"rating_id": {delivery.rating_id:d}, '
        f'"inquiry_id": {"null" if inquiry_id is None else f"{inquiry_id:d}"}, '
        f'"attempt": {outcome.attempts:d}, "state": {spell(state)}, '
        f'"status_code": {"null" if status_code is None else f"{status_code:d}"}, '
        f'"error": {"null" if error is None else spell(error)}, '
        f'"next_attempt_at": {"null" if next_attempt_at is None else spell(next_attempt_at)}, '
        f'"current_rating": {"null" if current is None else encode(current)}, '
        f'"duration_ms": {duration_ms!r}'
    )


def _age(delivery: ClaimedDelivery) -> timedelta:
    return utc_now() - delivery.age_from


def _excerpt(text: str | None) -> str | None:
    if not text:
        return None
    return text if len(text) <= ERROR_EXCERPT_CHARS else text[: ERROR_EXCERPT_CHARS - 1] + "…"
