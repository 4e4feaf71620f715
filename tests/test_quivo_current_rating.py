"""A delivered send's current rating is read from Quivo's answer as the pydantic model read it before."""

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from relay.quivo.client import QuivoAnswer
from relay.quivo.redact import Redactor


class ReadBefore(BaseModel):
    """RatedInquiry as it was until it became a TypedDict (commit 1c9cb2d)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    current_rating: float | None = None


def read_before(body: bytes) -> float | None:
    try:
        return ReadBefore.model_validate_json(body).current_rating
    except ValidationError:
        return None


values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.sampled_from(["4.5", "5", "nan", "inf", "1e3", " 4 ", "", "x", "4,5", "0x10"]),
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
keys = st.sampled_from(
    ["currentRating", "current_rating", "CurrentRating", "currentrating", "messages", "id"]
)
members = st.lists(st.tuples(keys, values), max_size=5)


def spelled(members: list[tuple[str, object]]) -> bytes:
    """An object with these members in order, a key repeated as often as drawn (json.dumps would keep one)."""
    return (
        "{" + ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in members) + "}"
    ).encode()


bodies = st.one_of(
    members.map(spelled),
    st.tuples(members.map(spelled), st.integers(min_value=0, max_value=40)).map(lambda cut: cut[0][: cut[1]]),
    values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=20),
    st.sampled_from([b'{"currentRating": NaN}', b'{"currentRating": Infinity}', b'{"currentRating": 1e999}']),
)


@settings(max_examples=500)
@given(body=bodies, status=st.sampled_from([200, 201, 299, 300, 404, 500]))
@example(body=b'{"current_rating": 3}', status=200)
@example(body=b'{"current_rating": 3, "currentRating": "x"}', status=200)
@example(body=b'{"currentRating": 2, "current_rating": "x"}', status=200)
@example(body=b'{"currentRating": 1, "currentRating": 5}', status=200)
@example(body=b'{"currentRating": "4.5", "messages": [{"currentRating": 3}]}', status=201)
@example(body=b'{"currentRating": true}', status=200)
def test_the_current_rating_is_read_as_the_model_read_it(body: bytes, status: int) -> None:
    answer = QuivoAnswer(status=status, retry_after=None, body=body, redactor=Redactor(()))

    expected = read_before(body) if 200 <= status < 300 else None
    # repr: NaN is not equal to itself, and a float's spelling is what the log line and the store get.
    assert repr(answer.current_rating) == repr(expected)
