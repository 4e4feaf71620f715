"""The store contract: every verb of the Store interface, on each backend, in the domain's terms."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from itertools import count, pairwise
from typing import Any

import pytest

from relay.domain.delivery import DELIVERY_STATES, DeliveryState
from relay.domain.judgement import Judgement
from relay.domain.rating import Rating
from relay.linkfile import Link
from relay.store import create_store
from relay.store.activity import MinuteActivity
from relay.store.api import DatabaseUnusable, Store
from relay.store.filters import CANCELLED, DeliveryFilter, WebhookFilter
from relay.store.records import (
    COPIED_TABLES,
    LEASE_LOST,
    AccountPause,
    AttemptRecord,
    Backlog,
    ClaimedDelivery,
    Finish,
    InboundWebhook,
    Outcome,
    PruneResult,
    Row,
    SkippedReplay,
    StateChange,
    StoredWebhook,
    TurnAsk,
    WorkerBeat,
)
from tests.pg_server import PostgresServer, ServerUnavailable

T0 = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)
SECOND = timedelta(seconds=1)
LEASE = timedelta(minutes=5)
LONG_AGO = T0 - timedelta(days=365)
_request_ids = count(1)

# Building records -----------------------------------------------------------------------------------


def rating(
    rating_id: int = 1,
    *,
    merchant_id: int = 7,
    external_id: str | None = "ORD-1",
    updated_at: datetime | None = None,
    created_at: datetime | None = None,
    stars: int = 4,
) -> Rating:
    return Rating(
        merchant_id=merchant_id,
        rating_id=rating_id,
        stars=stars,
        comment="quick and friendly",
        external_id=external_id,
        created_at=created_at,
        updated_at=updated_at,
    )


def inbound(
    judged: Rating | Judgement, *, at: datetime = T0, body: bytes | None = None, tenant: str = "default"
) -> InboundWebhook:
    judgement = (
        judged
        if isinstance(judged, Judgement)
        else Judgement(
            "accepted",
            webhook_type="rating_submitted",
            merchant_id=judged.merchant_id,
            rating_id=judged.rating_id,
            rating=judged,
        )
    )
    raw = (
        body
        if body is not None
        else (judged.model_dump_json().encode() if isinstance(judged, Rating) else b"{}")
    )
    return InboundWebhook(
        request_id=f"req-{next(_request_ids)}",
        received_at=at,
        body=raw,
        content_type="application/json",
        judgement=judgement,
        tenant=tenant,
    )


async def record(store: Store, judged: Rating | Judgement, *, at: datetime = T0) -> StoredWebhook:
    return await store.record_webhook(inbound(judged, at=at), recheck_before=LONG_AGO)


async def accept(store: Store, *, at: datetime = T0, **fields: Any) -> int:
    """A new pending delivery, due `at`; its id."""
    stored = await record(store, rating(**fields), at=at)
    assert stored.status == "accepted" and stored.delivery_id is not None, stored
    return stored.delivery_id


async def claim(
    store: Store, now: datetime, limit: int = 100, *, tenant: str = "default"
) -> dict[int, ClaimedDelivery]:
    return {
        claimed.id: claimed
        for claimed in await store.claim_due(tenant, now=now, lease_until=now + LEASE, limit=limit)
    }


async def settle(
    store: Store, delivery_id: int, state: DeliveryState, *, now: datetime, **fields: Any
) -> str:
    """Claim the delivery at `now` and record that it went to `state` then.

    Any other delivery the claim took goes back to wait as it was (its lease given up), so a test can
    bring one delivery to a state while others stay pending.
    """
    claimed = await claim(store, now)
    assert delivery_id in claimed, f"delivery {delivery_id} was not due at {now}"
    for other in claimed.values():
        if other.id != delivery_id:
            back = Outcome(
                other.id, "pending", other.attempts, other.unconfirmed, next_attempt_at=other.age_from
            )
            await store.record_outcome(back, leased_until=now + LEASE, now=now)
    outcome = Outcome(delivery_id, state, attempts=fields.pop("attempts", 1), unconfirmed=False, **fields)
    return await store.record_outcome(outcome, leased_until=now + LEASE, now=now)


async def state_of(store: Store, delivery_id: int) -> str:
    detail = await store.get_delivery(delivery_id)
    assert detail is not None
    return detail.delivery.state


def send(at: datetime, status: int | None, outcome: str = "sent") -> AttemptRecord:
    return AttemptRecord("send", started_at=at, duration_ms=12, status_code=status, outcome=outcome)


# Life -------------------------------------------------------------------------------------------------


def test_the_url_names_the_backend_and_its_location_keeps_no_password() -> None:
    sqlite = create_store("sqlite:///var/relay.db", timeout_s=1, pool_size=1)
    postgresql = create_store("postgresql://relay:s3cret@db.internal:5433/relay", timeout_s=1, pool_size=1)
    short = create_store("postgres://relay:s3cret@db.internal/relay", timeout_s=1, pool_size=1)

    assert (sqlite.backend, sqlite.location, sqlite.single_worker) == ("sqlite", "var/relay.db", True)
    assert (postgresql.backend, postgresql.single_worker) == ("postgresql", False)
    assert short.backend == "postgresql"
    assert "s3cret" not in postgresql.location + short.location
    assert "db.internal" in postgresql.location


async def test_open_store_is_migrated_and_ready(store: Store, store_url: str) -> None:
    assert store.backend == store_url.partition(":")[0]
    assert await store.migrate() == []
    assert await store.schema_version() >= 1
    assert await store.readiness_problems() == []


async def test_worker_slot_admits_as_many_workers_as_the_backend_allows(
    store: Store, second_store: Store
) -> None:
    with store.worker_slot():
        if store.single_worker:
            with pytest.raises(DatabaseUnusable), second_store.worker_slot():
                pass
        else:
            with second_store.worker_slot():
                pass


# Intake -----------------------------------------------------------------------------------------------


async def test_intake_accepts_a_rating_once_and_keeps_its_bytes(store: Store) -> None:
    body = b'{"rating": "raw \xc3\xa9 bytes kept as sent"}'
    first = await store.record_webhook(inbound(rating(), at=T0, body=body), recheck_before=LONG_AGO)
    again = await record(store, rating(), at=T0 + SECOND)

    assert first.status == "accepted" and first.delivery_id is not None and first.superseded == []
    assert (again.status, again.delivery_id) == ("duplicate", first.delivery_id)
    webhook = await store.get_webhook(first.webhook_id)
    assert webhook is not None
    assert (webhook.body, webhook.status, webhook.delivery_ids) == (body, "accepted", [first.delivery_id])
    assert (webhook.received_at, webhook.merchant_id, webhook.rating_id, webhook.bytes) == (
        T0,
        7,
        1,
        len(body),
    )
    duplicate = await store.get_webhook(again.webhook_id)
    assert duplicate is not None and (duplicate.status, duplicate.delivery_ids) == ("duplicate", [])
    detail = await store.get_delivery(first.delivery_id)
    assert detail is not None
    delivery = detail.delivery
    assert (delivery.state, delivery.next_attempt_at, delivery.created_at) == ("pending", T0, T0)
    assert (delivery.merchant_id, delivery.rating_id, delivery.external_id, delivery.stars) == (
        7,
        1,
        "ORD-1",
        4,
    )
    assert (delivery.unconfirmed, delivery.attempts, delivery.webhook_id) == (False, 0, first.webhook_id)
    assert delivery.rating["comment"] == "quick and friendly"
    assert detail.webhook is not None and detail.webhook.id == first.webhook_id


async def test_intake_keeps_ignored_and_quarantined_webhooks_without_a_delivery(store: Store) -> None:
    ignored = await record(store, Judgement("ignored", webhook_type="task_created", merchant_id=7))
    quarantined = await record(
        store, Judgement("quarantined", errors=("stars: missing", "rating_id: missing"))
    )

    assert (ignored.status, ignored.delivery_id) == ("ignored", None)
    assert (quarantined.status, quarantined.delivery_id) == ("quarantined", None)
    held = await store.get_webhook(quarantined.webhook_id)
    assert held is not None and held.errors == ["stars: missing", "rating_id: missing"]
    assert await store.deliveries_by_state() == dict.fromkeys(DELIVERY_STATES, 0)


async def test_a_newer_version_supersedes_a_waiting_older_one(store: Store) -> None:
    older = await accept(store, updated_at=T0)
    newer = await record(store, rating(updated_at=T0 + SECOND), at=T0 + SECOND)

    assert newer.status == "accepted" and newer.superseded == [older]
    assert await state_of(store, older) == "superseded"
    assert newer.delivery_id is not None and await state_of(store, newer.delivery_id) == "pending"


async def test_an_older_version_arriving_late_is_kept_but_superseded(store: Store) -> None:
    newer = await accept(store, updated_at=T0 + SECOND)
    late = await record(store, rating(updated_at=None), at=T0 + 2 * SECOND)

    assert late.status == "superseded" and late.delivery_id is not None
    assert await state_of(store, late.delivery_id) == "superseded"
    assert await state_of(store, newer) == "pending"
    webhook = await store.get_webhook(late.webhook_id)
    assert webhook is not None and webhook.status == "accepted"


async def test_a_rating_created_before_recheck_before_starts_unconfirmed(store: Store) -> None:
    old = rating(1, created_at=T0 - timedelta(days=40))
    fresh = rating(2, created_at=T0 - timedelta(minutes=1))
    for each in (old, fresh):
        await store.record_webhook(inbound(each), recheck_before=T0 - timedelta(days=30))

    claimed = await claim(store, T0)

    assert {c.rating_id: c.unconfirmed for c in claimed.values()} == {1: True, 2: False}


async def test_reprocess_judges_a_quarantined_webhook_again_in_place(store: Store) -> None:
    held = await record(store, Judgement("quarantined", errors=("stars: missing",)), at=T0)
    later = T0 + timedelta(hours=1)
    judgement = Judgement("accepted", "rating_submitted", 7, 1, rating=rating())

    stored = await store.reprocess_webhook(held.webhook_id, judgement, now=later, recheck_before=LONG_AGO)

    assert stored is not None and (stored.webhook_id, stored.status) == (held.webhook_id, "accepted")
    assert stored.delivery_id is not None
    webhook = await store.get_webhook(held.webhook_id)
    assert webhook is not None
    assert (webhook.status, webhook.errors, webhook.delivery_ids) == ("accepted", [], [stored.delivery_id])
    detail = await store.get_delivery(stored.delivery_id)
    assert detail is not None and (detail.delivery.webhook_id, detail.delivery.created_at) == (
        held.webhook_id,
        later,
    )
    assert (
        await store.reprocess_webhook(held.webhook_id, judgement, now=later, recheck_before=LONG_AGO) is None
    )
    assert await store.reprocess_webhook(10**9, judgement, now=later, recheck_before=LONG_AGO) is None
    again = await store.list_webhooks(WebhookFilter())
    assert [w.id for w in again] == [held.webhook_id]


async def test_dismiss_closes_a_quarantined_webhook_which_stays_kept_and_reads_as_dismissed(
    store: Store,
) -> None:
    held = await record(store, Judgement("quarantined", errors=("stars: missing",)), at=T0)
    accepted = await record(store, rating(1), at=T0)
    later = T0 + timedelta(hours=1)

    before = await store.dismiss_webhook(held.webhook_id, "test order, never a real rating", now=later)
    again = await store.dismiss_webhook(held.webhook_id, "a second reason", now=later + SECOND)

    assert (before, again) == ("quarantined", "dismissed")
    webhook = await store.get_webhook(held.webhook_id)
    assert webhook is not None
    assert (webhook.status, webhook.errors, webhook.body) == ("dismissed", ["stars: missing"], b"{}")
    assert (webhook.dismissed_at, webhook.dismissed_reason) == (later, "test order, never a real rating")
    assert await store.dismiss_webhook(accepted.webhook_id, "no", now=later) == "accepted"
    kept = await store.get_webhook(accepted.webhook_id)
    assert kept is not None and (kept.status, kept.dismissed_at, kept.dismissed_reason) == (
        "accepted",
        None,
        None,
    )
    assert await store.dismiss_webhook(10**9, "no", now=later) is None


async def test_a_dismissed_webhook_is_not_reprocessed(store: Store) -> None:
    held = await record(store, Judgement("quarantined", errors=("stars: missing",)), at=T0)
    await store.dismiss_webhook(held.webhook_id, "spam", now=T0)
    judgement = Judgement("accepted", "rating_submitted", 7, 1, rating=rating())

    stored = await store.reprocess_webhook(held.webhook_id, judgement, now=T0, recheck_before=LONG_AGO)

    assert stored is None
    webhook = await store.get_webhook(held.webhook_id)
    assert webhook is not None and (webhook.status, webhook.delivery_ids) == ("dismissed", [])
    assert await store.list_deliveries(DeliveryFilter()) == []


async def test_dismissed_webhooks_are_listed_when_asked_and_not_counted_as_quarantined(store: Store) -> None:
    waiting = (await record(store, Judgement("quarantined", errors=("x",)), at=T0)).webhook_id
    dismissed = (await record(store, Judgement("quarantined", errors=("y",)), at=T0 + SECOND)).webhook_id
    accepted = (await record(store, rating(1), at=T0 + 2 * SECOND)).webhook_id
    await store.dismiss_webhook(dismissed, "duplicate of a rating Bringg sent again", now=T0 + 3 * SECOND)

    def ids(found: list[Any]) -> list[int]:
        return [webhook.id for webhook in found]

    quarantined = await store.list_webhooks(WebhookFilter(status=("quarantined",)))
    only_dismissed = await store.list_webhooks(WebhookFilter(status=("dismissed",)))
    both = await store.list_webhooks(WebhookFilter(status=("quarantined", "dismissed")))
    dismissed_or_accepted = await store.list_webhooks(WebhookFilter(status=("dismissed", "accepted")))
    everything = await store.list_webhooks(WebhookFilter())
    stats = await store.stats(now=T0 + 4 * SECOND)

    assert ids(quarantined) == [waiting]
    assert ids(only_dismissed) == [dismissed]
    assert only_dismissed[0].dismissed_reason == "duplicate of a rating Bringg sent again"
    assert ids(both) == [dismissed, waiting]
    assert ids(dismissed_or_accepted) == [accepted, dismissed]
    assert [(w.id, w.status) for w in everything] == [
        (accepted, "accepted"),
        (dismissed, "dismissed"),
        (waiting, "quarantined"),
    ]
    assert stats.webhooks == {"accepted": 1, "duplicate": 0, "ignored": 0, "quarantined": 1, "dismissed": 1}


async def test_a_webhook_and_its_delivery_are_stored_under_the_tenant_it_came_in_for(store: Store) -> None:
    acme = await store.record_webhook(inbound(rating(1), tenant="acme"), recheck_before=LONG_AGO)
    held = await store.record_webhook(
        inbound(
            Judgement("quarantined", errors=("merchant 7 is not one of tenant acme's merchants",)),
            tenant="acme",
        ),
        recheck_before=LONG_AGO,
    )
    implicit = await record(store, rating(2))
    assert acme.delivery_id is not None and implicit.delivery_id is not None

    webhooks = {w.id: w.tenant for w in await store.list_webhooks(WebhookFilter())}
    assert webhooks == {acme.webhook_id: "acme", held.webhook_id: "acme", implicit.webhook_id: "default"}
    deliveries = {d.id: d.tenant for d in await store.list_deliveries(DeliveryFilter())}
    assert deliveries == {acme.delivery_id: "acme", implicit.delivery_id: "default"}
    webhook = await store.get_webhook(acme.webhook_id)
    detail = await store.get_delivery(acme.delivery_id)
    assert webhook is not None and webhook.tenant == "acme"
    assert detail is not None and detail.delivery.tenant == "acme"
    claimed = {**await claim(store, T0), **await claim(store, T0, tenant="acme")}
    assert {c.id: c.tenant for c in claimed.values()} == deliveries


async def accept_for(store: Store, tenant: str, rating_id: int, external_id: str = "ORD-1") -> int:
    """A new pending delivery of the tenant's, due T0; its id."""
    judged = rating(rating_id, external_id=external_id)
    stored = await store.record_webhook(inbound(judged, tenant=tenant), recheck_before=LONG_AGO)
    assert stored.delivery_id is not None
    return stored.delivery_id


