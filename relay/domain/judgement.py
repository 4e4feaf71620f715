"""What an inbound webhook's raw bytes turned out to be, before anything is stored."""

from collections.abc import Sequence
from typing import Literal, NamedTuple

from relay.domain.rating import Rating

# The answer, the log line and the stored row repeat the reasons: a few tell an operator what is wrong,
# and a count says how much more there was (one 1 MB body held 86,000 copies of the same reason).
MAX_REPORTED_ERRORS = 5
MAX_ERROR_CHARS = 200
ELLIPSIS = "…"


class Judgement(NamedTuple):
    """A usable rating, another webhook type, or unusable with reasons (as `reported` keeps them)."""

    # A NamedTuple: as immutable as a frozen dataclass, and built (once a webhook) at under half its cost.
    status: Literal["accepted", "ignored", "quarantined"]
    webhook_type: str | None = None
    merchant_id: int | None = None
    rating_id: int | None = None
    errors: tuple[str, ...] = ()
    rating: Rating | None = None


def reported(errors: Sequence[str]) -> tuple[str, ...]:
    """The first MAX_REPORTED_ERRORS reasons, each cut to MAX_ERROR_CHARS, and a line counting the rest."""
    kept = tuple(_shorten(error) for error in errors[:MAX_REPORTED_ERRORS])
    rest = len(errors) - len(kept)
    return (*kept, f"... and {rest} more ({len(errors)} in all)") if rest else kept


def _shorten(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + ELLIPSIS
