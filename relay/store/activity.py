"""The relay's work minute by minute: what the console's chart draws, the same on every backend."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class MinuteActivity:
    """One minute (from `minute`, UTC): webhooks received in it (any status), deliveries delivered in it."""

    minute: datetime
    webhooks: int
    delivered: int


def minute_of(moment: datetime) -> datetime:
    """The start of the UTC minute holding `moment`."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def minute_series(
    since: datetime, now: datetime, webhooks: Mapping[datetime, int], delivered: Mapping[datetime, int]
) -> list[MinuteActivity]:
    """Every minute from the one holding `since` to the one holding `now`, oldest first (0 where none)."""
    series = []
    minute, last = minute_of(since), minute_of(now)
    while minute <= last:
        series.append(MinuteActivity(minute, webhooks.get(minute, 0), delivered.get(minute, 0)))
        minute += MINUTE
    return series
