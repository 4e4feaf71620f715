"""Which Quivo customer inquiry a rating belongs to, when the order's external id names it."""

import re
import time
from collections.abc import Iterator
from itertools import permutations

# The stdlib's own regex parser: private, but the only parser of exactly the syntax `re` compiles, with the
# same tree since 3.5 (named sre_parse before 3.11, the oldest Python the relay runs on). It is used in
# has_nested_repeat alone, and tests/test_domain_matching.py pins what that sees, so a change shows there.
from re import _parser as regex_parser  # type: ignore[attr-defined,unused-ignore]

from relay.domain.ids import MAX_ID
from relay.domain.rating import MAX_EXTERNAL_ID_CHARS

# The search runs on the event loop, once per delivery pass: no order id may cost it more than this.
PATTERN_BUDGET_S = 0.01
# Probes are runs of one character that order ids are made of, or that the pattern names, and runs of
# two- and three-character units (`0-0-0-`) of those ...
_PROBE_CHARACTERS = "0aA -_./:#"
_PROBE_UNIT_CHARACTERS = "0a-"
# ... ended by one that fails most patterns at the last moment, after all the backtracking.
_PROBE_ENDINGS = ("!", "\x00")
# Past this length a probe grows by a tenth at a time: a pattern exponential in the length shows itself
# long before, and a polynomial one grows only by a small factor in a step.
_PROBE_STEP_UNTIL = 32
_UNIT_PROBES_UNTIL = 64
_METACHARACTERS = frozenset("\\.^$*+?{}[]|()")


def inquiry_id_from_external_id(external_id: str | None, pattern: re.Pattern[str] | None) -> int | None:
    """The inquiry id that `pattern` finds in a Bringg order's external id, or None.

    The pattern is applied with `search`, not `fullmatch`, so an operator can write just the part that
    matters (`INQ-(\\d+)`) and anchor it with `^...$` when the whole id must match. The id is the group
    named `inquiry_id` when the pattern has one, else group 1 (settings insist on one or the other); it
    must be ASCII digits for a positive integer that fits an int64. An external id longer than
    MAX_EXTERNAL_ID_CHARS (refused at intake, but rows stored before may hold one) matches nothing.
    """
    if external_id is None or pattern is None or len(external_id) > MAX_EXTERNAL_ID_CHARS:
        return None
    found = pattern.search(external_id)
    if found is None:
        return None
    digits = found.group("inquiry_id" if "inquiry_id" in pattern.groupindex else 1)
    # int() would also take signs, spaces, underscores and non-ASCII digits; an inquiry id is none of those.
    if digits is None or not (digits.isascii() and digits.isdigit()):
        return None
    # Leading zeros are harmless, but a run of digits that long could not be an int64 anyway.
    significant = digits.lstrip("0")
    if not significant or len(significant) > len(str(MAX_ID)):
        return None
    inquiry_id = int(significant)
    return inquiry_id if inquiry_id <= MAX_ID else None


def pattern_cost_problem(pattern: re.Pattern[str]) -> str | None:
    """Why `pattern` is too slow to search order ids with, or None when it is cheap on every probe.

    A repeat inside a repeat (`(\\d+)+`, `(?:\\w+-)*`, `(.*a){12}`) is refused by its shape: it can split
    one text in exponentially many ways, and no probe set finds every text it is slow on. Other slow
    patterns (overlapping alternatives such as `(a|a)*`, adjacent repeats) are slowest on a long run of
    what they repeat, ended by what they refuse: `(a|a)*$` on `aaa...a!`. Such probes grow one length at a
    time up to MAX_EXTERNAL_ID_CHARS, so a runaway pattern is caught on a short probe.
    """
    if has_nested_repeat(pattern.pattern, pattern.flags):
        return (
            "nested repeats: a group repeated with +, *, or {n,m} holds another such repeat, which can "
            "take exponential time on an order id that almost matches; repeat once instead, "
            "e.g. (\\d+)$ for (\\d+)+$, or [\\d-]+ for (?:\\d+-)+"
        )
    for probe in _probes(pattern):
        # Measured again before refusing: one slow search can be noise, three are the pattern.
        if all(_search_cost(pattern, probe) > PATTERN_BUDGET_S for _ in range(3)):
            return (
                f"too slow: one search of a {len(probe)}-character order id ({probe[:12]!r}...) took over "
                f"{PATTERN_BUDGET_S * 1000:g} ms; avoid alternatives that match the same text, such as "
                "(a|a)* or (ab|a|b)*, and adjacent repeats, such as \\d+\\d+"
            )
    return None


def has_nested_repeat(source: str, flags: int = 0) -> bool:
    """Whether a repeat that can match more than once holds another such repeat (star height above 1)."""
    repeats = (regex_parser.MAX_REPEAT, regex_parser.MIN_REPEAT, regex_parser.POSSESSIVE_REPEAT)

    # The parsed tree is (opcode, argument) pairs; a repeat's argument is (min, max, body), and any other
    # argument holds its sub-patterns (groups, branches, lookarounds) somewhere in nested tuples and lists.
    def nested(node: object, inside_repeat: bool) -> bool:
        if isinstance(node, regex_parser.SubPattern):
            return any(nested(item, inside_repeat) for item in node.data)
        if isinstance(node, tuple) and len(node) == 2 and node[0] in repeats:
            _, most, body = node[1]
            return (most > 1 and inside_repeat) or nested(body, inside_repeat or most > 1)
        if isinstance(node, tuple | list):
            return any(nested(item, inside_repeat) for item in node)
        return False

    return nested(regex_parser.parse(source, flags), inside_repeat=False)


def _search_cost(pattern: re.Pattern[str], text: str) -> float:
    # The thread's CPU time, not the wall clock: a busy machine does not make a fine pattern look slow.
    started = time.thread_time()
    pattern.search(text)
    return time.thread_time() - started


def _probes(pattern: re.Pattern[str]) -> Iterator[str]:
    source = pattern.pattern
    named = (char for char in source if char.isascii() and char.isprintable() and char not in _METACHARACTERS)
    literals = "".join(dict.fromkeys(named))
    single = dict.fromkeys(_PROBE_CHARACTERS + literals)
    pairs = ("".join(pair) for pair in permutations(dict.fromkeys(_PROBE_UNIT_CHARACTERS + literals), 2))
    triples = ("".join(triple) for triple in permutations(_PROBE_UNIT_CHARACTERS))
    units = dict.fromkeys([*pairs, *triples])
    starts = dict.fromkeys(("", _leading_literal(source)))
    for length in _probe_lengths():
        # Runs of longer units only up to a short length: what they catch is exponential, and shows early.
        for unit in (*single, *units) if length <= _UNIT_PROBES_UNTIL else single:
            for start in starts:
                body = length - len(start) - 1
                if body >= len(unit):
                    for ending in _PROBE_ENDINGS:
                        yield start + unit * (body // len(unit)) + ending


def _probe_lengths() -> Iterator[int]:
    length = 2
    while length < MAX_EXTERNAL_ID_CHARS:
        yield length
        length = length + 1 if length < _PROBE_STEP_UNTIL else length + length // 10
    yield MAX_EXTERNAL_ID_CHARS


def _leading_literal(source: str) -> str:
    # `^INQ-(\d+)+$` only backtracks once past `INQ-`: probes start with it too.
    literal = ""
    for char in source.removeprefix("^"):
        if char in _METACHARACTERS:
            break
        literal += char
    return literal
