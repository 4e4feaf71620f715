"""What an inbound webhook's raw bytes turned out to be, before anything is stored."""

from dataclasses import dataclass
from typing import Literal

from relay.domain.rating import Rating


@dataclass(frozen=True)
class Judgement:
    """A usable rating, another webhook type, or unusable with reasons."""

    status: Literal["accepted", "ignored", "quarantined"]
    webhook_type: str | None = None
    merchant_id: int | None = None
    rating_id: int | None = None
    errors: tuple[str, ...] = ()
    rating: Rating | None = None
