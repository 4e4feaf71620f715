"""What the operator commands print: aligned tables and short durations for people, JSON for scripts."""

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, astuple, dataclass, fields
from datetime import datetime
from itertools import zip_longest
from typing import Any

from relay.domain.delivery import DELIVERY_STATES
from relay.domain.rating import format_instant
from relay.ops.answers import to_json
from relay.ops.health import WORKER_SILENT_AFTER_S
from relay.store.records import (
    UNFINISHED_STATES,
    DeliveryAttempt,
    DeliveryDetail,
    DeliverySummary,
    Recent,
    Stats,
    WorkerBeat,
)

# A listing stays one line a delivery; `relay deliveries show` has the whole error.
ERROR_WIDTH = 60
PROGRESS_WIDTH = 30
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


@dataclass(frozen=True)
class Status:
    """What `relay status` reports: the admin API's stats, the newest heartbeat and the live workers."""

    stats: Stats
    worker_heartbeat: datetime | None
    worker_paused: str | None
    workers: list[WorkerBeat]
    # The tenants of the running configuration (RELAY_TENANTS_FILE's, or the implicit one).
    running_tenants: frozenset[str]


def printable(text: str) -> str:
    """`text` with every character a terminal would act on or hide escaped as Python writes it: `\\x1b`.

    Order ids, errors and request ids come from Bringg and Quivo: raw, an `ESC ] 0 ; ... BEL` retitles
    the operator's terminal and `ESC [ 2 J` clears it. Line breaks are escaped too, so a value cannot
    forge a line of its own.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def as_json(value: object) -> str:
    """`value` as indented JSON, as the admin API answers with it."""
    return to_json(value, indent=2)


@contextmanager
def progress_line() -> Iterator[Callable[[str], None]]:
    """A line on stderr that each call rewrites, so long work shows it moves; ended when the work is."""
    shown = False

    def show(text: str) -> None:
        nonlocal shown
        shown = True
        print(f"\r{text}", end="", file=sys.stderr, flush=True)

    try:
        yield show
    finally:
        if shown:
            print(file=sys.stderr)


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A progress line per part of a long job, each a bar of `done` out of `total`: a new part, a new line."""
    with ExitStack() as lines:
        shown: dict[str, Callable[[str], None]] = {}

        def advance(label: str, done: int, total: int) -> None:
            if label not in shown:
                lines.close()  # ends the previous part's line
                shown[label] = lines.enter_context(progress_line())
            share = min(done / total, 1.0) if total else 1.0
            filled = round(share * PROGRESS_WIDTH)
            bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
            shown[label](f"{label:<14} [{bar}] {share:4.0%}  {done:,}/{total:,}")

        yield advance


def duration(seconds: float) -> str:
    """A span as its two largest units, in whole seconds: `45s`, `3m 20s`, `2h`, `1d 3h`."""
    left = max(int(seconds), 0)
    largest: str | None = None
    for unit, size in _UNITS:
        count, left = divmod(left, size)
        if largest is not None:
            return f"{largest} {count}{unit}" if count else largest
        if count:
            largest = f"{count}{unit}"
    return largest or "0s"


def relative(instant: datetime | None, now: datetime) -> str:
    """An instant as seen from `now`: `3m 20s ago`, `in 5s`, or `-` for none."""
    if instant is None:
        return "-"
    seconds = (now - instant).total_seconds()
    return f"{duration(seconds)} ago" if seconds >= 0 else f"in {duration(-seconds)}"


def table(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None) -> str:
    """Columns two spaces apart, numbers to the right; None shows as `-`, an empty string as blank."""
    lines = [list(header)] if header else []
    lines += [[_cell(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip_longest(*lines, fillvalue="")]
    numeric = [
        all(isinstance(row[index], int) for row in rows if index < len(row) and row[index] not in ("", None))
        for index in range(len(widths))
    ]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(line, widths, numeric, strict=False)
        ).rstrip()
        for line in lines
    )


def _cell(value: object) -> str:
    if value is None:
        return "-"
    # Instants as the JSON answers write them, so a time read here can be pasted into --since.
    return printable(format_instant(value) if isinstance(value, datetime) else str(value))


def status_text(status: Status, now: datetime) -> str:
    """The relay at a glance: counts side by side, then the backlog, recent outcomes and the worker."""
    stats = status.stats
    counts = zip_longest(stats.deliveries.items(), stats.webhooks.items(), fillvalue=("", ""))
    age, lag = stats.backlog_age_s, stats.worker_lag_s
    summary = [
        ("backlog", "none waiting" if age is None else f"oldest waiting {duration(age)} since accepted"),
        ("worker lag", "none due" if lag is None else f"{duration(lag)} behind the earliest due"),
        ("delivered", _recent(stats.delivered)),
        ("dead", _recent(stats.dead)),
        ("worker", _heartbeat(status.worker_heartbeat, now)),
        ("paused", status.worker_paused or "no"),
        ("live workers", len(status.workers)),
    ]
    for name in stats.waiting_unconfigured(status.running_tenants):
        waiting = sum(stats.tenants[name][state] for state in UNFINISHED_STATES)
        summary.append((f"tenant {name}", f"{waiting} waiting, tenant not configured"))
    header = ["DELIVERY STATE", "COUNT", "WEBHOOK STATUS", "COUNT"]
    side_by_side = table([[*delivery, *webhook] for delivery, webhook in counts], header)
    text = f"{side_by_side}\n\n{table(summary)}"
    if len(stats.tenants) > 1 or not stats.tenants.keys() <= status.running_tenants:
        text += "\n\n" + tenants_table(stats.tenants)
    if status.workers:
        text += "\n\n" + workers_table(status.workers, now)
    return text


