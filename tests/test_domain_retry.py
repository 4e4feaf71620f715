"""What a Quivo answer means, and how long a delivery waits before its next try."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.domain.retry import (
    Verdict,
    backoff_delay,
    leaves_send_unsure,
    parse_retry_after,
    retry_delay,
    verdict_for_status,
)

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (201, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (299, Verdict.DELIVERED),
        (401, Verdict.REAUTH),
        (408, Verdict.RETRY),
        (425, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (599, Verdict.RETRY),
        (400, Verdict.DEAD),
        (403, Verdict.DEAD),
        (404, Verdict.DEAD),
        (409, Verdict.DEAD),
        (422, Verdict.DEAD),
        (499, Verdict.DEAD),
        (100, Verdict.RETRY),
        (301, Verdict.RETRY),
        (304, Verdict.RETRY),
        (600, Verdict.RETRY),
    ],
)
def test_verdict_for_status(status: int, verdict: Verdict) -> None:
    assert verdict_for_status(status) is verdict


def test_verdicts_read_as_words() -> None:
    assert [str(verdict) for verdict in Verdict] == ["delivered", "retry", "dead", "reauth"]


class Ceiling(random.Random):
    """A random source that always draws the top of the range, to see the ceiling itself."""

    def random(self) -> float:
        return 1.0


def test_backoff_ceiling_doubles_until_the_cap() -> None:
    ceilings = [backoff_delay(attempt, base=2.0, cap=600.0, rng=Ceiling()) for attempt in range(1, 11)]
    assert ceilings == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 600.0]


def test_backoff_is_jittered_from_zero() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(5, base=2.0, cap=600.0, rng=rng) for _ in range(200)]
    assert min(delays) < 4.0 < 28.0 < max(delays)


@pytest.mark.parametrize("attempt", [1100, 10**6, 10**30])
def test_backoff_survives_huge_attempts(attempt: int) -> None:
    assert backoff_delay(attempt, base=2.0, cap=600.0, rng=Ceiling()) == 600.0


def test_backoff_refuses_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(0, base=2.0, cap=600.0, rng=random.Random(0))


@given(
    attempt=st.integers(min_value=1, max_value=10**40),
    base=st.floats(min_value=1e-3, max_value=1e3),
    cap=st.floats(min_value=1e-3, max_value=1e6),
    seed=st.integers(),
)
def test_backoff_stays_within_zero_and_the_ceiling(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    # Python's own exact integer arithmetic gives the ceiling to compare with, for any attempt size.
    ceiling = cap if attempt > 64 else min(cap, base * 2 ** (attempt - 1))
    assert 0.0 <= delay <= ceiling


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("99999", 600.0),
        ("9" * 500, 600.0),
        ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0),
        ("Wed, 21 Oct 2015 07:28:30 -0000", 30.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),
        ("Thu, 22 Oct 2015 07:28:00 GMT", 600.0),
    ],
)
def test_retry_after_is_read_and_clamped(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now=NOW, cap=600.0) == seconds


@pytest.mark.parametrize(
    "header", [None, "", "  ", "-5", "soon", "1e3", "NaN", "inf", "Wed, 32 Oct 2015 07:28:00 GMT", "1.", ".5"]
)
def test_unreadable_retry_after_is_none(header: str | None) -> None:
    assert parse_retry_after(header, now=NOW, cap=600.0) is None


@given(header=st.text(), cap=st.floats(min_value=0.0, max_value=1e6))
def test_retry_after_never_fails_and_stays_within_cap(header: str, cap: float) -> None:
    seconds = parse_retry_after(header, now=NOW, cap=cap)
    assert seconds is None or 0.0 <= seconds <= cap


@given(
    moment=st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
    )
)
def test_retry_after_dates_count_from_now(moment: datetime) -> None:
    header = moment.strftime("%a, %d %b %Y %H:%M:%S GMT")
    expected = (moment.replace(microsecond=0) - NOW).total_seconds()
    assert parse_retry_after(header, now=NOW, cap=1e12) == max(0.0, expected)


def test_retry_delay_follows_retry_after_when_readable() -> None:
    delay = retry_delay(3, retry_after="45", now=NOW, base=2.0, cap=600.0, rng=Ceiling())
    assert delay == 45.0


def test_retry_delay_caps_retry_after() -> None:
    later = (NOW + timedelta(hours=2)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_delay(1, retry_after=later, now=NOW, base=2.0, cap=600.0, rng=Ceiling()) == 600.0


@pytest.mark.parametrize("header", [None, "whenever"])
def test_retry_delay_falls_back_to_backoff(header: str | None) -> None:
    delay = retry_delay(3, retry_after=header, now=NOW, base=2.0, cap=600.0, rng=Ceiling())
    assert delay == 8.0


@pytest.mark.parametrize(
    ("status", "unsure"), [(504, True), (200, False), (429, False), (500, False), (503, False)]
)
def test_only_a_gateway_timeout_leaves_a_send_unsure(status: int, unsure: bool):
    # A gateway that stopped waiting says nothing of whether Quivo, still at work, committed the rating.
    assert leaves_send_unsure(status) is unsure
