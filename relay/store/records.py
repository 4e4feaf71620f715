"""The records the store takes and gives: plain dataclasses with aware UTC datetimes, no SQL, no encoding."""

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, cast

from relay.domain.delivery import WAITING_STATES, DeliveryState
from relay.domain.judgement import Judgement

# `dismissed`: a quarantined webhook an operator closed without delivering it. It is stored as quarantined
# with `dismissed_at` set (SQLite's CHECK on the column names the other four) and read back as dismissed.
WebhookStatus = Literal["accepted", "duplicate", "ignored", "quarantined", "dismissed"]


def webhook_status(stored: str, dismissed: bool) -> WebhookStatus:
    """A webhook's status as read from its row: a quarantined one an operator dismissed is `dismissed`."""
    return "dismissed" if stored == "quarantined" and dismissed else cast(WebhookStatus, stored)


# What the sender is told: an accepted version that an already known later one outranks is `superseded`,
# so an answer never says `accepted` for a delivery that will not be sent.
StoredStatus = Literal["accepted", "superseded", "duplicate", "ignored", "quarantined"]
AttemptAction = Literal["send", "reconcile"]

# Intake -------------------------------------------------------------------------------------------


class InboundWebhook(NamedTuple):
    """A webhook as received and judged by the inbound edge, before it is stored."""

    # A NamedTuple: as immutable as a frozen dataclass, and built (once a webhook) at under half its cost.
    request_id: str
    received_at: datetime
    body: bytes
    content_type: str | None
    judgement: Judgement
    # The tenant whose URL and credentials it came in by; its delivery is that tenant's too.
    tenant: str = "default"


@dataclass(frozen=True)
class StoredWebhook:
    """What storing a webhook did: its id, final status, and the delivery it created or matched."""

    webhook_id: int
    status: StoredStatus
    delivery_id: int | None = None
    superseded: list[int] = field(default_factory=list)


# The worker's side ------------------------------------------------------------------------------
# Not frozen: several are made for every delivery, and a frozen dataclass costs several times as much to make
# (Outcome's ten fields: 17k instructions frozen, 3.4k not). Nothing changes one once made.


@dataclass(slots=True)
class ClaimedDelivery:
    """A delivery leased to one worker; `unconfirmed` means an earlier send may have reached Quivo."""

    id: int
    tenant: str
    merchant_id: int
    rating_id: int
    rating_json: str
    inquiry_id: int | None
    attempts: int
    unconfirmed: bool
    # When it was accepted, or last replayed by an operator: age limits count from here.
    age_from: datetime


@dataclass(slots=True)
class AttemptRecord:
    """One call made to Quivo for a delivery, as the worker reports it."""

    action: AttemptAction
    started_at: datetime
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None = None


@dataclass(slots=True)
class Outcome:
    """Where a claimed delivery goes next, and what to remember of how it got there."""

    delivery_id: int
    state: DeliveryState
    attempts: int
    unconfirmed: bool
    next_attempt_at: datetime | None = None
    inquiry_id: int | None = None
    last_status: int | None = None
    last_error: str | None = None
    current_rating: float | None = None
    calls: list[AttemptRecord] = field(default_factory=list)


@dataclass(slots=True)
class Finish:
    """A claimed delivery's outcome, and the lease its worker holds it under (see Store.record_outcomes)."""

    outcome: Outcome
    leased_until: datetime


@dataclass(slots=True)
class TurnAsk:
    """A claimed delivery asking for its inquiry's turn, under the lease it holds (see Store.take_turns)."""

    delivery_id: int
    inquiry_id: int
    leased_until: datetime


# Right before a call to Quivo: "go"; "busy": another delivery's send holds the inquiry; "lost": the lease ran
# out and a claim took the delivery again, so no call may go out for it from here.
Turn = Literal["go", "busy", "lost"]
# What record_outcome answers, instead of a state, when the delivery is no longer leased to its caller.
LEASE_LOST = "lost"


@dataclass(frozen=True)
class ExpiredDelivery:
    """An unmatched delivery that died of waiting for its inquiry, as its `delivery.dead` line names it."""

    id: int
    tenant: str
    merchant_id: int
    rating_id: int
    attempts: int


@dataclass(frozen=True)
class UnmatchedSweep:
    """What one sweep of unmatched deliveries did: those a link now exists for, and those that expired."""

    woken: list[int]
    expired: list[ExpiredDelivery]


# Relay-wide state shared by every process -------------------------------------------------------


@dataclass(frozen=True)
class WorkerBeat:
    """A worker saying it is alive: who it is, where it runs, and why it holds deliveries if it does."""

    worker_id: str
    host: str
    pid: int
    started_at: datetime
    beat_at: datetime
    paused_reason: str | None = None


@dataclass(frozen=True)
class AccountPause:
    """Every worker holds calls to one Quivo account until `until` (None: until a worker lifts it)."""

    account: str
    reason: str
    until: datetime | None


