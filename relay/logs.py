"""Logging: structlog JSON lines on stdout, with stdlib loggers (aiohttp's too) in the same stream."""

import logging
import sys
import time
from _json import encode_basestring_ascii, make_encoder
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import structlog
from structlog.processors import StackInfoRenderer, format_exc_info
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger


class UtcStamper:
    """Adds `timestamp` as TimeStamper(fmt="iso", utc=True) spells it, at a sixth of its cost: the date and
    time of day are formatted once a second, the microseconds at each line."""

    def __init__(self) -> None:
        # One tuple replaced whole: a thread reading it never sees one second's number with another's text.
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict["timestamp"] = self.spell(time.time_ns())
        return event_dict

    def spell(self, ns: int) -> str:
        """ISO 8601 in UTC with a 'Z'; microseconds unless there are none, as datetime.isoformat has it."""
        second, rest = divmod(ns, 1_000_000_000)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (
                second,
                datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            )
        micro = rest // 1000
        return f"{cached[1]}.{micro:06d}Z" if micro else f"{cached[1]}Z"


def _fallback(value: object) -> object:
    # As structlog's JSONRenderer: a value's own __structlog__ spelling, else its repr.
    try:
        return value.__structlog__()  # type: ignore[attr-defined]
    except AttributeError:
        return repr(value)


Step = Callable[[WrappedLogger, str, EventDict], EventDict]
# What every line gets, the relay's own and other libraries' alike.
_SHARED: tuple[Step, ...] = (
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    UtcStamper(),
)
# json.dumps with a `default` (structlog's JSONRenderer passes one) builds a new C encoder at every call: this
# one is built once, with json.dumps's separators and ASCII escaping. No circular check: a log line's values
# are not circular, and a shared check's memo would outlive a failed call.
_ENCODE = make_encoder(None, _fallback, encode_basestring_ascii, None, ": ", ", ", False, False, True)


def _render_json(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    return "".join(_ENCODE(event_dict, 0))


def _relay_line(renderer: Processor) -> Step:
    """The relay's own processors as one (structlog calls each processor in turn, at a cost per call): what
    _SHARED adds, the stack and exception text when a line asks for them, then the renderer."""
    stack_info = StackInfoRenderer()

    def process(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        for step in _SHARED:
            event_dict = step(logger, method_name, event_dict)
        if "stack_info" in event_dict or "exc_info" in event_dict:
            event_dict = format_exc_info(logger, method_name, stack_info(logger, method_name, event_dict))
        return renderer(logger, method_name, event_dict)

    return process


def _direct_bound_logger(min_level: int, line: Step) -> type[FilteringBoundLogger]:
    """structlog's filtering bound logger whose level methods, while `line` is the configured chain, make the
    line in one call: the same dict in the same order (context, the call's keys, `event`) through `line`,
    without structlog's three calls and two copies of the keys between. Any other chain (a test's
    capture_logs) goes structlog's way."""
    base = structlog.make_filtering_bound_logger(min_level)

    def direct(level: int, name: str) -> Callable[..., Any]:
        structlogs = getattr(base, name)

        def log(self: Any, event: str, *args: Any, **kw: Any) -> Any:
            processors = self._processors
            if args or len(processors) != 1 or processors[0] is not line:
                return structlogs(self, event, *args, **kw)
            event_dict = {**self._context, **kw} if self._context else kw
            event_dict["event"] = event
            return getattr(self._logger, name)(line(self._logger, name, event_dict))

        log.__name__ = name
        return log

    levels = logging.getLevelNamesMapping()
    methods = {
        name: direct(levels[name.upper()], name)
        for name in ("debug", "info", "warning", "error", "critical")
        if levels[name.upper()] >= min_level
    }
    return type(f"Relay{base.__name__}", (base,), methods)


def configure_logging(
    level: str = "INFO", fmt: Literal["json", "console"] | None = None, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib records through one pipeline; JSON unless stdout is a terminal."""
    if fmt is None:
        fmt = "console" if sys.stdout.isatty() else "json"
    renderer: Processor = _render_json if fmt == "json" else structlog.dev.ConsoleRenderer()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # One canonical line per webhook replaces the access log line; keep aiohttp's errors.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The relay's own events skip the stdlib machinery (a third of the cost of a line); aiohttp's
    # records still come through the handler above, rendered alike, into the same stream.
    line = _relay_line(renderer)
    structlog.configure(
        processors=[line],
        logger_factory=_NamedWriteLoggerFactory(stream or sys.stdout),
        wrapper_class=_direct_bound_logger(logging.getLevelName(level), line),
        cache_logger_on_first_use=True,
    )


class _NamedWriteLoggerFactory:
    """structlog's WriteLogger, named after get_logger's argument so each line says which part spoke."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, *args: object) -> structlog.WriteLogger:
        logger = structlog.WriteLogger(self._stream)
        logger.name = str(args[0]) if args else "relay"  # type: ignore[attr-defined]
        return logger