async def test_each_tenant_claims_only_its_own_deliveries(store: Store) -> None:
    acme = await accept_for(store, "acme", 1)
    implicit = await accept_for(store, "default", 2)

    assert list(await claim(store, T0, tenant="acme")) == [acme]
    assert list(await claim(store, T0, tenant="gone")) == []
    assert list(await claim(store, T0)) == [implicit]


async def test_two_tenants_inquiries_of_one_id_are_two_inquiries_each_held_on_its_own(store: Store) -> None:
    acme = await accept_for(store, "acme", 1)
    implicit = await accept_for(store, "default", 2)
    await claim(store, T0, tenant="acme")
    await claim(store, T0)

    turns = [
        await store.take_turn(delivery, 42, leased_until=T0 + LEASE, now=T0, until=T0 + LEASE)
        for delivery in (acme, implicit)
    ]

    assert turns == ["go", "go"]


async def test_the_sweep_expires_each_tenants_unmatched_by_its_own_instant_and_no_others(
    store: Store,
) -> None:
    deliveries = {
        tenant: await accept_for(store, tenant, n, external_id=f"ORD-{n}")
        for n, tenant in enumerate(("acme", "default", "gone"), start=1)
    }
    for tenant in deliveries:
        [claimed] = await claim(store, T0, tenant=tenant)
        unmatched = Outcome(claimed, "unmatched", 0, False)
        assert await store.record_outcome(unmatched, leased_until=T0 + LEASE, now=T0) == "unmatched"

    sweep = await store.sweep_unmatched(
        now=T0 + timedelta(days=2),
        expire_before={"acme": T0 + SECOND, "default": T0 - SECOND},  # "gone" is no tenant now
    )

    assert [(dead.id, dead.tenant) for dead in sweep.expired] == [(deliveries["acme"], "acme")]
    states = {tenant: await state_of(store, delivery) for tenant, delivery in deliveries.items()}
    assert states == {"acme": "dead", "default": "unmatched", "gone": "unmatched"}


