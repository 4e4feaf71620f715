"""PostgresStore: the store interface on one PostgreSQL database shared by any number of relay processes."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from relay.domain.judgement import Judgement
from relay.linkfile import Link
from relay.store.activity import MinuteActivity
from relay.store.api import DatabaseUnusable, StoreUnavailable
from relay.store.filters import DeliveryFilter, WebhookFilter
from relay.store.postgres import activity, dismissals, intake, moving, operators, outbox, relaywide
from relay.store.postgres import links as link_table
from relay.store.postgres.commits import GroupCommit
from relay.store.postgres.connection import WORK_CHANNEL, Conn, failures_as_unavailable, read_url
from relay.store.postgres.migrations import LATEST_VERSION, applied_version, migrate
from relay.store.postgres.wakes import listen_for_work
from relay.store.records import (
    AccountPause,
    Backlog,
    ClaimedDelivery,
    DeliveryDetail,
    DeliverySummary,
    Finish,
    InboundWebhook,
    LinkUpsert,
    Outcome,
    PruneResult,
    ReplayBatch,
    Row,
    StateChange,
    Stats,
    StoredWebhook,
    Turn,
    TurnAsk,
    UnmatchedSweep,
    WebhookDetail,
    WebhookStatus,
    WebhookSummary,
    WorkerBeat,
)

T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")
Work = Callable[[Conn], Awaitable[T]]


class PostgresStore:
    """A pool of connections; webhooks share commits through one group-commit loop per process."""

    backend = "postgresql"
    single_worker = False

    def __init__(self, url: str, *, timeout_s: float, pool_size: int) -> None:
        target = read_url(url)
        self.location = target.location
        self._dsn = target.dsn
        self._password = target.password
        self.timeout_s = timeout_s
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._commits: GroupCommit[intake.Arrival, StoredWebhook] | None = None
        self._outcomes: GroupCommit[outbox.Recording, str] | None = None
        self._turns: GroupCommit[outbox.TurnRequest, Turn] | None = None
        self._slots: GroupCommit[relaywide.SlotRequest, datetime] | None = None

    # Life ---------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and apply missing migrations (under an advisory lock, beside other processes)."""
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                # Every connection opened at start and kept: opened on demand (asyncpg closes one idle for
                # 300 s), each cost a password handshake of ~10 ms on the event loop while webhooks waited.
                min_size=self.pool_size,
                max_size=self.pool_size,
                max_inactive_connection_lifetime=0,
                timeout=self.timeout_s,
                command_timeout=self.timeout_s,
                # Each statement sees what committed before it (a webhook reads the versions another
                # process stored while it waited for their lock), whatever the database's default.
                server_settings={
                    "application_name": "relay",
                    "default_transaction_isolation": "read committed",
                },
                # No session state to undo (no SET, LISTEN or session lock on a pooled connection): the
                # default reset query would cost a round trip at every release. An open transaction is
                # still rolled back.
                reset=_keep_session,
            )
            async with self._pool.acquire(timeout=self.timeout_s) as conn:
                await migrate(conn)
                durability = await conn.fetchval("SHOW synchronous_commit")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            await self._close_pool()
            raise DatabaseUnusable(f"{self.location}: {self._without_password(error)}") from None
        if durability == "off":
            await self._close_pool()
            # A 2xx must mean committed: with it off, a crash loses webhooks already acknowledged.
            raise DatabaseUnusable(f"{self.location}: synchronous_commit is off; the relay needs it on")
        self._commits = GroupCommit(
            self._pool, intake.record_webhooks, timeout_s=self.timeout_s, overlap_at=intake.OVERLAP_AT
        )
        self._outcomes = GroupCommit(self._pool, outbox.record_outcomes, timeout_s=self.timeout_s)
        self._turns = GroupCommit(self._pool, outbox.take_turns, timeout_s=self.timeout_s)
        self._slots = GroupCommit(self._pool, relaywide.reserve_send_slots, timeout_s=self.timeout_s)

    def _without_password(self, error: BaseException) -> str:
        text = (
            "did not answer in time"
            if isinstance(error, TimeoutError)
            else f"{type(error).__name__}: {error}"
        )
        return text.replace(self._password, "***") if self._password else text

    async def close(self) -> None:
        """Finish queued writes and disconnect."""
        for group in (self._commits, self._outcomes, self._turns, self._slots):
            if group is not None:
                await group.close()
        self._commits = self._outcomes = self._turns = self._slots = None
        await self._close_pool()

    async def _close_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout_s)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    async def migrate(self) -> list[str]:
        """Apply missing migrations; the names of those applied now (`relay migrate`)."""
        return await self._run(migrate)

    async def schema_version(self) -> int:
        """The newest migration applied to the database."""
        return await self._run(applied_version)

    def worker_slot(self) -> AbstractContextManager[None]:
        """Any number of workers may run on PostgreSQL: nothing to hold."""
        return contextlib.nullcontext()

    async def readiness_problems(self) -> list[str]:
        """Why the database cannot take webhooks now; empty when it can (a real write is tried)."""
        try:
            version = await self.schema_version()
            if version < LATEST_VERSION:
                return [f"database schema at version {version}, expected {LATEST_VERSION}"]
            await self._transaction(_touch_probe)
        except StoreUnavailable as error:
            return [f"database not writable: {error}"]
        return []

    # Intake -------------------------------------------------------------------------------------------

    async def record_webhook(self, inbound: InboundWebhook, *, recheck_before: datetime) -> StoredWebhook:
        """Stored in a transaction shared with other webhooks arriving now; a new delivery wakes workers."""
        return await _opened(self._commits).write((inbound, recheck_before))

    async def reprocess_webhook(
        self, webhook_id: int, judgement: Judgement, *, now: datetime, recheck_before: datetime
    ) -> StoredWebhook | None:
        """Judge a quarantined webhook again as if it arrived `now`; None if unknown or not quarantined."""

        # A new delivery wakes the workers from inside the database's function.
        return await self._transaction(
            lambda conn: intake.reprocess_webhook(
                conn, webhook_id, judgement, now=now, recheck_before=recheck_before
            )
        )

    # The worker ---------------------------------------------------------------------------------------

    async def claim_due(
        self, tenant: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[ClaimedDelivery]:
        """Lease up to `limit` due deliveries, skipping rows another worker is claiming (SKIP LOCKED)."""
        # One statement: atomic without a transaction around it, and two round trips shorter.
        return await self._run(
            lambda conn: outbox.claim_due(conn, tenant, now=now, lease_until=lease_until, limit=limit)
        )

    async def take_turn(
        self, delivery_id: int, inquiry_id: int, *, leased_until: datetime, now: datetime, until: datetime
    ) -> Turn:
        """Renew the lease and take the inquiry, in one statement; shares a commit with other turns now."""
        return await _opened(self._turns).write((delivery_id, inquiry_id, leased_until, now, until))

    async def take_turns(self, asks: Sequence[TurnAsk], *, now: datetime, until: datetime) -> list[Turn]:
        """Every turn asked, in order, in one pipelined round trip (one implicit transaction)."""
        requests = [(ask.delivery_id, ask.inquiry_id, ask.leased_until, now, until) for ask in asks]
        return await self._run(lambda conn: outbox.take_turns(conn, requests))

    async def record_outcome(self, outcome: Outcome, *, leased_until: datetime, now: datetime) -> str:
        """Store where a claimed delivery went, its calls, and release its inquiry, in one transaction
        shared with other deliveries finishing now (one going back to pending wakes the workers)."""
        return await _opened(self._outcomes).write((outcome, leased_until, now))

    async def record_outcomes(self, finishes: Sequence[Finish], *, now: datetime) -> list[str]:
        """Every outcome, in order, in one pipelined round trip (one implicit transaction)."""
        records = [(finish.outcome, finish.leased_until, now) for finish in finishes]
        return await self._run(lambda conn: outbox.record_outcomes(conn, records))

    async def sweep_unmatched(
        self, *, now: datetime, expire_before: Mapping[str, datetime]
    ) -> UnmatchedSweep:
        """Unmatched deliveries whose link now exists go back to pending; those waiting too long die."""

        async def job(conn: Conn) -> UnmatchedSweep:
            woken, expired = await outbox.sweep_unmatched(conn, now=now, expire_before=expire_before)
            if woken:
                await _notify(conn)
            return UnmatchedSweep(woken=woken, expired=expired)

        return await self._transaction(job)

    async def retry_unmatched(self, *, now: datetime) -> int:
        """Every unmatched delivery is tried again (at start: the inquiry id pattern may have changed)."""
        return await self._waking(lambda conn: outbox.retry_unmatched(conn, now=now), made_due=bool)

    async def inquiry_held_by_outage(self, tenant: str, *, now: datetime) -> int | None:
        """The inquiry of the delivery waiting out a Quivo outage that is due soonest."""
        return await self._run(lambda conn: outbox.inquiry_held_by_outage(conn, tenant, now=now))

    async def due_after_outage(self, tenant: str, *, now: datetime) -> int:
        """Quivo is back: every delivery held only by the outage is due now (how many)."""
        return await self._waking(lambda conn: outbox.due_after_outage(conn, tenant, now=now), made_due=bool)

    def new_work(self) -> AsyncIterator[None]:
        """Yields on each NOTIFY from any process, and once after the listening connection came back."""
        return listen_for_work(self._dsn, timeout_s=self.timeout_s, retry_s=min(1.0, self.timeout_s))

    async def prune_batch(self, *, older_than: datetime, batch_size: int) -> PruneResult:
        """Delete up to `batch_size` finished deliveries (with their attempts) and spent webhooks."""
        return await self._transaction(
            lambda conn: outbox.prune_batch(conn, older_than=older_than, batch_size=batch_size)
        )

    # Relay-wide decisions, shared by every worker -----------------------------------------------------

    async def beat(self, worker: WorkerBeat) -> None:
        """Record that this worker is alive (and why it holds deliveries, if it does)."""
        await self._run(lambda conn: relaywide.beat(conn, worker))

    async def forget_worker(self, worker_id: str) -> None:
        """A worker stopped cleanly: it leaves the registry at once."""
        await self._run(lambda conn: conn.execute("DELETE FROM workers WHERE worker_id = $1", worker_id))

    async def live_workers(self, *, since: datetime) -> list[WorkerBeat]:
        """Workers that beat at or after `since`, oldest started first."""
        return await self._run(lambda conn: relaywide.live_workers(conn, since=since))

    async def take_duty(self, duty: str, holder: str, *, now: datetime, until: datetime) -> bool:
        """Hold a relay-wide duty until `until`; False: another holds it."""
        return await self._run(lambda conn: relaywide.take_duty(conn, duty, holder, now=now, until=until))

    async def reserve_send_slot(
        self, account: str, *, now: datetime, spacing_s: float, count: int = 1
    ) -> datetime:
        """The instant this call to a Quivo account may go (the first of `count` slots reserved together):
        slots `spacing_s` apart across every worker. Shares a commit with other calls reserving now."""
        return await _opened(self._slots).write((account, now, spacing_s, count))

    async def pause_account(self, pause: AccountPause) -> None:
        """Every worker holds calls to the account until the pause's `until` (or until it is lifted)."""
        await self._run(lambda conn: relaywide.pause_account(conn, pause))

    async def lift_pause(self, account: str) -> None:
        """Calls to the account may go again."""
        await self._run(
            lambda conn: conn.execute(
                "UPDATE account_state SET pause_reason = NULL, paused_until = NULL WHERE account = $1",
                account,
            )
        )

    async def account_pauses(self, *, now: datetime) -> list[AccountPause]:
        """The pauses in force at `now`."""
        return await self._run(lambda conn: relaywide.account_pauses(conn, now=now))

    # Operators ----------------------------------------------------------------------------------------

    async def deliveries_by_state(self) -> dict[str, int]:
        """How many deliveries are in each state, every state present (0 when none)."""
        return await self._run(operators.deliveries_by_state)

    async def read_backlog(self, *, now: datetime) -> Backlog:
        """The backlog's age and the workers' lag at `now`."""
        return await self._run(lambda conn: operators.read_backlog(conn, now=now))

    async def stats(self, *, now: datetime) -> Stats:
        """Deliveries by state, webhooks by status, the backlog, deliveries done and dead lately."""
        # One snapshot for every count.
        return await self._transaction(lambda conn: operators.stats(conn, now=now), readonly=True)

    async def activity(self, *, since: datetime, now: datetime) -> list[MinuteActivity]:
        """Webhooks received and deliveries delivered, minute by minute from `since`'s to `now`'s."""
        return await self._run(lambda conn: activity.activity(conn, since=since, now=now))

    async def list_deliveries(
        self, where: DeliveryFilter, *, after: int | None = None, limit: int = 50
    ) -> list[DeliverySummary]:
        """Up to `limit` deliveries matching `where`, newest (highest id) first, from below the id `after`."""
        return await self._run(lambda conn: operators.list_deliveries(conn, where, after=after, limit=limit))

    async def count_deliveries(self, where: DeliveryFilter) -> int:
        """How many deliveries match `where`."""
        return await self._run(lambda conn: operators.count_deliveries(conn, where))

    async def delivery_comments(self, delivery_ids: Sequence[int]) -> dict[int, str | None]:
        """The consumer's comment of each of these deliveries (those that exist)."""
        return await self._run(lambda conn: operators.delivery_comments(conn, delivery_ids))

    async def get_delivery(self, delivery_id: int) -> DeliveryDetail | None:
        """One delivery with its calls to Quivo and the webhook it came from; None when there is none."""
        return await self._transaction(lambda conn: operators.get_delivery(conn, delivery_id), readonly=True)

    async def replay_delivery(self, delivery_id: int, *, now: datetime) -> StateChange:
        """Send a dead or unmatched delivery back to pending, due `now`, unconfirmed, attempts from 0."""
        return await self._waking(
            lambda conn: operators.replay_delivery(conn, delivery_id, now=now),
            made_due=lambda change: change.moved,
        )

    async def replay_batch(self, delivery_ids: Sequence[int], *, now: datetime) -> ReplayBatch:
        """Replay these listed deliveries as `replay_delivery` does, in one commit; say why any stayed."""
        return await self._waking(
            lambda conn: operators.replay_batch(conn, delivery_ids, now=now),
            made_due=lambda batch: bool(batch.replayed),
        )

    async def cancel_delivery(self, delivery_id: int, *, now: datetime) -> StateChange:
        """Stop a delivery neither delivered nor in flight: it becomes dead, 'cancelled by operator'."""
        return await self._transaction(lambda conn: operators.cancel_delivery(conn, delivery_id, now=now))

    async def list_webhooks(
        self, where: WebhookFilter, *, after: int | None = None, limit: int = 50
    ) -> list[WebhookSummary]:
        """Up to `limit` stored webhooks matching `where`, newest first, from below the id `after`."""
        return await self._run(lambda conn: operators.list_webhooks(conn, where, after=after, limit=limit))

    async def get_webhook(self, webhook_id: int) -> WebhookDetail | None:
        """One stored webhook with its raw body and the ids of the deliveries it created."""
        return await self._transaction(lambda conn: operators.get_webhook(conn, webhook_id), readonly=True)

    async def dismiss_webhook(self, webhook_id: int, reason: str, *, now: datetime) -> WebhookStatus | None:
        """Close a quarantined webhook without delivering it: from `now` it is `dismissed`, with `reason`."""
        return await self._transaction(
            lambda conn: dismissals.dismiss_webhook(conn, webhook_id, reason, now=now)
        )

    async def save_links(self, links: Sequence[Link], *, now: datetime) -> LinkUpsert:
        """Save links (the later of two for one order wins), waking their unmatched deliveries; one commit."""
        return await self._waking(
            lambda conn: link_table.save_links(conn, links, now=now), made_due=lambda saved: bool(saved.woken)
        )

    async def delete_link(self, merchant_id: int, external_id: str) -> bool:
        """Remove one link; True when there was one. Deliveries already matched keep their inquiry."""
        return await self._run(lambda conn: link_table.delete_link(conn, merchant_id, external_id))

    async def list_links(
        self,
        *,
        merchant_id: int | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 100,
        external_id: str | None = None,
    ) -> list[Link]:
        """Up to `limit` links in (merchant_id, external_id) order, starting past the key `after`; with an
        `external_id`, only that order's links."""
        return await self._run(
            lambda conn: link_table.list_links(
                conn, merchant_id=merchant_id, after=after, limit=limit, external_id=external_id
            )
        )

    # Moving house -------------------------------------------------------------------------------------

    async def row_counts(self) -> dict[str, int]:
        """How many rows each of COPIED_TABLES holds."""
        return await self._transaction(moving.row_counts, readonly=True)

    def export_rows(self, table: str, *, batch_size: int) -> AsyncIterator[list[Row]]:
        """Every row of one of COPIED_TABLES, in batches, in primary key order."""

        async def fetch(sql: str, *arguments: Any) -> list[asyncpg.Record]:
            return await self._run(lambda conn: conn.fetch(sql, *arguments))

        return moving.export_rows(fetch, table, batch_size=batch_size)

    async def import_rows(self, table: str, rows: list[Row]) -> None:
        """Insert rows exported from another store, ids kept; ids issued later continue past them."""
        await self._transaction(lambda conn: moving.import_rows(conn, table, rows))

    async def refresh_statistics(self) -> None:
        """ANALYZE every copied table, each bounded by its own timeout (see moving.analyze)."""
        if self._pool is None:
            raise StoreUnavailable("database is closed")
        async with failures_as_unavailable(), self._pool.acquire(timeout=self.timeout_s) as conn:
            await moving.analyze(conn)

    # Connections --------------------------------------------------------------------------------------

    async def _run(self, work: Work[T]) -> T:
        """`work` on a pooled connection, outside any transaction, bounded by the timeout."""
        if self._pool is None:
            raise StoreUnavailable("database is closed")
        async with failures_as_unavailable(), asyncio.timeout(self.timeout_s), self._pool.acquire() as conn:
            return await work(conn)

    async def _waking(self, work: Work[T], *, made_due: Callable[[T], bool]) -> T:
        """`work` in a transaction that wakes the listening workers at its commit if it made work due."""

        async def job(conn: Conn) -> T:
            result = await work(conn)
            if made_due(result):
                await _notify(conn)
            return result

        return await self._transaction(job)

    async def _transaction(self, work: Work[T], *, readonly: bool = False) -> T:
        """`work` in a transaction of its own on a pooled connection, bounded by the timeout."""

        async def transaction(conn: Conn) -> T:
            async with conn.transaction(isolation="repeatable_read" if readonly else None, readonly=readonly):
                return await work(conn)

        return await self._run(transaction)


def _opened(group: GroupCommit[A, R] | None) -> GroupCommit[A, R]:
    if group is None:
        raise StoreUnavailable("database is closed")
    return group


async def _keep_session(conn: "asyncpg.Connection[asyncpg.Record]") -> None:
    """A pooled connection goes back as it is (asyncpg has already rolled back any open transaction)."""


async def _notify(conn: Conn) -> None:
    """Wake listening workers when this transaction commits."""
    await conn.execute(f"NOTIFY {WORK_CHANNEL}")


async def _touch_probe(conn: Conn) -> None:
    await conn.execute(
        "INSERT INTO meta (key, value) VALUES ('ready_probe', $1) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        datetime.now(UTC).isoformat(),
    )
