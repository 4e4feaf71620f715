"""The retry policy for Quivo sends: what an answer means, and how long to wait before the next try."""

import math
import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum


class Verdict(StrEnum):
    """What a Quivo answer means for the delivery that got it."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    REAUTH = "reauth"


def verdict_for_status(status: int) -> Verdict:
    """Sort a Quivo HTTP status into what the worker does next."""
    if 200 <= status <= 299:
        return Verdict.DELIVERED
    if status == 401:
        # Quivo's session tokens expire hourly: log in again, then resend.
        return Verdict.REAUTH
    if status in (408, 425, 429):
        # Request timeout, too early, too many requests: the same request can succeed later.
        return Verdict.RETRY
    if 400 <= status <= 499:
        # The request itself is refused (400, 403, 404, 422, ...): resending it unchanged cannot help.
        return Verdict.DEAD
    # 5xx is Quivo's trouble; 1xx, 3xx and anything stranger are unexpected, and retrying loses nothing.
    return Verdict.RETRY


def leaves_send_unsure(status: int) -> bool:
    """True when an answer to a send does not say whether Quivo committed it: read the inquiry first."""
    # 504 is a gateway that stopped waiting (at 29-30 s for the common ones) while Quivo may go on and commit.
    return status == 504


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after failed attempt `attempt` (from 1): uniform in 0..min(cap, base * 2**(attempt-1)).

    Full jitter spreads out the retries of many deliveries that failed together.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    try:
        ceiling = min(cap, math.ldexp(base, attempt - 1))
    except OverflowError:
        # Past a float's range the exponential has long since passed the cap.
        ceiling = cap
    return rng.uniform(0.0, ceiling)


_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(value: str | None, *, now: datetime, cap: float) -> float | None:
    """Seconds to wait that a Retry-After header asks for, clamped to 0..cap; None when absent or unreadable.

    The header holds a number of seconds (a decimal is tolerated) or an HTTP date, taken relative to `now`.
    """
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        # A date with a `-0000` zone comes back naive; HTTP dates are always UTC.
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - now).total_seconds()
    return max(0.0, min(cap, seconds))


def retry_delay(
    attempt: int,
    *,
    retry_after: str | None,
    now: datetime,
    base: float,
    cap: float,
    rng: random.Random,
) -> float:
    """Seconds to wait before the next try: what Retry-After asks (up to cap) when readable, else backoff."""
    asked = parse_retry_after(retry_after, now=now, cap=cap)
    return asked if asked is not None else backoff_delay(attempt, base=base, cap=cap, rng=rng)
