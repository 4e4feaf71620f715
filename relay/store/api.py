"""The store interface: every read and write the relay makes, in the domain's verbs, on any backend."""

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from relay.domain.judgement import Judgement
from relay.linkfile import Link
from relay.store.activity import MinuteActivity
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


class StoreUnavailable(Exception):
    """The database could not commit or answer now: full, unwritable, locked, unreachable, or closed."""


class DatabaseUnusable(Exception):
    """The database cannot be opened, written or migrated at start: the relay cannot run on it."""


class Store(Protocol):
    """One database of the relay, shared by every process that opens the same DATABASE_URL.

    Every write commits before its coroutine returns. Instants in and out are aware UTC datetimes. Any
    method may raise StoreUnavailable; `open` may raise DatabaseUnusable too.
    """

    # What the relay tells operators it runs on: "sqlite" or "postgresql", and where (no secrets).
    backend: str
    location: str
    # At most one worker may run on this database (SQLite); any number may on PostgreSQL.
    single_worker: bool

    # Life ---------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and apply missing migrations (safe beside other processes doing the same)."""

    async def close(self) -> None:
        """Finish queued writes and disconnect."""

    async def migrate(self) -> list[str]:
        """Apply missing migrations; the names of those applied now (`relay migrate`)."""

    async def schema_version(self) -> int:
        """The newest migration applied to the database."""

    def worker_slot(self) -> AbstractContextManager[None]:
        """Held for a delivering process's life: on SQLite a second one refuses to start, on PostgreSQL
        any number may hold it (raises DatabaseUnusable, naming why, when this process may not deliver)."""

    async def readiness_problems(self) -> list[str]:
        """Why the database cannot take webhooks now; empty when it can (a real write is tried)."""

    # Intake -------------------------------------------------------------------------------------------

    async def record_webhook(self, inbound: InboundWebhook, *, recheck_before: datetime) -> StoredWebhook:
        """Store the raw webhook and, for a new rating version, its pending delivery, in one commit.

        Concurrent calls share commits. A rating created before `recheck_before` may have been delivered
        and pruned since: its delivery starts unconfirmed, so the worker reads the inquiry back first.
        """

    async def reprocess_webhook(
        self, webhook_id: int, judgement: Judgement, *, now: datetime, recheck_before: datetime
    ) -> StoredWebhook | None:
        """Judge a quarantined webhook again as if it arrived `now`; None if unknown or not quarantined."""

    # The worker ---------------------------------------------------------------------------------------

    async def claim_due(
        self, tenant: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[ClaimedDelivery]:
        """Lease up to `limit` of the tenant's due deliveries, oldest due first, skipping any another worker
        is claiming.

        A delivery whose lease ran out (its worker died mid-send) comes back unconfirmed. A newer version
        of a rating waits while an older one is in flight. The inquiry is filled in from the links.
        """

    async def take_turn(
        self, delivery_id: int, inquiry_id: int, *, leased_until: datetime, now: datetime, until: datetime
    ) -> Turn:
        """Right before a call to Quivo: extend the delivery's lease from `leased_until` to `until`, and
        take its inquiry for the delivery until then, in one commit.

        "lost": the delivery is no longer leased until `leased_until` (the lease ran out and a claim took
        it again); nothing changed and no call may go out for it. "busy": another delivery's send holds
        the inquiry (the lease is extended all the same). "go": both done. The database enforces one
        holder per inquiry across every worker; a hold past its `until` (its worker died) may be taken
        over, and the same delivery taking it again extends it.
        """

    async def take_turns(self, asks: Sequence[TurnAsk], *, now: datetime, until: datetime) -> list[Turn]:
        """take_turn for each delivery asking, in order, in one commit: its answer for each, in order."""

    async def record_outcome(self, outcome: Outcome, *, leased_until: datetime, now: datetime) -> str:
        """Store where a claimed delivery went, its calls, and release its inquiry; its state now.

        Written only while the delivery is still leased until `leased_until`: otherwise nothing changes
        and the answer is LEASE_LOST. A delivery going back to wait may come out `superseded` (a newer
        version arrived meanwhile) or `pending` instead of `unmatched` (a link was saved meanwhile).
        """

    async def record_outcomes(self, finishes: Sequence[Finish], *, now: datetime) -> list[str]:
        """record_outcome for each finish, in order, in one commit (one round trip): each one's answer."""

    async def sweep_unmatched(
        self, *, now: datetime, expire_before: Mapping[str, datetime]
    ) -> UnmatchedSweep:
        """Unmatched deliveries whose link now exists go back to pending; those of a tenant named in
        `expire_before` waiting since before the tenant's instant die (other tenants' go on waiting)."""

    async def retry_unmatched(self, *, now: datetime) -> int:
        """Every unmatched delivery is tried again (at start: the inquiry id pattern may have changed)."""

    async def inquiry_held_by_outage(self, tenant: str, *, now: datetime) -> int | None:
        """The inquiry of the tenant's delivery waiting out a Quivo outage that is due soonest: what a probe
        reads."""

    async def due_after_outage(self, tenant: str, *, now: datetime) -> int:
        """The tenant's Quivo is back: its deliveries held only by the outage are due now (how many)."""

    def new_work(self) -> AsyncIterator[None]:
        """Yields whenever another process may have made deliveries due (LISTEN/NOTIFY, or a cheap poll).

        It may yield when nothing is due; a caller still sweeps now and then, in case a wake was missed.
        """

    async def prune_batch(self, *, older_than: datetime, batch_size: int) -> PruneResult:
        """Delete up to `batch_size` finished deliveries (with their attempts) and spent webhooks.

        Delivered and superseded deliveries last updated before `older_than` go. Duplicate and ignored
        webhooks received before it go, and accepted ones no delivery points at any more; quarantined
        ones stay for an operator. Workers that last beat before it leave the registry.
        """

    # Relay-wide decisions, shared by every worker -----------------------------------------------------

    async def beat(self, worker: WorkerBeat) -> None:
        """Record that this worker is alive (and why it holds deliveries, if it does)."""

    async def forget_worker(self, worker_id: str) -> None:
        """A worker stopped cleanly: it leaves the registry at once."""

    async def live_workers(self, *, since: datetime) -> list[WorkerBeat]:
        """Workers that beat at or after `since`, oldest started first."""

    async def take_duty(self, duty: str, holder: str, *, now: datetime, until: datetime) -> bool:
        """Hold a relay-wide duty (retention, the unmatched sweep) until `until`; False: another holds it.

        The same holder taking it again extends its hold; a hold past its `until` may be taken over.
        """

    async def reserve_send_slot(
        self, account: str, *, now: datetime, spacing_s: float, count: int = 1
    ) -> datetime:
        """The instant this call to a Quivo account may go: slots `spacing_s` apart across every worker.
        With `count`, the first of that many slots reserved together, each `spacing_s` after the last."""

    async def pause_account(self, pause: AccountPause) -> None:
        """Every worker holds calls to the account until the pause's `until` (or until it is lifted)."""

    async def lift_pause(self, account: str) -> None:
        """Calls to the account may go again."""

    async def account_pauses(self, *, now: datetime) -> list[AccountPause]:
        """The pauses in force at `now`."""

    # Operators ----------------------------------------------------------------------------------------

    async def deliveries_by_state(self) -> dict[str, int]:
        """How many deliveries are in each state, every state present (0 when none)."""

    async def read_backlog(self, *, now: datetime) -> Backlog:
        """The backlog's age and the workers' lag at `now`: the one definition every report uses."""

    async def stats(self, *, now: datetime) -> Stats:
        """Deliveries by state, webhooks by status, the backlog, deliveries done and dead lately."""

    async def activity(self, *, since: datetime, now: datetime) -> list[MinuteActivity]:
        """Each minute from the one holding `since` to the one holding `now`, oldest first, every one
        present: webhooks received in it (any status) and deliveries delivered in it (pruned ones gone)."""

    async def list_deliveries(
        self, where: DeliveryFilter, *, after: int | None = None, limit: int = 50
    ) -> list[DeliverySummary]:
        """Up to `limit` deliveries matching `where`, newest (highest id) first, from below the id `after`."""

    async def count_deliveries(self, where: DeliveryFilter) -> int:
        """How many deliveries match `where` (what a bulk replay's confirmation states)."""

    async def delivery_comments(self, delivery_ids: Sequence[int]) -> dict[int, str | None]:
        """The consumer's comment of each of these deliveries that exists (None: it has none), by id."""

    async def get_delivery(self, delivery_id: int) -> DeliveryDetail | None:
        """One delivery with its calls to Quivo and the webhook it came from; None when there is none."""

    async def replay_delivery(self, delivery_id: int, *, now: datetime) -> StateChange:
        """Send a dead or unmatched delivery back to pending, due `now`, unconfirmed, attempts from 0.

        A delivery with a newer version of its rating stays as it is: replaying would overwrite the newer.
        """

    async def replay_batch(self, delivery_ids: Sequence[int], *, now: datetime) -> ReplayBatch:
        """Replay these listed deliveries as `replay_delivery` does, in one commit; say why any stayed."""

    async def cancel_delivery(self, delivery_id: int, *, now: datetime) -> StateChange:
        """Stop a delivery neither delivered nor in flight: it becomes dead, 'cancelled by operator'."""

    async def list_webhooks(
        self, where: WebhookFilter, *, after: int | None = None, limit: int = 50
    ) -> list[WebhookSummary]:
        """Up to `limit` stored webhooks matching `where`, newest first, from below the id `after`."""

    async def get_webhook(self, webhook_id: int) -> WebhookDetail | None:
        """One stored webhook with its raw body and the ids of the deliveries it created."""

    async def dismiss_webhook(self, webhook_id: int, reason: str, *, now: datetime) -> WebhookStatus | None:
        """Close a quarantined webhook without delivering it: from `now` it is `dismissed`, with `reason`.

        Its status before (None: no such webhook); only a quarantined one changes. It stays (body, errors
        and all) and is listed as dismissed; it no longer counts as quarantined, nor can it be reprocessed.
        """

    async def save_links(self, links: Sequence[Link], *, now: datetime) -> LinkUpsert:
        """Save links (the later of two for one order wins), waking their unmatched deliveries; one commit."""

    async def delete_link(self, merchant_id: int, external_id: str) -> bool:
        """Remove one link; True when there was one. Deliveries already matched keep their inquiry."""

    async def list_links(
        self,
        *,
        merchant_id: int | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 100,
        external_id: str | None = None,
    ) -> list[Link]:
        """Up to `limit` links in (merchant_id, external_id) order, starting past the key `after`; with an
        `external_id`, only that order's links (at every merchant, without `merchant_id`)."""

    # Moving house -------------------------------------------------------------------------------------

    async def row_counts(self) -> dict[str, int]:
        """How many rows each of COPIED_TABLES holds."""

    def export_rows(self, table: str, *, batch_size: int) -> AsyncIterator[list[Row]]:
        """Every row of one of COPIED_TABLES, in batches, in primary key order."""

    async def import_rows(self, table: str, rows: list[Row]) -> None:
        """Insert rows exported from another store, ids kept; ids issued later continue past them."""

    async def refresh_statistics(self) -> None:
        """After an import: the statistics the database plans queries with describe the rows it now holds."""