async def test_reprocess_keeps_the_tenant_a_quarantined_webhook_came_in_for(store: Store) -> None:
    held = await store.record_webhook(
        inbound(Judgement("quarantined", errors=("stars: missing",)), tenant="acme"), recheck_before=LONG_AGO
    )
    judgement = Judgement("accepted", "rating_submitted", 7, 1, rating=rating())

    stored = await store.reprocess_webhook(held.webhook_id, judgement, now=T0, recheck_before=LONG_AGO)

    assert stored is not None and stored.delivery_id is not None
    webhook = await store.get_webhook(held.webhook_id)
    detail = await store.get_delivery(stored.delivery_id)
    assert webhook is not None and webhook.tenant == "acme"
    assert detail is not None and detail.delivery.tenant == "acme"


# The worker -------------------------------------------------------------------------------------------


async def test_claim_due_leases_the_oldest_due_first_up_to_the_limit(store: Store) -> None:
    third = await accept(store, rating_id=1, at=T0 + 2 * SECOND)
    first = await accept(store, rating_id=2, at=T0)
    second = await accept(store, rating_id=3, at=T0 + SECOND)
    not_yet = await accept(store, rating_id=4, at=T0 + timedelta(hours=1))

    before_due = await store.claim_due("default", now=T0 - SECOND, lease_until=T0 + LEASE, limit=10)
    batch = await store.claim_due("default", now=T0 + 10 * SECOND, lease_until=T0 + LEASE, limit=2)
    rest = await store.claim_due("default", now=T0 + 10 * SECOND, lease_until=T0 + LEASE, limit=10)

    assert before_due == []
    assert [c.id for c in batch] == [first, second]
    assert [c.id for c in rest] == [third]
    assert not_yet not in {c.id for c in batch + rest}
    claimed = batch[0]
    assert (claimed.merchant_id, claimed.rating_id, claimed.attempts, claimed.unconfirmed) == (7, 2, 0, False)
    assert (claimed.inquiry_id, claimed.age_from) == (None, T0)
    assert Rating.model_validate_json(claimed.rating_json) == rating(2)
    assert await state_of(store, first) == "sending"


async def test_a_lease_that_ran_out_comes_back_unconfirmed(store: Store) -> None:
    delivery = await accept(store)
    await store.claim_due("default", now=T0, lease_until=T0 + LEASE, limit=1)

    during = await claim(store, T0 + LEASE - SECOND)
    after = await claim(store, T0 + LEASE + SECOND)

    assert during == {}
    assert list(after) == [delivery] and after[delivery].unconfirmed is True


async def test_a_newer_version_waits_while_an_older_one_sends(store: Store) -> None:
    older = await accept(store, updated_at=T0)
    assert list(await claim(store, T0)) == [older]
    newer = await record(store, rating(updated_at=T0 + SECOND), at=T0 + SECOND)
    assert newer.superseded == []  # the older one is in flight: it finishes first

    while_older_sends = await claim(store, T0 + 2 * SECOND)
    await store.record_outcome(
        Outcome(older, "delivered", attempts=1, unconfirmed=False),
        leased_until=T0 + LEASE,
        now=T0 + 3 * SECOND,
    )
    once_it_is_done = await claim(store, T0 + 4 * SECOND)

    assert while_older_sends == {}
    assert list(once_it_is_done) == [newer.delivery_id]


async def test_claim_fills_in_the_inquiry_from_the_links(store: Store) -> None:
    linked = await accept(store, rating_id=1, external_id="ORD-1")
    unlinked = await accept(store, rating_id=2, external_id="ORD-2")
    await store.save_links([Link(7, "ORD-1", 101)], now=T0)

    claimed = await claim(store, T0)

    assert (claimed[linked].inquiry_id, claimed[unlinked].inquiry_id) == (101, None)


async def test_take_turn_admits_one_delivery_per_inquiry_at_a_time(store: Store) -> None:
    first = await accept(store, rating_id=1)
    second = await accept(store, rating_id=2)
    await claim(store, T0)

    async def turn(delivery: int, inquiry: int, leased: timedelta, now: timedelta, until: timedelta) -> str:
        return await store.take_turn(
            delivery, inquiry, leased_until=T0 + leased, now=T0 + now, until=T0 + until
        )

    taken = await turn(first, 101, LEASE, 0 * SECOND, 10 * SECOND)
    refused = await turn(second, 101, LEASE, SECOND, 11 * SECOND)  # its lease is renewed all the same
    other_inquiry = await turn(second, 102, 11 * SECOND, SECOND, 11 * SECOND)
    extended = await turn(first, 101, 10 * SECOND, 9 * SECOND, 20 * SECOND)
    still_refused = await turn(second, 101, 11 * SECOND, 15 * SECOND, 25 * SECOND)
    taken_over = await turn(second, 101, 25 * SECOND, 21 * SECOND, 30 * SECOND)

    assert (taken, refused, other_inquiry, extended, still_refused, taken_over) == (
        "go",
        "busy",
        "go",
        "go",
        "busy",
        "go",
    )


async def test_take_turns_answers_each_delivery_in_order_in_one_call(store: Store) -> None:
    first = await accept(store, rating_id=1)
    second = await accept(store, rating_id=2)
    third = await accept(store, rating_id=3)
    await claim(store, T0)
    until = T0 + 2 * LEASE

    turns = await store.take_turns(
        [
            TurnAsk(first, 101, T0 + LEASE),
            TurnAsk(second, 101, T0 + LEASE),  # after the first in the same call: it holds 101 now
            TurnAsk(third, 103, T0 + SECOND),  # not the lease it holds
        ],
        now=T0,
        until=until,
    )

    assert turns == ["go", "busy", "lost"]
    leases = [(await store.get_delivery(each)) for each in (first, second, third)]
    assert [detail.delivery.next_attempt_at for detail in leases if detail] == [until, until, T0 + LEASE]


async def test_a_turn_asked_until_the_lease_it_holds_keeps_that_lease_and_takes_the_inquiry(
    store: Store,
) -> None:
    first = await accept(store, rating_id=1)
    second = await accept(store, rating_id=2)
    await claim(store, T0)
    lease = T0 + LEASE

    turns = await store.take_turns(
        [TurnAsk(first, 101, lease), TurnAsk(second, 101, lease), TurnAsk(second, 102, T0)],
        now=T0 + SECOND,
        until=lease,
    )

    assert turns == ["go", "busy", "lost"]
    leases = [await store.get_delivery(each) for each in (first, second)]
    assert [detail.delivery.next_attempt_at for detail in leases if detail] == [lease, lease]
    # The inquiry is held until that lease ends: another delivery's turn takes it only then.
    assert await store.take_turn(second, 101, leased_until=lease, now=lease - SECOND, until=lease) == "busy"
    assert await store.take_turn(second, 101, leased_until=lease, now=lease, until=lease) == "go"


async def test_a_lease_claimed_again_after_it_ran_out_is_lost_to_its_first_holder(store: Store) -> None:
    delivery = await accept(store)
    other = await accept(store, rating_id=2, at=T0 + LEASE + 2 * SECOND)
    await claim(store, T0)
    first_lease, second_lease = T0 + LEASE, T0 + 2 * LEASE + SECOND
    assert list(await claim(store, T0 + LEASE + SECOND)) == [delivery]

    turn = await store.take_turn(
        delivery, 101, leased_until=first_lease, now=T0 + LEASE + 2 * SECOND, until=T0 + 3 * LEASE
    )
    late = Outcome(delivery, "delivered", 1, False, inquiry_id=101)
    recorded = await store.record_outcome(late, leased_until=first_lease, now=T0 + LEASE + 2 * SECOND)

    assert (turn, recorded) == ("lost", LEASE_LOST)
    detail = await store.get_delivery(delivery)
    assert detail is not None
    assert (detail.delivery.state, detail.delivery.next_attempt_at, detail.attempts) == (
        "sending",
        second_lease,
        [],
    )
    # The lost turn took no hold: the inquiry is free for another delivery.
    assert list(await claim(store, T0 + LEASE + 2 * SECOND)) == [other]
    other_lease = T0 + 2 * LEASE + 2 * SECOND
    assert (
        await store.take_turn(
            other, 101, leased_until=other_lease, now=T0 + LEASE + 3 * SECOND, until=T0 + 3 * LEASE
        )
        == "go"
    )
    # The delivery's new holder records its outcome.
    assert await store.record_outcome(late, leased_until=second_lease, now=T0 + 2 * LEASE) == "delivered"


