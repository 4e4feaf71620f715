"""Instants as the relay's SQL functions take them: microseconds since the Unix epoch (see migration 0013)."""

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(instant: datetime) -> int:
    """`instant` (timezone-aware) in whole microseconds since 1970-01-01 UTC; SQL's relay_instant reads it."""
    # The driver's timestamptz encoding (two comparisons with infinity, a time zone conversion) costs
    # several times this subtraction and a bigint's.
    return (instant - _EPOCH) // _MICROSECOND
