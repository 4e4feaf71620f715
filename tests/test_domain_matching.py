"""Finding the Quivo inquiry id inside a Bringg order's external id."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.domain.ids import MAX_ID
from relay.domain.matching import (
    has_nested_repeat,
    inquiry_id_from_external_id,
    pattern_cost_problem,
)
from relay.domain.rating import MAX_EXTERNAL_ID_CHARS

DIGITS = re.compile(r"(\d+)")
NAMED = re.compile(r"(?P<shop>[A-Z]+)-(?P<inquiry_id>\d+)")


def test_none_external_id_or_pattern_finds_nothing() -> None:
    assert inquiry_id_from_external_id(None, DIGITS) is None
    assert inquiry_id_from_external_id("12443523", None) is None


def test_first_group_is_the_inquiry_id() -> None:
    assert inquiry_id_from_external_id("12443523", DIGITS) == 12443523


def test_named_group_wins_over_the_first() -> None:
    assert inquiry_id_from_external_id("SHOP-77", NAMED) == 77


def test_pattern_is_searched_so_a_partial_pattern_works() -> None:
    assert inquiry_id_from_external_id("order 55 / INQ-901", re.compile(r"INQ-(\d+)")) == 901


def test_anchors_make_the_pattern_match_the_whole_id() -> None:
    assert inquiry_id_from_external_id("x INQ-901", re.compile(r"^INQ-(\d+)$")) is None


def test_no_match_finds_nothing() -> None:
    assert inquiry_id_from_external_id("no digits here", DIGITS) is None


@pytest.mark.parametrize(
    "captured", ["0", "000", "-5", "+5", "1_000", " 5", "٣", "²", "12a", str(MAX_ID + 1), "9" * 5000]
)
def test_capture_that_is_not_a_positive_int64_finds_nothing(captured: str) -> None:
    assert inquiry_id_from_external_id(captured, re.compile(r"(.*)", re.DOTALL)) is None


def test_group_that_did_not_take_part_finds_nothing() -> None:
    assert inquiry_id_from_external_id("SHOP", re.compile(r"SHOP(?:-(\d+))?")) is None


def test_largest_int64_and_leading_zeros_are_accepted() -> None:
    whole = re.compile(r"(.*)")
    assert inquiry_id_from_external_id(str(MAX_ID), whole) == MAX_ID
    assert inquiry_id_from_external_id("000042", whole) == 42


@given(inquiry_id=st.integers(min_value=1, max_value=MAX_ID), noise=st.text(alphabet="ABC- /"))
def test_any_positive_int64_is_found_back(inquiry_id: int, noise: str) -> None:
    assert inquiry_id_from_external_id(f"{noise}{inquiry_id}{noise}", DIGITS) == inquiry_id


@given(external_id=st.text())
def test_result_is_always_a_positive_int64_or_none(external_id: str) -> None:
    found = inquiry_id_from_external_id(external_id, re.compile(r"(\S+)"))
    assert found is None or 1 <= found <= MAX_ID


def test_an_external_id_past_the_bound_is_never_searched() -> None:
    # Intake refuses such ids; a row stored before that rule is left unmatched, never given to the pattern.
    at_bound = "x" * (MAX_EXTERNAL_ID_CHARS - 5) + "12345"

    assert inquiry_id_from_external_id(at_bound, re.compile(r"(\d+)$")) == 12345
    assert inquiry_id_from_external_id("x" + at_bound, re.compile(r"(\d+)$")) is None


@pytest.mark.parametrize(
    "pattern",
    [
        r"(\d+)$",
        r"INQ-(\d+)",
        r"^QI-(\d+)$",
        r"INQ-?(?P<inquiry_id>\d{1,18})",
        r"^(\w+)-(\d+)$",
        r"(.*)-(\d+)$",
        r"^(?:ORD|INQ)-(?P<inquiry_id>\d+)(?:-\d+)?$",
    ],
)
def test_patterns_operators_write_cost_little_on_any_order_id(pattern: str) -> None:
    assert pattern_cost_problem(re.compile(pattern)) is None


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a|a)*$",  # overlapping alternatives
        r"^INQ-(a|a)*$",  # the same behind a literal prefix
        r"(?:0-|0|-)*(\d)$",  # overlapping alternatives, slow on a run of two characters
        r"(?:ab|a|b)*(\d)$",
        r"(\d+)\d+\d+\d+$",  # adjacent repeats: a polynomial of high degree
    ],
)
def test_patterns_that_backtrack_wildly_are_refused_naming_a_probe(pattern: str) -> None:
    problem = pattern_cost_problem(re.compile(pattern))

    # Which probe trips first depends on how fast this machine is at the moment: any one is named.
    assert problem is not None
    assert re.match(
        r"too slow: one search of a \d+-character order id \('.+'\.\.\.\) took over 10 ms", problem
    )


# The structural check reads `re`'s private parser: these pin what it sees, so a Python that changes the
# parser's tree fails here rather than letting nested repeats through.
@pytest.mark.parametrize(
    "pattern",
    [
        r"(x+)+",
        r"(x*)*",
        r"(?:\w+-)*",
        r"(.*a){12}",
        r"^((?:\d\-)+)+$",
        r"((ab)+)+$",
        r"(?:a+b|ab+)+(\d+)$",
        r"(\w+\s?)+$",
        r"^INQ-(\d+)+$",
        r"(?:x+?){2,}",
        r"(?:(?:x{2,5})?y)*",
        r"(?=(x+)+)\d",
        r"(?P<inquiry_id>\d+)(?:-(?:\d-)+)*",
    ],
)
def test_a_repeat_inside_a_repeat_is_nested(pattern: str) -> None:
    assert has_nested_repeat(pattern)
    assert pattern_cost_problem(re.compile(pattern)) == (
        "nested repeats: a group repeated with +, *, or {n,m} holds another such repeat, which can take "
        "exponential time on an order id that almost matches; repeat once instead, "
        "e.g. (\\d+)$ for (\\d+)+$, or [\\d-]+ for (?:\\d+-)+"
    )


@pytest.mark.parametrize(
    "pattern",
    [
        r"(\d+)$",
        r"(?:-\d+)?$",  # the outer one matches at most once
        r"(?:a?)+",  # the inner one matches at most once
        r"(ab){2}(\d+)",
        r"[\d-]+",
        r"(a|b)*\d+x+",  # repeats side by side, not nested
        r"^(?:ORD|INQ)-(?P<inquiry_id>\d+)(?:-\d+)?$",
    ],
)
def test_repeats_side_by_side_or_at_most_once_are_not_nested(pattern: str) -> None:
    assert not has_nested_repeat(pattern)