async def test_recording_an_outcome_releases_the_inquiry(store: Store) -> None:
    first = await accept(store, rating_id=1)
    second = await accept(store, rating_id=2)
    await claim(store, T0)
    lease = T0 + LEASE
    assert await store.take_turn(first, 101, leased_until=lease, now=T0, until=lease) == "go"
    assert await store.take_turn(second, 101, leased_until=lease, now=T0, until=lease) == "busy"

    delivered = Outcome(first, "delivered", 1, False, inquiry_id=101)
    await store.record_outcome(delivered, leased_until=lease, now=T0 + SECOND)

    assert await store.take_turn(second, 101, leased_until=lease, now=T0 + 2 * SECOND, until=lease) == "go"


async def test_record_outcome_stores_the_calls_and_where_the_delivery_went(store: Store) -> None:
    delivery = await accept(store)
    done_at = T0 + 3 * SECOND
    calls = [
        AttemptRecord("reconcile", T0 + SECOND, 20, 200, "not found"),
        AttemptRecord("send", T0 + 2 * SECOND, 35, 201, "sent"),
    ]

    state = await settle(
        store,
        delivery,
        "delivered",
        now=done_at,
        inquiry_id=101,
        last_status=201,
        current_rating=4.0,
        calls=calls,
    )

    assert state == "delivered"
    detail = await store.get_delivery(delivery)
    assert detail is not None
    record_ = detail.delivery
    assert (record_.state, record_.attempts, record_.inquiry_id, record_.last_status) == (
        "delivered",
        1,
        101,
        201,
    )
    assert (record_.delivered_at, record_.updated_at, record_.next_attempt_at) == (done_at, done_at, None)
    assert record_.current_rating == 4.0
    assert [(a.action, a.started_at, a.duration_ms, a.status_code, a.outcome) for a in detail.attempts] == [
        ("reconcile", T0 + SECOND, 20, 200, "not found"),
        ("send", T0 + 2 * SECOND, 35, 201, "sent"),
    ]
    assert {a.number for a in detail.attempts} == {1}


async def test_record_outcomes_answers_each_delivery_in_order_in_one_call(store: Store) -> None:
    delivered = await accept(store, rating_id=1)
    lost = await accept(store, rating_id=2)
    older = await accept(store, rating_id=3, updated_at=T0)
    await claim(store, T0)
    assert await store.take_turn(delivered, 101, leased_until=T0 + LEASE, now=T0, until=T0 + LEASE) == "go"
    await record(store, rating(3, updated_at=T0 + SECOND), at=T0 + SECOND)
    send = AttemptRecord("send", T0 + SECOND, 35, 201, "sent")
    done_at = T0 + 2 * SECOND

    states = await store.record_outcomes(
        [
            Finish(Outcome(delivered, "delivered", 1, False, inquiry_id=101, calls=[send]), T0 + LEASE),
            Finish(Outcome(lost, "delivered", 1, False, inquiry_id=102), T0 + SECOND),  # not its lease
            Finish(Outcome(older, "retrying", 1, False, next_attempt_at=T0 + LEASE), T0 + LEASE),
        ],
        now=done_at,
    )

    assert states == ["delivered", LEASE_LOST, "superseded"]
    detail = await store.get_delivery(delivered)
    assert detail is not None
    assert (detail.delivery.state, detail.delivery.delivered_at) == ("delivered", done_at)
    assert [(a.action, a.status_code, a.number) for a in detail.attempts] == [("send", 201, 1)]
    assert [await state_of(store, each) for each in (lost, older)] == ["sending", "superseded"]
    # Its inquiry is free again: another delivery may take it.
    other = await accept(store, rating_id=4, at=done_at)
    await claim(store, done_at)
    until = done_at + LEASE
    assert await store.take_turn(other, 101, leased_until=until, now=done_at, until=until) == "go"


async def test_an_outcome_going_back_to_wait_is_superseded_by_a_newer_version(store: Store) -> None:
    older = await accept(store, updated_at=T0)
    await claim(store, T0)
    await record(store, rating(updated_at=T0 + SECOND), at=T0 + SECOND)

    state = await store.record_outcome(
        Outcome(older, "retrying", 1, False, next_attempt_at=T0 + timedelta(minutes=1)),
        leased_until=T0 + LEASE,
        now=T0 + 2 * SECOND,
    )

    assert state == "superseded"
    assert await state_of(store, older) == "superseded"


async def test_an_outcome_of_unmatched_is_pending_when_a_link_was_saved_meanwhile(store: Store) -> None:
    delivery = await accept(store)
    await claim(store, T0)
    await store.save_links([Link(7, "ORD-1", 101)], now=T0 + SECOND)

    state = await store.record_outcome(
        Outcome(delivery, "unmatched", 1, False), leased_until=T0 + LEASE, now=T0 + 2 * SECOND
    )

    assert state == "pending"
    assert list(await claim(store, T0 + 3 * SECOND)) == [delivery]


async def test_sweep_wakes_linked_unmatched_deliveries_and_expires_old_ones(store: Store) -> None:
    await store.save_links([Link(7, "ORD-1", 101)], now=T0)
    link_rows = [row async for batch in store.export_rows("links", batch_size=10) for row in batch]
    await store.delete_link(7, "ORD-1")
    linked = await accept(store, rating_id=1, external_id="ORD-1", at=T0 + timedelta(days=2))
    old = await accept(store, rating_id=2, external_id="ORD-2", at=T0)
    recent = await accept(store, rating_id=3, external_id="ORD-3", at=T0 + timedelta(days=2))
    for delivery in (linked, old, recent):
        assert await settle(store, delivery, "unmatched", now=T0 + timedelta(days=2)) == "unmatched"
    # The link appears without waking anyone, as when another process saved it.
    await store.import_rows("links", link_rows)
    now = T0 + timedelta(days=3)

    sweep = await store.sweep_unmatched(now=now, expire_before={"default": T0 + timedelta(days=1)})

    assert sweep.woken == [linked]
    assert [(e.id, e.merchant_id, e.rating_id, e.attempts) for e in sweep.expired] == [(old, 7, 2, 1)]
    assert (await state_of(store, linked), await state_of(store, old)) == ("pending", "dead")
    assert await state_of(store, recent) == "unmatched"
    assert list(await claim(store, now)) == [linked]


async def test_retry_unmatched_makes_every_unmatched_delivery_due(store: Store) -> None:
    waiting = [await accept(store, rating_id=n, external_id=f"ORD-{n}") for n in (1, 2)]
    for delivery in waiting:
        await settle(store, delivery, "unmatched", now=T0)
    dead = await accept(store, rating_id=3)
    await settle(store, dead, "dead", now=T0)

    assert await store.retry_unmatched(now=T0 + SECOND) == 2
    assert sorted(await claim(store, T0 + SECOND)) == waiting


async def test_deliveries_held_only_by_a_quivo_outage_are_due_once_it_is_over(store: Store) -> None:
    await store.save_links([Link(7, f"ORD-{n}", 100 + n) for n in range(1, 5)], now=T0)
    later = T0 + timedelta(minutes=10)
    soon = T0 + timedelta(minutes=1)
    outage = await accept(store, rating_id=1, external_id="ORD-1")
    unreachable = await accept(store, rating_id=2, external_id="ORD-2")
    throttled = await accept(store, rating_id=3, external_id="ORD-3")
    unsure = await accept(store, rating_id=4, external_id="ORD-4")
    await claim(store, T0)
    for delivery, inquiry, due, status, unconfirmed in (
        (outage, 101, later, 503, False),
        (unreachable, 102, soon, None, False),
        (throttled, 103, T0 + timedelta(seconds=30), 429, False),
        (unsure, 104, T0 + timedelta(seconds=20), 504, True),
    ):
        await store.record_outcome(
            Outcome(
                delivery,
                "retrying",
                1,
                unconfirmed,
                next_attempt_at=due,
                inquiry_id=inquiry,
                calls=[send(T0, status, "failed")],
            ),
            leased_until=T0 + LEASE,
            now=T0,
        )

    # Another tenant's Quivo account has its own outage, or none: these are not its to probe or free.
    assert await store.inquiry_held_by_outage("acme", now=T0 + SECOND) is None
    assert await store.due_after_outage("acme", now=T0 + SECOND) == 0
    probe = await store.inquiry_held_by_outage("default", now=T0 + SECOND)
    made_due = await store.due_after_outage("default", now=T0 + 2 * SECOND)

    assert probe == 102
    assert made_due == 2
    assert sorted(await claim(store, T0 + 2 * SECOND)) == sorted([outage, unreachable])
    assert await store.inquiry_held_by_outage("default", now=T0 + 3 * SECOND) is None


