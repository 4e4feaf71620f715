"""The normalized rating: what the relay keeps of a Bringg rating, independent of the wire format."""

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

# An order's external id is short in real life (Bringg's examples: 8 digits). A longer one is refused at
# intake, and never given to the inquiry id pattern, whose cost grows with the text it searches.
MAX_EXTERNAL_ID_CHARS = 200
# The latest version wins, so an `updated_at` far ahead would outrank every genuine later one. A day covers
# any clock skew and a local time sent without its offset (at most 14 h ahead of UTC); beyond, not a version.
MAX_VERSION_AHEAD = timedelta(days=1)


def format_instant(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC text, so stored instants sort as text in time order."""
    # isoformat is several times faster than strftime, and this runs a few times per webhook.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class Rating(BaseModel):
    """One version of a consumer's rating of a Bringg order (task)."""

    model_config = ConfigDict(frozen=True)

    merchant_id: int
    rating_id: int
    stars: int = Field(ge=1, le=5)
    comment: str | None = None
    reasons: tuple[str, ...] = ()
    task_id: int | None = None
    external_id: str | None = None
    task_title: str | None = None
    task_status: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def version(self) -> str:
        """Orders versions of one rating: '' for the original, then each `updated_at` in time order."""
        return format_instant(self.updated_at) if self.updated_at else ""

    @property
    def reference_tag(self) -> str:
        """Ends the Quivo rating message; reconciliation looks for it, so it names the version."""
        if self.updated_at is None:
            return f"[bringg:{self.merchant_id}:{self.rating_id}]"
        at = self.updated_at.astimezone(UTC)
        # strftime("%Y%m%dT%H%M%S.%fZ") as glibc writes it (a year under 1000 unpadded), for a fraction of it.
        stamp = (
            f"{at.year}{at.month:02}{at.day:02}T{at.hour:02}{at.minute:02}{at.second:02}.{at.microsecond:06}Z"
        )
        return f"[bringg:{self.merchant_id}:{self.rating_id}:{stamp}]"
