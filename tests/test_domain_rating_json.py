"""A rating's stored JSON: exactly model_dump_json's text, read back as model_validate_json reads it."""

from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, TzInfo

from relay.domain.rating import Rating
from relay.domain.rating_json import rating_json, read_rating

# Whatever a comment, reason or title can hold, and every character JSON escapes or a careless encoder might.
ESCAPED = st.sampled_from('"\\/\n\r\t\b\f\x00\x01\x1f\x7f\x80\u00e9\u2028\u2029\ufeff\U0001f600<>&')
TEXT = st.text(st.one_of(st.characters(codec="utf-8"), ESCAPED), max_size=40)
# The zones a rating's instants carry: none (an old row, or a naive value), UTC (a naive one made UTC),
# pydantic's own (a parsed offset, `Z` included), any whole-minute offset, and one with seconds.
ZONES = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-1439, 1439).map(lambda minutes: TzInfo(minutes * 60)),
    st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes))),
    st.integers(-86399, 86399).map(lambda seconds: timezone(timedelta(seconds=seconds))),
)
INSTANTS = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999))
MOMENTS = st.one_of(
    st.none(),
    st.builds(
        lambda moment, whole, zone: (moment.replace(microsecond=0) if whole else moment).replace(tzinfo=zone),
        INSTANTS,
        st.booleans(),
        ZONES,
    ),
)
IDS = st.one_of(st.integers(0, 2**63 - 1), st.integers(-(2**70), 2**70))


def maybe(values: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(st.none(), values)


RATINGS = st.builds(
    Rating,
    merchant_id=IDS,
    rating_id=IDS,
    stars=st.integers(1, 5),
    comment=maybe(TEXT),
    reasons=st.lists(TEXT, max_size=4).map(tuple),
    task_id=maybe(IDS),
    external_id=maybe(TEXT),
    task_title=maybe(TEXT),
    task_status=maybe(st.integers(-5, 2**40)),
    created_at=MOMENTS,
    updated_at=MOMENTS,
)


def zones(rating: Rating) -> list[tuple[type[tzinfo | None], timedelta | None]]:
    """Each instant's zone class and offset: equal ratings can still differ here (equality is by instant)."""
    return [
        (type(None), None) if moment is None else (type(moment.tzinfo), moment.utcoffset())
        for moment in (rating.created_at, rating.updated_at)
    ]


@settings(max_examples=400)
@given(RATINGS)
def test_the_stored_text_is_model_dump_jsons_byte_for_byte(rating: Rating) -> None:
    assert rating_json(rating) == rating.model_dump_json()


@settings(max_examples=400)
@given(RATINGS)
def test_a_stored_text_reads_back_as_model_validate_json_reads_it(rating: Rating) -> None:
    text = rating.model_dump_json()
    read, expected = read_rating(text), Rating.model_validate_json(text)
    assert read == expected
    assert zones(read) == zones(expected)
    assert read.model_fields_set == expected.model_fields_set


def test_a_row_stored_by_earlier_relays_reads_back_the_same() -> None:
    # A delivery row's text as the relay has always written it (bench/loadgen's rating, then its update).
    stored = (
        '{"merchant_id":7,"rating_id":12345,"stars":1,"comment":"Quick and friendly","reasons":["On time"],'
        '"task_id":12345,"external_id":"INQ-12345","task_title":"Groceries","task_status":4,'
        '"created_at":"2026-11-20T10:00:00Z","updated_at":"2026-11-21T08:30:00.250000+01:00"}'
    )
    rating = read_rating(stored)
    assert rating == Rating(
        merchant_id=7,
        rating_id=12345,
        stars=1,
        comment="Quick and friendly",
        reasons=("On time",),
        task_id=12345,
        external_id="INQ-12345",
        task_title="Groceries",
        task_status=4,
        created_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
        updated_at=datetime(2026, 11, 21, 8, 30, 0, 250000, tzinfo=timezone(timedelta(hours=1))),
    )
    assert zones(rating) == [(TzInfo, timedelta(0)), (TzInfo, timedelta(hours=1))]
    assert rating_json(rating) == stored


# A valid stored text, then spoiled in each way below.
GOOD = Rating(
    merchant_id=1, rating_id=2, stars=3, created_at=datetime(2026, 1, 2, tzinfo=UTC)
).model_dump_json()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "null",
        "[]",
        "{}",
        GOOD[:-1],
        GOOD[: len(GOOD) // 2],
        GOOD.replace('"stars":3', '"stars":0'),
        GOOD.replace('"stars":3', '"stars":6'),
        GOOD.replace('"stars":3', '"stars":"many"'),
        GOOD.replace('"merchant_id":1', '"merchant_id":1.5'),
        GOOD.replace('"merchant_id":1,', ""),
        GOOD.replace('"reasons":[]', '"reasons":"On time"'),
        GOOD.replace('"reasons":[]', '"reasons":[1]'),
        GOOD.replace("2026-01-02T00:00:00Z", "yesterday"),
        GOOD.replace("2026-01-02T00:00:00Z", "2026-02-30T00:00:00Z"),
        GOOD.replace('"comment":null', '"comment":"\\ud800"'),
        "{'merchant_id': 1, 'rating_id': 2, 'stars': 3}",
        '{"id": 1, "rating": 3, "webhook_type": "rating_submitted"}',
    ],
)
def test_a_corrupt_or_foreign_text_fails_as_model_validate_json_fails(text: str) -> None:
    with pytest.raises(ValidationError) as expected:
        Rating.model_validate_json(text)
    with pytest.raises(ValidationError) as read:
        read_rating(text)
    assert read.value.errors() == expected.value.errors()


def test_a_rating_json_cannot_hold_is_refused_as_model_dump_json_refuses_it() -> None:
    # No webhook yields one (a lone surrogate is invalid JSON), but a rating built in code could.
    rating = Rating(merchant_id=1, rating_id=2, stars=3, comment="\ud800")
    with pytest.raises(PydanticSerializationError):
        rating.model_dump_json()
    with pytest.raises(PydanticSerializationError):
        rating_json(rating)