async def test_new_work_wakes_a_worker_when_another_process_makes_a_delivery_due(
    store: Store, second_store: Store
) -> None:
    wakes = store.new_work()
    woken = asyncio.ensure_future(anext(wakes))
    deadline = asyncio.get_running_loop().time() + 15
    try:
        # The iterator subscribes when first awaited, at a moment the test cannot see: a wake for a
        # delivery made due before then may be missed (callers sweep for those), so each round makes one.
        for rating_id in count(1):
            await accept(second_store, rating_id=rating_id, at=datetime.now(UTC))
            done, _ = await asyncio.wait([woken], timeout=0.5)
            if done or asyncio.get_running_loop().time() > deadline:
                break
        assert woken.done(), "no wake within 15 s of deliveries made due by another store"
    finally:
        woken.cancel()
        if (aclose := getattr(wakes, "aclose", None)) is not None:
            await aclose()


OLD = T0 - timedelta(days=40)
CUTOFF = T0 - timedelta(days=30)
EDITED = T0 - timedelta(days=45)


async def finished(store: Store, rating_id: int, state: DeliveryState, at: datetime, calls: int = 0) -> int:
    """A delivery of an edited rating, accepted and brought to `state` at `at` with `calls` calls."""
    delivery = await accept(store, rating_id=rating_id, at=at, updated_at=EDITED)
    again = at + timedelta(days=1) if state == "retrying" else None
    await settle(store, delivery, state, now=at, next_attempt_at=again, calls=[send(at, 201)] * calls)
    return delivery


async def everything(store: Store) -> tuple[set[int], set[int]]:
    """The ids of every delivery and every webhook the store holds."""
    deliveries = {d.id for d in await store.list_deliveries(DeliveryFilter(), limit=1000)}
    webhooks = {w.id for w in await store.list_webhooks(WebhookFilter(), limit=1000)}
    return deliveries, webhooks


async def prune_all(store: Store, batch_size: int = 100) -> PruneResult:
    total = nothing = PruneResult(0, 0, 0)
    while (batch := await store.prune_batch(older_than=CUTOFF, batch_size=batch_size)) != nothing:
        assert batch.deliveries <= batch_size
        total += batch
    return total


async def test_prune_takes_old_finished_deliveries_with_their_calls_and_webhooks(store: Store) -> None:
    delivered = await finished(store, 1, "delivered", OLD, calls=2)
    late_original = await record(store, rating(1), at=OLD)  # arrives after its edit: superseded at once
    assert late_original.status == "superseded"
    recent = await finished(store, 2, "delivered", T0, calls=1)
    _, webhooks_before = await everything(store)

    result = await prune_all(store, batch_size=1)

    assert result == PruneResult(deliveries=2, attempts=2, webhooks=2)
    deliveries, webhooks = await everything(store)
    assert delivered not in deliveries and deliveries == {recent}
    assert len(webhooks) == 1 and webhooks < webhooks_before
    detail = await store.get_delivery(recent)
    assert detail is not None and len(detail.attempts) == 1


async def test_prune_takes_old_duplicate_and_ignored_webhooks_and_keeps_recent_ones(store: Store) -> None:
    await finished(store, 1, "delivered", T0)
    old_duplicate = await record(store, rating(1, updated_at=EDITED), at=OLD)
    old_ignored = await record(store, Judgement("ignored", webhook_type="task_created"), at=OLD)
    recent_duplicate = await record(store, rating(1, updated_at=EDITED), at=T0)
    recent_ignored = await record(store, Judgement("ignored", webhook_type="task_created"), at=T0)
    assert old_duplicate.status == "duplicate"

    result = await prune_all(store)

    assert result == PruneResult(deliveries=0, attempts=0, webhooks=2)
    _, webhooks = await everything(store)
    assert {old_duplicate.webhook_id, old_ignored.webhook_id} & webhooks == set()
    assert {recent_duplicate.webhook_id, recent_ignored.webhook_id} <= webhooks


async def test_prune_keeps_what_waits_for_an_operator_or_a_worker_however_old(store: Store) -> None:
    waiting: list[DeliveryState] = ["dead", "unmatched", "retrying"]
    kept = [await finished(store, n, state, OLD, calls=1) for n, state in enumerate(waiting, 1)]
    kept.append(await accept(store, rating_id=4, at=OLD))  # pending
    quarantined = await record(store, Judgement("quarantined", errors=("bad",)), at=OLD)
    before = await everything(store)

    result = await prune_all(store)

    assert result == PruneResult(0, 0, 0)
    assert await everything(store) == before
    assert before[0] == set(kept) and quarantined.webhook_id in before[1]


async def test_prune_takes_quarantined_webhooks_dismissed_before_the_cutoff(store: Store) -> None:
    held = Judgement("quarantined", errors=("bad",))
    long_dismissed = await record(store, held, at=OLD - timedelta(days=5))
    lately_dismissed = await record(store, held, at=OLD)
    waiting = await record(store, held, at=OLD)
    await store.dismiss_webhook(long_dismissed.webhook_id, "a sandbox test order", now=OLD)
    await store.dismiss_webhook(lately_dismissed.webhook_id, "a sandbox test order", now=T0)

    result = await prune_all(store)

    assert result == PruneResult(deliveries=0, attempts=0, webhooks=1)
    _, webhooks = await everything(store)
    assert long_dismissed.webhook_id not in webhooks
    assert {lately_dismissed.webhook_id, waiting.webhook_id} <= webhooks


async def test_prune_takes_workers_silent_since_before_the_cutoff_out_of_the_registry(store: Store) -> None:
    killed = WorkerBeat("w-killed", "host-a", 101, started_at=OLD, beat_at=OLD)
    recent = WorkerBeat("w-recent", "host-b", 202, started_at=OLD, beat_at=T0)
    for beat in (killed, recent):
        await store.beat(beat)

    await prune_all(store)

    assert [worker.worker_id for worker in await store.live_workers(since=OLD - SECOND)] == ["w-recent"]


# Relay-wide decisions ------------------------------------------------------------------------------


async def test_worker_registry_lists_the_live_workers_oldest_started_first(store: Store) -> None:
    late = WorkerBeat("w-late", "host-b", 202, started_at=T0, beat_at=T0 + SECOND)
    early = WorkerBeat("w-early", "host-a", 101, started_at=T0 - timedelta(hours=1), beat_at=T0)
    silent = WorkerBeat(
        "w-silent", "host-c", 303, started_at=T0 - timedelta(hours=2), beat_at=T0 - timedelta(hours=1)
    )
    for beat in (late, early, silent):
        await store.beat(beat)
    paused = WorkerBeat(
        "w-early", "host-a", 101, early.started_at, T0 + 2 * SECOND, "Quivo refused credentials"
    )
    await store.beat(paused)

    live = await store.live_workers(since=T0 - timedelta(minutes=1))
    await store.forget_worker("w-late")
    after_forget = await store.live_workers(since=T0 - timedelta(minutes=1))

    assert live == [paused, late]
    assert after_forget == [paused]
    assert await store.live_workers(since=LONG_AGO) == [silent, paused]


async def test_a_duty_has_one_holder_until_its_hold_runs_out(store: Store) -> None:
    taken = await store.take_duty("retention", "worker-a", now=T0, until=T0 + 60 * SECOND)
    refused = await store.take_duty("retention", "worker-b", now=T0 + SECOND, until=T0 + 61 * SECOND)
    other_duty = await store.take_duty("unmatched-sweep", "worker-b", now=T0 + SECOND, until=T0 + 61 * SECOND)
    extended = await store.take_duty("retention", "worker-a", now=T0 + 50 * SECOND, until=T0 + 120 * SECOND)
    still_refused = await store.take_duty(
        "retention", "worker-b", now=T0 + 90 * SECOND, until=T0 + 150 * SECOND
    )
    taken_over = await store.take_duty(
        "retention", "worker-b", now=T0 + 121 * SECOND, until=T0 + 180 * SECOND
    )

    assert (taken, refused, other_duty, extended, still_refused, taken_over) == (
        True,
        False,
        True,
        True,
        False,
        True,
    )


async def test_send_slots_are_spaced_across_every_caller(store: Store, second_store: Store) -> None:
    spacing = 0.25
    slots = await asyncio.gather(
        *(
            each.reserve_send_slot("quivo-a", now=T0, spacing_s=spacing)
            for _ in range(4)
            for each in (store, second_store)
        )
    )
    other_account = await store.reserve_send_slot("quivo-b", now=T0, spacing_s=spacing)

    ordered = sorted(slots)
    assert ordered[0] == T0
    gaps = [(b - a).total_seconds() for a, b in pairwise(ordered)]
    assert all(gap >= spacing - 1e-6 for gap in gaps), gaps
    assert other_account == T0


async def test_send_slots_reserved_together_are_the_next_ones_in_a_row(store: Store) -> None:
    first = await store.reserve_send_slot("quivo-a", now=T0, spacing_s=0.25, count=3)
    after_them = await store.reserve_send_slot("quivo-a", now=T0, spacing_s=0.25)

    assert (first, after_them) == (T0, T0 + timedelta(seconds=0.75))


