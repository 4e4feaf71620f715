"""Instants as SQLite keeps them: fixed-width ISO-8601 UTC text, so they sort as text in time order."""

from datetime import UTC, datetime, timedelta


def to_text(moment: datetime) -> str:
    """`2026-12-01T18:45:09.123456Z`: the form every existing database file holds."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # Spelled field by field with %: under half the cost of isoformat or an f-string's format specs, and
    # every write spells two or three of these.
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
    )


def from_text(text: str) -> datetime:
    """The aware UTC datetime of a stored instant."""
    return datetime.fromisoformat(text).astimezone(UTC)


def from_text_or_none(text: str | None) -> datetime | None:
    """The aware UTC datetime of a stored instant, None where none is stored."""
    return None if text is None else from_text(text)


def instant_plus(text: str, seconds: float) -> str:
    """SQL function `instant_plus(instant, seconds)`: a stored instant moved on, in the same form."""
    return to_text(from_text(text) + timedelta(seconds=seconds))