# Operators' reads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    """How long undelivered ratings have waited; None where no delivery is waiting or due."""

    # The oldest rating not yet delivered (pending, sending, retrying), since it was accepted or replayed.
    # Unmatched ones are left out: they wait for a link, not for Quivo, and die at RELAY_UNMATCHED_TTL.
    age_s: float | None
    # The earliest due delivery, since it fell due: how far the workers are behind their own schedule.
    worker_lag_s: float | None


@dataclass(frozen=True)
class DeliverySummary:
    """One line of the delivery listing."""

    id: int
    tenant: str
    state: DeliveryState
    merchant_id: int
    rating_id: int
    external_id: str | None
    inquiry_id: int | None
    stars: int
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DeliveryAttempt:
    """One call made to Quivo for a delivery, as stored."""

    number: int
    action: AttemptAction
    started_at: datetime
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None


@dataclass(frozen=True)
class WebhookSource:
    """The webhook a delivery came from, without its body."""

    id: int
    received_at: datetime
    request_id: str
    status: WebhookStatus


@dataclass(frozen=True)
class DeliveryRecord(DeliverySummary):
    """Every field of a delivery, its normalized rating parsed."""

    webhook_id: int
    version: str
    unconfirmed: bool
    last_status: int | None
    current_rating: float | None
    delivered_at: datetime | None
    replayed_at: datetime | None
    rating: dict[str, Any]


@dataclass(frozen=True)
class DeliveryDetail:
    """A delivery in full, its calls to Quivo (oldest first), and the webhook it came from."""

    delivery: DeliveryRecord
    attempts: list[DeliveryAttempt]
    webhook: WebhookSource | None


@dataclass(frozen=True)
class WebhookSummary:
    """One line of the webhook listing; `bytes` is the size of the raw body."""

    id: int
    tenant: str
    received_at: datetime
    request_id: str
    status: WebhookStatus
    webhook_type: str | None
    merchant_id: int | None
    rating_id: int | None
    errors: list[str]
    bytes: int
    # When an operator dismissed it, and why (None unless its status is `dismissed`).
    dismissed_at: datetime | None
    dismissed_reason: str | None


@dataclass(frozen=True)
class WebhookDetail(WebhookSummary):
    """A stored webhook with its raw body and the deliveries it created."""

    content_type: str | None
    body: bytes
    delivery_ids: list[int]


@dataclass(frozen=True)
class StateChange:
    """What asking to move one delivery found: its state then (None: no such delivery), and why it stayed."""

    before: DeliveryState | None
    refusal: str | None = None

    @property
    def moved(self) -> bool:
        return self.before is not None and self.refusal is None


@dataclass(frozen=True)
class SkippedReplay:
    """A delivery a bulk replay matched but left as it was, and why."""

    delivery_id: int
    reason: str


@dataclass(frozen=True)
class ReplayBatch:
    """What replaying one batch of listed deliveries did: those replayed, and those left with why."""

    replayed: list[int]
    skipped: list[SkippedReplay]


@dataclass(frozen=True)
class BulkReplay:
    """What a bulk replay did: how many deliveries went back to pending, and each one it left, with why."""

    replayed: int
    skipped: list[SkippedReplay]


@dataclass(frozen=True)
class Recent:
    """How many deliveries reached a state in the last hour and in the last day."""

    last_hour: int
    last_day: int


# Still to go: owed to Quivo, or waiting for a link.
UNFINISHED_STATES: tuple[DeliveryState, ...] = (*WAITING_STATES, "unmatched")


@dataclass(frozen=True)
class Stats:
    """The relay at a glance; every state and status is present, 0 when none."""

    deliveries: dict[str, int]
    webhooks: dict[str, int]
    backlog_age_s: float | None
    worker_lag_s: float | None
    delivered: Recent
    dead: Recent
    # Deliveries by state for each tenant that has any, every state present.
    tenants: dict[str, dict[str, int]]

    def waiting_unconfigured(self, running: Collection[str]) -> list[str]:
        """Tenants not among `running` with deliveries still to go (a removed tenant's wait), by name."""
        return sorted(
            name
            for name, counts in self.tenants.items()
            if name not in running and any(counts[state] for state in UNFINISHED_STATES)
        )


@dataclass(frozen=True)
class LinkUpsert:
    """What saving a set of links did: how many were saved, and which unmatched deliveries they woke."""

    saved: int
    woken: list[int]


@dataclass(frozen=True)
class PruneResult:
    """How many rows of each kind a prune deleted."""

    deliveries: int
    attempts: int
    webhooks: int

    def __add__(self, other: "PruneResult") -> "PruneResult":
        return PruneResult(
            self.deliveries + other.deliveries,
            self.attempts + other.attempts,
            self.webhooks + other.webhooks,
        )


# Moving house -------------------------------------------------------------------------------------

# Every table `relay db copy` carries, parents first; each row is a dict of column name to Python value
# (int, str, bytes, bool, float, aware datetime or None), the same names and meanings on every backend.
COPIED_TABLES: tuple[str, ...] = (
    "webhooks",
    "deliveries",
    "attempts",
    "links",
    "inquiry_holds",
    "account_state",
    "meta",
)
Row = dict[str, Any]