async def test_an_account_pause_holds_until_it_runs_out_or_is_lifted(store: Store) -> None:
    timed = AccountPause("quivo-a", "429 Too Many Requests", until=T0 + 60 * SECOND)
    open_ended = AccountPause("quivo-b", "401 credentials refused", until=None)
    await store.pause_account(timed)
    await store.pause_account(open_ended)

    in_force = await store.account_pauses(now=T0)
    after_expiry = await store.account_pauses(now=T0 + 61 * SECOND)
    await store.lift_pause("quivo-b")
    after_lift = await store.account_pauses(now=T0)
    longer = AccountPause("quivo-a", "429 again", until=T0 + 120 * SECOND)
    await store.pause_account(longer)

    assert sorted(in_force, key=lambda p: p.account) == [timed, open_ended]
    assert after_expiry == [open_ended]
    assert after_lift == [timed]
    assert await store.account_pauses(now=T0 + 90 * SECOND) == [longer]


# Operators --------------------------------------------------------------------------------------------


async def test_listings_filter_and_page_newest_first(store: Store) -> None:
    await store.save_links([Link(7, "ORD-9", 909)], now=T0)
    ids = [
        await accept(
            store, rating_id=n, merchant_id=7 if n % 2 else 8, external_id=f"ORD-{n}", at=T0 + n * SECOND
        )
        for n in range(1, 10)
    ]
    await settle(store, ids[8], "delivered", now=T0 + 20 * SECOND, inquiry_id=909)
    at = T0 + 20 * SECOND

    def listing(**where: Any) -> Any:
        return DeliveryFilter.model_validate(where, context={"now": at})

    pages: list[list[int]] = []
    after: int | None = None
    while page := await store.list_deliveries(listing(), after=after, limit=4):
        pages.append([d.id for d in page])
        after = page[-1].id

    assert pages == [ids[8:4:-1], ids[4:0:-1], ids[0:1]]
    assert [d.id for d in await store.list_deliveries(listing(merchant_id=8))] == ids[7::-2]
    assert [d.id for d in await store.list_deliveries(listing(state="delivered"))] == [ids[8]]
    assert [d.id for d in await store.list_deliveries(listing(state="pending,delivered"), limit=2)] == ids[
        8:6:-1
    ]
    assert [d.id for d in await store.list_deliveries(listing(external_id="ORD-3"))] == [ids[2]]
    assert [d.id for d in await store.list_deliveries(listing(inquiry_id=909))] == [ids[8]]
    window = listing(since=(T0 + 3 * SECOND).isoformat(), until=(T0 + 5 * SECOND).isoformat())
    assert [d.id for d in await store.list_deliveries(window)] == [ids[3], ids[2]]
    summary = (await store.list_deliveries(listing(inquiry_id=909)))[0]
    assert (summary.state, summary.merchant_id, summary.external_id, summary.stars) == (
        "delivered",
        7,
        "ORD-9",
        4,
    )
    assert (summary.created_at, summary.updated_at, summary.attempts) == (T0 + 9 * SECOND, at, 1)


async def test_a_search_finds_deliveries_by_order_id_rating_id_or_inquiry_id(store: Store) -> None:
    by_rating = await accept(store, rating_id=4242, external_id="ORD-A")
    by_order = await accept(store, rating_id=2, merchant_id=8, external_id="4242")
    by_inquiry = await accept(store, rating_id=3, external_id="ORD-C", at=T0 + SECOND)
    text_order = await accept(store, rating_id=5, external_id="ORD-4242")
    await settle(store, by_inquiry, "delivered", now=T0 + SECOND, inquiry_id=4242)

    def found(**where: Any) -> Awaitable[list[Any]]:
        return store.list_deliveries(DeliveryFilter.model_validate(where))

    assert [d.id for d in await found(search=" 4242 ")] == [by_inquiry, by_order, by_rating]
    assert [d.id for d in await found(search="ORD-4242")] == [text_order]
    assert [d.id for d in await found(search="4242", state="delivered")] == [by_inquiry]
    assert [d.id for d in await found(search="4242", merchant_id=8)] == [by_order]
    assert [d.id for d in await found(rating_id=4242)] == [by_rating]
    assert [d.id for d in await found(rating_id=3, external_id="ORD-C")] == [by_inquiry]
    # Beyond an id's range, or not ASCII digits: an order id only, and one that no delivery has.
    for unmatched in ("99999999999999999999", "\u0664\u0662", "ORD\x00A"):
        assert await found(search=unmatched) == []


async def test_delivery_comments_are_the_ratings_comments_by_delivery_id(store: Store) -> None:
    worded = await accept(store, rating_id=1)
    silent = await record(store, rating(2).model_copy(update={"comment": None}))
    assert silent.delivery_id is not None

    comments = await store.delivery_comments([worded, silent.delivery_id, 999999])

    assert comments == {worded: "quick and friendly", silent.delivery_id: None}
    assert await store.delivery_comments([]) == {}


async def test_count_deliveries_counts_what_the_listing_lists(store: Store) -> None:
    ids = [await accept(store, rating_id=n, merchant_id=7 + n % 2, external_id=f"ORD-{n}") for n in range(6)]
    await settle(store, ids[0], "dead", now=T0)
    await settle(store, ids[1], "dead", now=T0)
    filters = [
        DeliveryFilter(),
        DeliveryFilter(state=("dead",)),
        DeliveryFilter(state=("dead", "pending"), merchant_id=8),
        DeliveryFilter(search="ORD-3"),
        DeliveryFilter(search="4"),
        DeliveryFilter(tenant="acme"),
        DeliveryFilter(external_id="ORD\x00"),
    ]

    counts = [await store.count_deliveries(where) for where in filters]

    assert counts == [len(await store.list_deliveries(where, limit=100)) for where in filters]
    assert counts == [6, 2, 3, 1, 1, 0, 0]


async def test_webhook_listing_filters_by_status_and_time_and_pages(store: Store) -> None:
    accepted = [(await record(store, rating(n), at=T0 + n * SECOND)).webhook_id for n in range(1, 4)]
    quarantined = (
        await record(store, Judgement("quarantined", errors=("x",)), at=T0 + 4 * SECOND)
    ).webhook_id
    ignored = (
        await record(store, Judgement("ignored", webhook_type="task_done"), at=T0 + 5 * SECOND)
    ).webhook_id

    everything = [w.id for w in await store.list_webhooks(WebhookFilter())]
    first_page = await store.list_webhooks(WebhookFilter(), limit=2)
    second_page = await store.list_webhooks(WebhookFilter(), after=first_page[-1].id, limit=2)
    by_status = await store.list_webhooks(WebhookFilter(status=("quarantined", "ignored")))
    recent = await store.list_webhooks(WebhookFilter(since=T0 + 3 * SECOND))

    assert everything == [ignored, quarantined, *accepted[::-1]]
    assert [w.id for w in first_page + second_page] == everything[:4]
    assert [w.id for w in by_status] == [ignored, quarantined]
    assert [w.id for w in recent] == [ignored, quarantined, accepted[2]]
    assert by_status[1].errors == ["x"] and by_status[0].webhook_type == "task_done"


async def test_listings_refuse_a_limit_below_one(store: Store) -> None:
    listings: list[Callable[[], Awaitable[object]]] = [
        lambda: store.list_deliveries(DeliveryFilter(), limit=0),
        lambda: store.list_webhooks(WebhookFilter(), limit=0),
        lambda: store.list_links(limit=0),
    ]
    for listing in listings:
        with pytest.raises(ValueError, match="limit"):
            await listing()


async def test_get_delivery_and_get_webhook_of_unknown_ids_are_none(store: Store) -> None:
    assert await store.get_delivery(12345) is None
    assert await store.get_webhook(12345) is None


async def test_replay_sends_a_dead_delivery_back_unconfirmed_and_refuses_others(store: Store) -> None:
    dead = await accept(store, rating_id=1)
    await settle(
        store, dead, "dead", now=T0, attempts=5, inquiry_id=101, last_status=404, last_error="no inquiry"
    )
    delivered = await accept(store, rating_id=2)
    await settle(store, delivered, "delivered", now=T0)
    replay_at = T0 + timedelta(hours=1)

    replayed = await store.replay_delivery(dead, now=replay_at)
    refused = await store.replay_delivery(delivered, now=replay_at)
    unknown = await store.replay_delivery(10**9, now=replay_at)

    assert replayed == StateChange("dead")
    assert refused.before == "delivered" and refused.refusal and "only dead or unmatched" in refused.refusal
    assert unknown == StateChange(None)
    detail = await store.get_delivery(dead)
    assert detail is not None
    d = detail.delivery
    assert (d.state, d.attempts, d.unconfirmed, d.replayed_at, d.next_attempt_at) == (
        "pending",
        0,
        True,
        replay_at,
        replay_at,
    )
    assert d.inquiry_id is None  # Quivo said 404: the link is looked up again
    claimed = await claim(store, replay_at)
    assert claimed[dead].age_from == replay_at and claimed[dead].unconfirmed is True


