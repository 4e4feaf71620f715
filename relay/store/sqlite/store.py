"""SqliteStore: the store interface on one SQLite file, for one machine and one worker."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import aiosqlite

from relay.domain.judgement import Judgement
from relay.linkfile import Link
from relay.store.activity import MinuteActivity
from relay.store.api import StoreUnavailable
from relay.store.filters import DeliveryFilter, WebhookFilter
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
from relay.store.sqlite import (
    accounts,
    activity,
    claims,
    copying,
    deliveries,
    dismissals,
    duties,
    gauges,
    holds,
    intake,
    outage,
    replays,
    retention,
    unmatched,
    webhooks,
    workers,
)
from relay.store.sqlite import (
    links as link_table,
)
from relay.store.sqlite.intake_channel import IntakeProcess
from relay.store.sqlite.reading import one
from relay.store.sqlite.worker_lock import sole_worker
from relay.store.sqlite.writer import Database

T = TypeVar("T")

# How often new_work reads PRAGMA data_version: a cheap read, and a wake within this of another's commit.
COMMIT_WATCH_INTERVAL_S = 0.15


class SqliteStore:
    """The relay's records in one SQLite file: writes share commits (on the writer thread, or for new webhooks
    in intake's process); reads use WAL."""

    backend = "sqlite"
    single_worker = True

    def __init__(self, path: Path, *, timeout_s: float, intake_process: bool = False) -> None:
        self.path = path
        self.location = str(path)
        self.database = Database(path, timeout_s=timeout_s)
        # A store serving webhooks stores new ones through a process of their own (see IntakeProcess).
        self.intake_process = IntakeProcess(self.database) if intake_process else None

    # Life ---------------------------------------------------------------------------------------------

    async def open(self) -> None:
        await self.database.open()
        if self.intake_process is not None:
            await self.intake_process.start()

    async def close(self) -> None:
        if self.intake_process is not None:
            await self.intake_process.close()
        await self.database.close()

    async def migrate(self) -> list[str]:
        return await self.database.migrate()

    async def schema_version(self) -> int:
        return await self._read(lambda _: self.database.schema_version())

    def worker_slot(self) -> AbstractContextManager[None]:
        return sole_worker(self.path)

    async def readiness_problems(self) -> list[str]:
        return await self.database.readiness_problems()

    # Intake -------------------------------------------------------------------------------------------

    async def record_webhook(self, inbound: InboundWebhook, *, recheck_before: datetime) -> StoredWebhook:
        job = intake.record_webhook(inbound, recheck_before=recheck_before)
        if self.intake_process is not None and self.intake_process.running:
            stored = await self.intake_process.record(job)
            if stored is not None:
                return stored
        return await self.database.write(job)

    async def reprocess_webhook(
        self, webhook_id: int, judgement: Judgement, *, now: datetime, recheck_before: datetime
    ) -> StoredWebhook | None:
        return await self.database.write(
            intake.reprocess_webhook(webhook_id, judgement, now=now, recheck_before=recheck_before)
        )

    # The worker ---------------------------------------------------------------------------------------

    async def claim_due(
        self, tenant: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[ClaimedDelivery]:
        return await self.database.write(
            claims.claim_due(tenant, now=now, lease_until=lease_until, limit=limit)
        )

    async def take_turn(
        self, delivery_id: int, inquiry_id: int, *, leased_until: datetime, now: datetime, until: datetime
    ) -> Turn:
        return await self.database.write(
            holds.take_turn(delivery_id, inquiry_id, leased_until=leased_until, now=now, until=until)
        )

    async def take_turns(self, asks: Sequence[TurnAsk], *, now: datetime, until: datetime) -> list[Turn]:
        return await self.database.write(holds.take_turns(asks, now=now, until=until))

    async def record_outcome(self, outcome: Outcome, *, leased_until: datetime, now: datetime) -> str:
        return await self.database.write(claims.record_outcome(outcome, leased_until=leased_until, now=now))

    async def record_outcomes(self, finishes: Sequence[Finish], *, now: datetime) -> list[str]:
        return await self.database.write(claims.record_outcomes(finishes, now=now))

    async def sweep_unmatched(
        self, *, now: datetime, expire_before: Mapping[str, datetime]
    ) -> UnmatchedSweep:
        return await self.database.write(unmatched.sweep_unmatched(now=now, expire_before=expire_before))

    async def retry_unmatched(self, *, now: datetime) -> int:
        return await self.database.write(unmatched.retry_unmatched(now=now))

    async def inquiry_held_by_outage(self, tenant: str, *, now: datetime) -> int | None:
        return await self.database.write(outage.inquiry_held_by_outage(tenant, now=now))

    async def due_after_outage(self, tenant: str, *, now: datetime) -> int:
        return await self.database.write(outage.due_after_outage(tenant, now=now))

    async def new_work(self) -> AsyncIterator[None]:
        # data_version on the reader changes whenever another connection commits: a web process, the
        # CLI, or this process's own writer (one more look for due deliveries, which writes nothing).
        seen = await self._commits_seen()
        while True:
            await asyncio.sleep(COMMIT_WATCH_INTERVAL_S)
            try:
                version = await self._commits_seen()
            except StoreUnavailable:
                continue  # the caller's own store calls report it; the next look may find the file back
            if version != seen:
                seen = version
                yield

    async def prune_batch(self, *, older_than: datetime, batch_size: int) -> PruneResult:
        return await self.database.write(retention.prune_batch(older_than=older_than, batch_size=batch_size))

    # Relay-wide decisions, shared by every worker -----------------------------------------------------

    async def beat(self, worker: WorkerBeat) -> None:
        await self.database.write(workers.beat(worker))

    async def forget_worker(self, worker_id: str) -> None:
        await self.database.write(workers.forget_worker(worker_id))

    async def live_workers(self, *, since: datetime) -> list[WorkerBeat]:
        return await self._read(lambda conn: workers.live_workers(conn, since=since))

    async def take_duty(self, duty: str, holder: str, *, now: datetime, until: datetime) -> bool:
        return await self.database.write(duties.take_duty(duty, holder, now=now, until=until))

    async def reserve_send_slot(
        self, account: str, *, now: datetime, spacing_s: float, count: int = 1
    ) -> datetime:
        return await self.database.write(
            accounts.reserve_send_slot(account, now=now, spacing_s=spacing_s, count=count)
        )

    async def pause_account(self, pause: AccountPause) -> None:
        await self.database.write(accounts.pause_account(pause))

    async def lift_pause(self, account: str) -> None:
        await self.database.write(accounts.lift_pause(account))

    async def account_pauses(self, *, now: datetime) -> list[AccountPause]:
        return await self._read(lambda conn: accounts.account_pauses(conn, now=now))

    # Operators ----------------------------------------------------------------------------------------

    async def deliveries_by_state(self) -> dict[str, int]:
        return await self._read(gauges.deliveries_by_state)

    async def read_backlog(self, *, now: datetime) -> Backlog:
        return await self._read(lambda conn: gauges.read_backlog(conn, now))

    async def stats(self, *, now: datetime) -> Stats:
        return await self._read(lambda conn: gauges.stats(conn, now=now))

    async def activity(self, *, since: datetime, now: datetime) -> list[MinuteActivity]:
        return await self._read(lambda conn: activity.activity(conn, since=since, now=now))

    async def list_deliveries(
        self, where: DeliveryFilter, *, after: int | None = None, limit: int = 50
    ) -> list[DeliverySummary]:
        return await self._read(
            lambda conn: deliveries.list_deliveries(conn, where, after=after, limit=limit)
        )

    async def count_deliveries(self, where: DeliveryFilter) -> int:
        return await self._read(lambda conn: deliveries.count_deliveries(conn, where))

    async def delivery_comments(self, delivery_ids: Sequence[int]) -> dict[int, str | None]:
        return await self._read(lambda conn: deliveries.delivery_comments(conn, delivery_ids))

    async def get_delivery(self, delivery_id: int) -> DeliveryDetail | None:
        return await self._read(lambda conn: deliveries.get_delivery(conn, delivery_id))

    async def replay_delivery(self, delivery_id: int, *, now: datetime) -> StateChange:
        return await self.database.write(replays.replay_delivery(delivery_id, now=now))

    async def replay_batch(self, delivery_ids: Sequence[int], *, now: datetime) -> ReplayBatch:
        return await self.database.write(replays.replay_batch(delivery_ids, now=now))

    async def cancel_delivery(self, delivery_id: int, *, now: datetime) -> StateChange:
        return await self.database.write(replays.cancel_delivery(delivery_id, now=now))

    async def list_webhooks(
        self, where: WebhookFilter, *, after: int | None = None, limit: int = 50
    ) -> list[WebhookSummary]:
        return await self._read(lambda conn: webhooks.list_webhooks(conn, where, after=after, limit=limit))

    async def get_webhook(self, webhook_id: int) -> WebhookDetail | None:
        return await self._read(lambda conn: webhooks.get_webhook(conn, webhook_id))

    async def dismiss_webhook(self, webhook_id: int, reason: str, *, now: datetime) -> WebhookStatus | None:
        return await self.database.write(dismissals.dismiss_webhook(webhook_id, reason, now=now))

    async def save_links(self, links: Sequence[Link], *, now: datetime) -> LinkUpsert:
        return await self.database.write(link_table.save_links(links, now=now))

    async def delete_link(self, merchant_id: int, external_id: str) -> bool:
        return await self.database.write(link_table.delete_link(merchant_id, external_id))

    async def list_links(
        self,
        *,
        merchant_id: int | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 100,
        external_id: str | None = None,
    ) -> list[Link]:
        return await self._read(
            lambda conn: link_table.list_links(
                conn, merchant_id=merchant_id, after=after, limit=limit, external_id=external_id
            )
        )

    # Moving house -------------------------------------------------------------------------------------

    async def row_counts(self) -> dict[str, int]:
        return await self._read(copying.row_counts)

    async def export_rows(self, table: str, *, batch_size: int) -> AsyncIterator[list[Row]]:
        try:
            async for batch in copying.export_rows(self.database.reader, table, batch_size=batch_size):
                yield batch
        except sqlite3.Error as error:
            raise StoreUnavailable(f"{type(error).__name__}: {error}") from None

    async def import_rows(self, table: str, rows: list[Row]) -> None:
        await self.database.write(copying.import_rows(table, rows))

    async def refresh_statistics(self) -> None:
        """Nothing to refresh: SQLite plans the relay's queries without statistics (no ANALYZE ever ran)."""

    # Helpers ------------------------------------------------------------------------------------------

    async def _read(self, read: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """A read on the reader connection; SQLite's failures there are StoreUnavailable, as for writes."""
        try:
            return await read(self.database.reader)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"{type(error).__name__}: {error}") from None

    async def _commits_seen(self) -> int:
        row = await self._read(lambda conn: one(conn, "PRAGMA data_version", ()))
        return int(row[0]) if row else 0