def tenants_table(tenants: dict[str, dict[str, int]]) -> str:
    """One line a tenant, by name: its deliveries in each state."""
    rows = [[name, *(tenants[name][state] for state in DELIVERY_STATES)] for name in sorted(tenants)]
    return table(rows, ["TENANT", *(state.upper() for state in DELIVERY_STATES)])


def workers_table(workers: Sequence[WorkerBeat], now: datetime) -> str:
    """One line a live worker, oldest started first: where it runs, since when, its last beat, its pause."""
    return table(
        [
            [
                worker.worker_id,
                worker.host,
                worker.pid,
                relative(worker.started_at, now),
                relative(worker.beat_at, now),
                worker.paused_reason or "no",
            ]
            for worker in workers
        ],
        ["WORKER", "HOST", "PID", "STARTED", "LAST HEARTBEAT", "PAUSED"],
    )


def status_document(status: Status, now: datetime) -> dict[str, Any]:
    """The admin API's stats with the tenants not configured whose deliveries wait, a `worker` object
    (the newest heartbeat, its age, why that worker paused), and `workers`: every live worker, oldest
    started first."""
    heartbeat = status.worker_heartbeat
    return {
        **asdict(status.stats),
        "tenants_not_configured": status.stats.waiting_unconfigured(status.running_tenants),
        "worker": {
            "last_heartbeat": None if heartbeat is None else format_instant(heartbeat),
            "heartbeat_age_s": None if heartbeat is None else (now - heartbeat).total_seconds(),
            "paused": status.worker_paused,
        },
        "workers": [
            {
                "worker_id": worker.worker_id,
                "host": worker.host,
                "pid": worker.pid,
                "started_at": format_instant(worker.started_at),
                "last_heartbeat": format_instant(worker.beat_at),
                "heartbeat_age_s": (now - worker.beat_at).total_seconds(),
                "paused": worker.paused_reason,
            }
            for worker in status.workers
        ],
    }


def _recent(recent: Recent) -> str:
    return f"{recent.last_hour} in the last hour, {recent.last_day} in the last day"


def _heartbeat(heartbeat: datetime | None, now: datetime) -> str:
    if heartbeat is None:
        return "never ran on this database (start `relay worker` or `relay serve`)"
    seen = f"last heartbeat {relative(heartbeat, now)}"
    silent = (now - heartbeat).total_seconds() > WORKER_SILENT_AFTER_S
    return f"{seen}: silent, not running or stuck" if silent else seen


def deliveries_table(deliveries: Sequence[DeliverySummary], now: datetime) -> str:
    """One line a delivery, newest first as given; times as ages from `now`."""
    return table(
        [
            [
                delivery.id,
                delivery.tenant,
                delivery.state,
                delivery.merchant_id,
                delivery.rating_id,
                delivery.external_id,
                delivery.inquiry_id,
                delivery.stars,
                delivery.attempts,
                relative(delivery.created_at, now),
                relative(delivery.next_attempt_at, now),
                _shortened(delivery.last_error),
            ]
            for delivery in deliveries
        ],
        [
            "ID",
            "TENANT",
            "STATE",
            "MERCHANT",
            "RATING",
            "ORDER",
            "INQUIRY",
            "STARS",
            "ATTEMPTS",
            "CREATED",
            "NEXT ATTEMPT",
            "LAST ERROR",
        ],
    )


def _shortened(text: str | None) -> str | None:
    if text is None or len(text) <= ERROR_WIDTH:
        return text
    return text[: ERROR_WIDTH - 1] + "…"


def delivery_text(detail: DeliveryDetail) -> str:
    """Every field of a delivery, its calls to Quivo oldest first, and the webhook it came from."""
    record = asdict(detail.delivery)
    record["rating"] = json.dumps(record["rating"])
    calls = (
        table(
            [astuple(call) for call in detail.attempts],
            [field.name.upper() for field in fields(DeliveryAttempt)],
        )
        if detail.attempts
        else "no calls to Quivo yet"
    )
    webhook = detail.webhook
    source = (
        "webhook: pruned"
        if webhook is None
        else f"webhook {webhook.id}: {webhook.status}, received {format_instant(webhook.received_at)}, "
        f"request id {webhook.request_id}"
    )
    return "\n\n".join([table(list(record.items())), calls, printable(source)])