async def test_replay_leaves_a_delivery_whose_rating_has_a_newer_version(store: Store) -> None:
    older = await accept(store, updated_at=T0)
    await claim(store, T0)
    newer = await record(store, rating(updated_at=T0 + SECOND), at=T0 + SECOND)
    assert (
        await store.record_outcome(Outcome(older, "dead", 1, False), leased_until=T0 + LEASE, now=T0 + SECOND)
        == "dead"
    )

    refused = await store.replay_delivery(older, now=T0 + 2 * SECOND)

    assert refused.before == "dead" and refused.refusal is not None
    assert f"delivery {newer.delivery_id} holds a newer version" in refused.refusal
    assert await state_of(store, older) == "dead"


async def test_replay_batch_replays_in_one_go_and_says_why_others_stayed(store: Store) -> None:
    dead = await accept(store, rating_id=1)
    await settle(store, dead, "dead", now=T0)
    unmatched = await accept(store, rating_id=2, external_id="ORD-2")
    await settle(store, unmatched, "unmatched", now=T0)
    delivered = await accept(store, rating_id=3)
    await settle(store, delivered, "delivered", now=T0)
    older = await accept(store, rating_id=4, updated_at=T0)
    await claim(store, T0)
    newer = await record(store, rating(4, updated_at=T0 + SECOND), at=T0 + SECOND)
    await store.record_outcome(Outcome(older, "dead", 1, False), leased_until=T0 + LEASE, now=T0 + SECOND)

    batch = await store.replay_batch([dead, unmatched, delivered, older], now=T0 + timedelta(hours=1))

    assert sorted(batch.replayed) == sorted([dead, unmatched])
    reasons = {skip.delivery_id: skip.reason for skip in batch.skipped}
    assert set(reasons) == {delivered, older}
    assert "only dead or unmatched" in reasons[delivered]
    assert f"delivery {newer.delivery_id} holds a newer version" in reasons[older]
    assert all(isinstance(skip, SkippedReplay) for skip in batch.skipped)
    assert (await state_of(store, dead), await state_of(store, unmatched)) == ("pending", "pending")


async def test_cancel_stops_a_waiting_delivery_but_not_one_in_flight_or_done(store: Store) -> None:
    waiting = await accept(store, rating_id=1, at=T0)
    sending = await accept(store, rating_id=2, at=T0)
    await claim(store, T0)
    later = await accept(store, rating_id=3, at=T0 + SECOND)
    delivered = await accept(store, rating_id=4, at=T0 + SECOND)
    await settle(store, delivered, "delivered", now=T0 + SECOND)
    assert waiting != sending  # both were claimed: put one back to wait
    await store.record_outcome(
        Outcome(waiting, "retrying", 1, False, next_attempt_at=T0 + LEASE), leased_until=T0 + LEASE, now=T0
    )

    cancelled = await store.cancel_delivery(waiting, now=T0 + 2 * SECOND)
    cancelled_pending = await store.cancel_delivery(later, now=T0 + 2 * SECOND)
    in_flight = await store.cancel_delivery(sending, now=T0 + 2 * SECOND)
    done = await store.cancel_delivery(delivered, now=T0 + 2 * SECOND)
    unknown = await store.cancel_delivery(10**9, now=T0 + 2 * SECOND)

    assert (cancelled, cancelled_pending) == (StateChange("retrying"), StateChange("pending"))
    assert in_flight.before == "sending" and in_flight.refusal is not None
    assert done.before == "delivered" and done.refusal is not None
    assert unknown == StateChange(None)
    detail = await store.get_delivery(waiting)
    assert detail is not None
    assert (detail.delivery.state, detail.delivery.last_error, detail.delivery.next_attempt_at) == (
        "dead",
        CANCELLED,
        None,
    )
    assert await state_of(store, sending) == "sending"


async def test_links_save_list_page_and_delete(store: Store) -> None:
    saved = await store.save_links(
        [Link(8, "B", 2), Link(7, "B", 3), Link(7, "A", 1), Link(8, "A", 4), Link(7, "B", 30)], now=T0
    )

    everything = await store.list_links()
    pages: list[list[Link]] = []
    after: tuple[int, str] | None = None
    while page := await store.list_links(after=after, limit=3):
        pages.append(page)
        after = (page[-1].merchant_id, page[-1].external_id)
    of_eight = await store.list_links(merchant_id=8)
    of_eight_past_a = await store.list_links(merchant_id=8, after=(8, "A"))
    deleted = await store.delete_link(7, "A")
    deleted_again = await store.delete_link(7, "A")

    assert saved.woken == []
    assert everything == [Link(7, "A", 1), Link(7, "B", 30), Link(8, "A", 4), Link(8, "B", 2)]
    assert [link for page in pages for link in page] == everything and len(pages) == 2
    assert of_eight == everything[2:] and of_eight_past_a == everything[3:]
    assert (deleted, deleted_again) == (True, False)
    assert await store.list_links(merchant_id=7) == [Link(7, "B", 30)]


async def test_links_are_found_by_their_order_id_at_one_merchant_or_at_every_one(store: Store) -> None:
    links = [Link(1, "ORD-1", 11), Link(1, "ORD-2", 12), Link(2, "ORD-1", 21), Link(3, "ORD-10", 31)]
    await store.save_links(links, now=T0)

    everywhere = await store.list_links(external_id="ORD-1")
    at_two = await store.list_links(merchant_id=2, external_id="ORD-1")
    past_the_first = await store.list_links(external_id="ORD-1", after=(1, "ORD-1"))
    nowhere = await store.list_links(external_id="ORD-\x00")

    assert everywhere == [Link(1, "ORD-1", 11), Link(2, "ORD-1", 21)]
    assert at_two == [Link(2, "ORD-1", 21)]
    assert past_the_first == [Link(2, "ORD-1", 21)]
    assert nowhere == []


async def test_a_link_saved_again_names_its_new_inquiry(store: Store) -> None:
    await store.save_links([Link(7, "ORD-1", 101), Link(7, "ORD-2", 102)], now=T0)

    await store.save_links([Link(7, "ORD-1", 555)], now=T0 + SECOND)

    assert await store.list_links() == [Link(7, "ORD-1", 555), Link(7, "ORD-2", 102)]


async def test_links_of_one_merchant_page_from_a_key_of_any_merchant(store: Store) -> None:
    links = [Link(merchant, f"ORD-{n:02}", merchant * 100 + n) for merchant in (9, 7, 8) for n in range(5)]
    await store.save_links(links, now=T0)

    first = await store.list_links(merchant_id=8, limit=3)
    second = await store.list_links(merchant_id=8, after=(8, first[-1].external_id), limit=3)
    from_earlier_merchant = await store.list_links(merchant_id=8, after=(7, "ORD-99"), limit=3)
    from_later_merchant = await store.list_links(merchant_id=8, after=(9, ""), limit=3)

    assert [link.external_id for link in first + second] == [f"ORD-{n:02}" for n in range(5)]
    assert {link.merchant_id for link in first + second} == {8}
    assert from_earlier_merchant == first
    assert from_later_merchant == []


async def test_many_links_in_one_call_wake_all_their_deliveries(store: Store) -> None:
    links = [Link(n % 3 + 1, f"ORD-{n}", n) for n in range(1, 20_001)]
    waiting = [
        await accept(store, rating_id=n, merchant_id=link.merchant_id, external_id=link.external_id)
        for n, link in enumerate(links[::1000], 1)
    ]
    unlinked = await accept(store, rating_id=999, merchant_id=1, external_id="ORD-20001")
    for delivery in [*waiting, unlinked]:
        await settle(store, delivery, "unmatched", now=T0)

    result = await store.save_links(links, now=T0 + SECOND)

    assert (result.saved, sorted(result.woken)) == (20_000, waiting)
    assert await state_of(store, unlinked) == "unmatched"


async def test_saving_links_wakes_only_the_unmatched_deliveries_of_their_orders(store: Store) -> None:
    waiting = await accept(store, rating_id=1, external_id="ORD-1")
    also_waiting = await accept(store, rating_id=2, external_id="ORD-1")
    other_order = await accept(store, rating_id=3, external_id="ORD-2")
    other_merchant = await accept(store, rating_id=4, merchant_id=8, external_id="ORD-1")
    dead = await accept(store, rating_id=5, external_id="ORD-1")
    for delivery in (waiting, also_waiting, other_order, other_merchant):
        await settle(store, delivery, "unmatched", now=T0)
    await settle(store, dead, "dead", now=T0)
    wake_at = T0 + timedelta(minutes=5)

    result = await store.save_links([Link(7, "ORD-1", 101)], now=wake_at)
    nothing = await store.save_links([], now=wake_at)

    assert (result.saved, sorted(result.woken)) == (1, sorted([waiting, also_waiting]))
    assert (nothing.saved, nothing.woken) == (0, [])
    states = [await state_of(store, d) for d in (waiting, also_waiting, other_order, other_merchant, dead)]
    assert states == ["pending", "pending", "unmatched", "unmatched", "dead"]
    claimed = await claim(store, wake_at)
    assert sorted(claimed) == sorted([waiting, also_waiting])
    assert {c.inquiry_id for c in claimed.values()} == {101}


