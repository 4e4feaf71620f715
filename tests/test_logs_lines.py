"""The relay's own lines, spelled straight from a call's keys, are byte for byte what structlog's processors
and its JSONRenderer (json.dumps) write for the same call, whatever the keys and values."""

import enum
import io
import json
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.typing import EventDict, WrappedLogger

from relay import jsonline
from relay.logs import UtcStamper, bind_request_id, configure_logging, get_logger, spelled_writer

NOW_NS = 1_764_640_000_123_456_789
LEVELS = ("debug", "info", "warning", "error", "critical")


class Colour(enum.IntEnum):
    RED = 1


class Name(enum.StrEnum):
    QUOTED = 'say "hi"'


class Spelled:
    """A value that spells itself for structlog."""

    def __structlog__(self) -> str:
        return "spelled ✓"


class Opaque:
    """A value JSON cannot hold: written as its repr."""

    def __repr__(self) -> str:
        return 'Opaque("\\x00")'


# What operators meet in lines: control characters, quotes, backslashes, non-ASCII, surrogates.
ODD_TEXT = ["", '"', "\\", "\x00\x1f\x7f", "tëst ✓ 😀", "\ud800"]
TEXT = st.text(st.characters(codec=None)) | st.sampled_from(ODD_TEXT)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # with NaN and the infinities
    | st.sampled_from([0.0, -0.0, 1.23, 1e16, 5e-324, math.nan, math.inf, -math.inf])
    | TEXT
    | st.sampled_from([Colour.RED, Name.QUOTED, True, Spelled(), Opaque(), {"b"}, b"bytes"])
    | st.just(datetime(2026, 12, 2, tzinfo=UTC))
)
NESTED_KEYS = TEXT | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(NESTED_KEYS, inner, max_size=3)
    ),
    max_leaves=8,
)
# The keys the steps set or read are drawn often, so that lines taking structlog's way are checked too.
KEYS = TEXT | st.sampled_from(["request_id", "level", "logger", "timestamp", "tenant", "duration_ms"])
CALL_KEYS = KEYS.filter(lambda key: key not in ("self", "event"))
# The keys the steps set or read: a caller spelling its own line passes none of them.
STEPS_KEYS = ("request_id", "level", "logger", "timestamp", "_record", "stack_info", "exc_info")


def _reference_request_id(request_id: str | None) -> Any:
    # What structlog's merge_contextvars did for the one context the relay binds.
    def add(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if request_id is not None:
            event_dict.setdefault("request_id", request_id)
        return event_dict

    return add


class _NamedWriteLogger(structlog.WriteLogger):
    def __init__(self, stream: io.StringIO, name: str) -> None:
        super().__init__(stream)
        self.name = name


def _reference(stream: io.StringIO, request_id: str | None) -> None:
    """structlog's own chain: the steps one processor each, then JSONRenderer with json.dumps."""
    structlog.configure(
        processors=[
            _reference_request_id(request_id),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            UtcStamper(),  # spelled as TimeStamper(fmt="iso", utc=True): see test_logs
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=lambda *args: _NamedWriteLogger(stream, str(args[0])),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fixed clock; structlog's and the root logger's configuration restored after."""
    monkeypatch.setattr(time, "time_ns", lambda: NOW_NS)
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:], root.level = handlers, level
        bind_request_id(None)


def _line(level: str, name: str, event: object, context: dict[str, Any], call: dict[str, Any]) -> None:
    getattr(structlog.get_logger(name).bind(**context), level)(event, **call)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    level=st.sampled_from(LEVELS),
    name=TEXT.filter(bool),
    # structlog leaves out an event of None; the relay writes null, as it always did (no call passes None).
    event=TEXT | VALUES.filter(lambda value: value is not None),
    context=st.dictionaries(KEYS | st.just("event"), VALUES, max_size=3),
    call=st.dictionaries(CALL_KEYS, VALUES, max_size=12),
    request_id=st.none() | TEXT,
)
def test_a_line_is_spelled_as_structlogs_processors_and_json_dumps_spell_it(
    restored: None,
    level: str,
    name: str,
    event: object,
    context: dict[str, Any],
    call: dict[str, Any],
    request_id: str | None,
) -> None:
    relays, structlogs = io.StringIO(), io.StringIO()
    bind_request_id(request_id)
    configure_logging("DEBUG", "json", relays)
    _line(level, name, event, context, call)
    _reference(structlogs, request_id)
    _line(level, name, event, context, call)

    assert relays.getvalue() == structlogs.getvalue()


@given(value=TEXT | VALUES)
def test_a_value_is_spelled_as_json_dumps_spells_it(value: object) -> None:
    expected = json.dumps(value, default=structlog.processors._json_fallback_handler)

    assert jsonline.spell(value) == expected
    assert jsonline.encode(value) == expected


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    level=st.sampled_from(LEVELS),
    name=TEXT.filter(bool),
    event=TEXT,
    call=st.dictionaries(CALL_KEYS.filter(lambda key: key not in STEPS_KEYS), VALUES, max_size=12),
    request_id=st.none() | TEXT,
)
def test_a_line_spelled_by_its_caller_is_the_level_methods_line(
    restored: None, level: str, name: str, event: str, call: dict[str, Any], request_id: str | None
) -> None:
    stream = io.StringIO()
    bind_request_id(request_id)
    configure_logging("DEBUG", "json", stream)
    logger = get_logger(name)
    write = spelled_writer(logger, level)
    assert write is not None

    getattr(logger, level)(event, **call)
    write(event, jsonline.encode(call)[1:-1])
    first, second = stream.getvalue().splitlines()
    assert first == second


def test_a_line_goes_the_level_methods_way_when_it_would_not_be_spelled_straight(restored: None) -> None:
    configure_logging("WARNING", "json", io.StringIO())
    assert spelled_writer(get_logger("relay.a"), "warning") is not None
    assert spelled_writer(get_logger("relay.b"), "info") is None  # below the level
    assert spelled_writer(structlog.get_logger("relay.c").bind(tenant="a"), "warning") is None
    with structlog.testing.capture_logs():
        assert spelled_writer(structlog.get_logger("relay.d"), "warning") is None
    configure_logging("INFO", "console", io.StringIO())
    assert spelled_writer(get_logger("relay.e"), "info") is None