async def test_deleting_a_link_leaves_matched_deliveries_their_inquiry(store: Store) -> None:
    await store.save_links([Link(7, "ORD-1", 101)], now=T0)
    delivery = await accept(store)
    await claim(store, T0)

    await store.delete_link(7, "ORD-1")

    detail = await store.get_delivery(delivery)
    assert detail is not None and detail.delivery.inquiry_id == 101


async def test_stats_and_backlog_count_every_state_and_the_oldest_wait(store: Store) -> None:
    now = T0 + timedelta(hours=2)
    oldest = await accept(store, rating_id=1, at=T0)
    await accept(store, rating_id=2, at=T0 + timedelta(hours=1))
    delivered_recently = await accept(store, rating_id=4, at=T0)
    await settle(store, delivered_recently, "delivered", now=now - timedelta(minutes=10))
    delivered_earlier = await accept(store, rating_id=5, at=T0)
    await settle(store, delivered_earlier, "delivered", now=now - timedelta(hours=1, minutes=30))
    dead = await accept(store, rating_id=6, at=T0)
    await settle(store, dead, "dead", now=now - timedelta(minutes=1))
    retrying = await accept(store, rating_id=3, at=T0 + 10 * SECOND)
    retry_due = T0 + timedelta(minutes=90)
    await settle(store, retrying, "retrying", now=T0 + 10 * SECOND, next_attempt_at=retry_due)
    await record(store, rating(1), at=T0 + SECOND)  # a duplicate
    await record(store, Judgement("quarantined", errors=("x",)), at=T0)

    by_state = await store.deliveries_by_state()
    backlog = await store.read_backlog(now=now)
    stats = await store.stats(now=now)

    assert by_state == {
        **dict.fromkeys(DELIVERY_STATES, 0),
        "pending": 2,
        "retrying": 1,
        "delivered": 2,
        "dead": 1,
    }
    assert backlog == Backlog(age_s=(now - T0).total_seconds(), worker_lag_s=(now - T0).total_seconds())
    assert oldest in {d.id for d in await store.list_deliveries(DeliveryFilter(state=("pending",)))}
    assert stats.deliveries == by_state
    assert stats.webhooks == {"accepted": 6, "duplicate": 1, "ignored": 0, "quarantined": 1, "dismissed": 0}
    assert (stats.backlog_age_s, stats.worker_lag_s) == (backlog.age_s, backlog.worker_lag_s)
    assert (stats.delivered.last_hour, stats.delivered.last_day) == (1, 2)
    assert (stats.dead.last_hour, stats.dead.last_day) == (1, 1)


async def test_activity_counts_webhooks_and_deliveries_minute_by_minute(store: Store) -> None:
    start = T0.replace(second=0, microsecond=0)  # 12:00
    first = await accept(store, rating_id=1, at=start + 5 * SECOND)
    await record(store, rating(1), at=start + 59 * SECOND)  # a duplicate counts as received too
    second = await accept(store, rating_id=2, at=start + timedelta(minutes=2))
    await record(store, Judgement("quarantined", errors=("x",)), at=start + timedelta(minutes=2, seconds=30))
    await accept(store, rating_id=3, at=start - SECOND)  # before the first minute asked
    await settle(store, first, "delivered", now=start + timedelta(minutes=2, seconds=59))
    await settle(store, second, "dead", now=start + timedelta(minutes=3))  # dead: not delivered

    minutes = await store.activity(since=start + 10 * SECOND, now=start + timedelta(minutes=3, seconds=1))

    assert [(m.minute, m.webhooks, m.delivered) for m in minutes] == [
        (start, 2, 0),
        (start + timedelta(minutes=1), 0, 0),
        (start + timedelta(minutes=2), 2, 1),
        (start + timedelta(minutes=3), 0, 0),
    ]
    assert await store.activity(since=LONG_AGO, now=LONG_AGO) == [
        MinuteActivity(LONG_AGO.replace(second=0, microsecond=0), 0, 0)
    ]


async def test_an_empty_store_has_no_backlog(store: Store) -> None:
    await record(store, Judgement("ignored", webhook_type="task_created"))

    assert await store.read_backlog(now=T0) == Backlog(age_s=None, worker_lag_s=None)


# Moving house -----------------------------------------------------------------------------------------


async def populate(store: Store) -> None:
    """Something in every copied table, instants with microseconds, bytes that are not text."""
    await store.save_links([Link(7, "ORD-1", 101), Link(8, "ORD-é", 202)], now=T0)
    delivered = await accept(store, rating_id=1, at=T0)
    await settle(store, delivered, "delivered", now=T0 + SECOND, inquiry_id=101, calls=[send(T0, 201)])
    waiting = await accept(store, rating_id=2, external_id="ORD-2", at=T0 + SECOND)
    await settle(
        store, waiting, "retrying", now=T0 + 2 * SECOND, next_attempt_at=T0 + LEASE, calls=[send(T0, None)]
    )
    await store.record_webhook(
        inbound(rating(3), at=T0, body=b"\x00\xff binary \xc3", tenant="acme"), recheck_before=LONG_AGO
    )
    await record(store, Judgement("quarantined", errors=("stars: missing",)), at=T0 + 3 * SECOND)
    await record(store, rating(1), at=T0 + 4 * SECOND)  # a duplicate
    sending = await accept(store, rating_id=4, at=T0 + 5 * SECOND)
    await claim(store, T0 + 5 * SECOND)
    leased = T0 + 5 * SECOND + LEASE
    await store.take_turn(sending, 101, leased_until=leased, now=T0 + 5 * SECOND, until=leased)
    await store.pause_account(AccountPause("quivo", "401 credentials refused", until=T0 + LEASE))
    await store.reserve_send_slot("quivo", now=T0, spacing_s=0.5)


async def all_rows(store: Store, table: str) -> list[Row]:
    return [row async for batch in store.export_rows(table, batch_size=2) for row in batch]


@pytest.mark.parametrize(
    ("source_backend", "target_backend"),
    [("sqlite", "postgresql"), ("postgresql", "sqlite")],
    ids=["sqlite-to-postgresql", "postgresql-to-sqlite"],
)
async def test_rows_copy_from_one_backend_into_the_other_exactly(
    opened_store: Callable[[str], Awaitable[Store]],
    database_url_for: Callable[[str], str],
    source_backend: str,
    target_backend: str,
) -> None:
    source = await opened_store(database_url_for(source_backend))
    target = await opened_store(database_url_for(target_backend))
    await populate(source)
    exported = {table: await all_rows(source, table) for table in COPIED_TABLES}
    empty = await target.row_counts()

    for table in COPIED_TABLES:
        if exported[table]:
            await target.import_rows(table, exported[table])

    assert set(empty) == set(COPIED_TABLES)
    assert all(exported[table] for table in ("webhooks", "deliveries", "attempts", "links", "inquiry_holds"))
    assert {row["tenant"] for table in ("webhooks", "deliveries") for row in exported[table]} == {
        "default",
        "acme",
    }
    assert await target.row_counts() == await source.row_counts()
    assert {table: await all_rows(target, table) for table in COPIED_TABLES} == exported
    later = await record(target, rating(99), at=T0 + timedelta(hours=1))
    assert later.webhook_id > max(row["id"] for row in exported["webhooks"])
    assert later.delivery_id is not None
    assert later.delivery_id > max(row["id"] for row in exported["deliveries"])
    copied = await target.get_delivery(exported["deliveries"][0]["id"])
    original = await source.get_delivery(exported["deliveries"][0]["id"])
    assert copied == original


# Many processes -----------------------------------------------------------------------------------------


async def test_two_stores_claiming_at_once_never_share_a_delivery(store: Store, second_store: Store) -> None:
    deliveries = {await accept(store, rating_id=n, at=T0) for n in range(1, 41)}

    async def drain(each: Store) -> list[int]:
        taken: list[int] = []
        while batch := await each.claim_due("default", now=T0, lease_until=T0 + LEASE, limit=3):
            taken += [claimed.id for claimed in batch]
        return taken

    first, second = await asyncio.gather(drain(store), drain(second_store))

    assert set(first).isdisjoint(second)
    assert sorted(first + second) == sorted(deliveries)


def test_the_postgresql_server_restarts_with_its_databases(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    postgres_server.sql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)", postgres_database)
    postgres_server.stop()
    try:
        with pytest.raises(ServerUnavailable):
            postgres_server.sql("SELECT 1", postgres_database)
    finally:
        postgres_server.start()
    assert postgres_server.sql("SELECT n FROM kept", postgres_database).strip() == "7"
