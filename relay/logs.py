"""Logging: structlog JSON lines on stdout, with stdlib loggers (aiohttp's too) in the same stream."""

import asyncio
import atexit
import logging
import select
import sys
import threading
import time
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import structlog
from structlog.processors import StackInfoRenderer, format_exc_info
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from relay.jsonline import encode, quoted, spell

# The one context every line logged while answering a request carries (relay.http binds it).
_REQUEST_ID: ContextVar[str | None] = ContextVar("relay_request_id", default=None)


# Lines logged from now on in this context (a request's task, and tasks it starts) carry the request id given
# (None: no request id). The variable's own set, called straight at each request: a function around it cost a
# Python call.
bind_request_id: Callable[[str | None], object] = _REQUEST_ID.set


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


def _add_request_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    request_id = _REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


Step = Callable[[WrappedLogger, str, EventDict], EventDict]
_STAMPER = UtcStamper()
# What every line gets, the relay's own and other libraries' alike.
_SHARED: tuple[Step, ...] = (
    _add_request_id,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    _STAMPER,
)
# The keys those steps (and the stack and exception steps) set or read: a line whose own keys include one
# goes through the steps, which know where each then stands.
_STEPS_KEYS = frozenset(
    {"event", "request_id", "level", "logger", "timestamp", "_record", "stack_info", "exc_info"}
)
_LEVELS = ("debug", "info", "warning", "error", "critical")


def _render_json(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    return encode(event_dict)


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


def _json_line(fields: EventDict, event: object, tail: str) -> str:
    """What _relay_line and _render_json write for `fields` and `event`, spelled straight from them: their
    order, then `event`, `request_id`, `level`, `logger`, `timestamp`, as the steps add them (`tail` spells
    the level's and logger's)."""
    return _members_line(encode(fields)[1:-1] if fields else "", event, tail)


def _members_line(members: str, event: object, tail: str) -> str:
    """_json_line's line for the keys and values `members` spells (JSON object members, without braces)."""
    request_id = _REQUEST_ID.get()
    # A request id is text (bind_request_id's): escaped straight, without spell's test of its type.
    said = "" if request_id is None else ', "request_id": ' + quoted(request_id)
    # The timestamp's characters (digits, "-", ":", "T", ".", "Z") need no escaping. One f-string: the line
    # is copied once, not at each piece added.
    stamp = _STAMPER.spell(time.time_ns())
    if members:
        return f'{{{members}, "event": {spell(event)}{said}{tail}{stamp}"}}\n'
    return f'{{"event": {spell(event)}{said}{tail}{stamp}"}}\n'


def _direct_bound_logger(min_level: int, line: Step, json: bool) -> type[FilteringBoundLogger]:
    """structlog's filtering bound logger whose level methods, while `line` is the configured chain, make the
    line in one call: the same dict in the same order (context, the call's keys, `event`) through `line`,
    without structlog's three calls and two copies of the keys between; in JSON, a line whose keys the steps
    leave alone is spelled straight from them (_json_line). Any other chain (a test's capture_logs) goes
    structlog's way."""
    base = structlog.make_filtering_bound_logger(min_level)

    def direct(name: str) -> Callable[..., Any]:
        structlogs = getattr(base, name)

        def log(self: Any, event: str, *args: Any, **kw: Any) -> Any:
            processors = self._processors
            if args or len(processors) != 1 or processors[0] is not line:
                return structlogs(self, event, *args, **kw)
            event_dict = {**self._context, **kw} if self._context else kw
            writer = self._logger
            if json and type(writer) is _LineWriter and _STEPS_KEYS.isdisjoint(event_dict):
                return writer.write(_json_line(event_dict, event, writer.tails[name]))
            event_dict["event"] = event
            return getattr(writer, name)(line(writer, name, event_dict))

        log.__name__ = name
        return log

    def spelled_writer(self: Any, name: str) -> Callable[[object, str], None] | None:
        """What writes this logger's lines at level `name` spelled by the caller (see spelled_writer)."""
        writer = self._logger
        if (
            json
            and not self._context
            and type(writer) is _LineWriter
            and len(self._processors) == 1
            and self._processors[0] is line
            and name in methods
        ):
            return writer.spelled[name]
        return None

    levels = logging.getLevelNamesMapping()
    methods: dict[str, Any] = {name: direct(name) for name in _LEVELS if levels[name.upper()] >= min_level}
    return type(f"Relay{base.__name__}", (base,), {**methods, "spelled_writer": spelled_writer})


def spelled_writer(logger: Any, level: str) -> Callable[[object, str], None] | None:
    """For a line the caller spells itself, the function that writes it (`event`, then its keys and values as
    JSON object members, `"key": value, ...`, in the order the call would pass them, none of the keys the
    steps set or read), as `logger`'s `level` method would write that call; None when that method would not
    spell the line straight (another format or chain, a bound context, the level filtered out): the caller
    then calls the method."""
    written = getattr(getattr(logger, level), "__self__", None)
    spelled = getattr(written, "spelled_writer", None)
    return None if spelled is None else spelled(level)


def configure_logging(
    level: str = "INFO",
    fmt: Literal["json", "console"] | None = None,
    stream: TextIO | None = None,
    *,
    per_turn: bool = False,
) -> None:
    """Route structlog and stdlib records through one pipeline; JSON unless stdout is a terminal. The
    relay's own lines are flushed one by one or, `per_turn` (a server's loop), at the start of the event
    loop's next turn, a turn's lines together."""
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
        logger_factory=_LineWriterFactory(stream or sys.stdout, per_turn=per_turn),
        wrapper_class=_direct_bound_logger(logging.getLevelName(level), line, renderer is _render_json),
        cache_logger_on_first_use=True,
    )


class _LineWriter:
    """structlog's WriteLogger, named after get_logger's argument so each line says which part spoke; it also
    writes a line spelled whole, the spelling of its level, logger and timestamp keys at hand (`tails`)."""

    def __init__(self, lines: "_Lines", name: str) -> None:
        self.name = name
        self.write = lines.write
        self.tails = {
            level: f', "level": "{level}", "logger": {spell(name)}, "timestamp": "' for level in _LEVELS
        }
        # What writes a line its caller spelled, at each level (spelled_writer's): made once, not per line.
        self.spelled = {level: self._spelling(tail) for level, tail in self.tails.items()}

    def _spelling(self, tail: str) -> Callable[[object, str], None]:
        write = self.write
        return lambda event, members: write(_members_line(members, event, tail))

    def msg(self, message: str) -> None:
        self.write(message + "\n")

    log = debug = info = warn = warning = fatal = failure = err = error = critical = exception = msg


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# Every stream's lines, written at the interpreter's exit: a loop that stopped holding some never writes them.
_ALL_LINES: "weakref.WeakSet[_Lines]" = weakref.WeakSet()


def write_held_lines() -> None:
    """Write every line a loop still holds (before an exit that skips atexit, as os._exit does)."""
    for lines in list(_ALL_LINES):
        lines.write_held()


atexit.register(write_held_lines)


class _Lines:
    """The lines written into one stream, each flushed at once or, `per_turn`, those of an event loop's turn
    at its end: a write is a system call, and one from the loop lets a busy thread take the GIL."""

    def __init__(self, stream: TextIO, *, per_turn: bool) -> None:
        self._write, self._flush = stream.write, stream.flush
        self._lock = threading.Lock()
        self._held: list[str] = []
        # The loop whose next turn writes what is held; None when nothing is held.
        self._turn: asyncio.AbstractEventLoop | None = None
        self.write = self._write_per_turn if per_turn else self._write_now
        _ALL_LINES.add(self)

    def _write_now(self, text: str) -> None:
        """Write `text` (whole lines) and flush it, one writer at a time."""
        # acquire and release: a `with` block costs twice as much, about a fifth of writing the line.
        self._lock.acquire()
        try:
            self._write(text)
            self._flush()
        finally:
            self._lock.release()

    def _write_per_turn(self, text: str) -> None:
        """Write `text` (whole lines) at the start of the running loop's next turn; without a running loop
        (another thread), now, after the lines held."""
        loop = _running_loop()
        self._lock.acquire()
        try:
            self._held.append(text)
            if loop is None:
                self._write_held()
                return
            if self._turn is loop:
                return
            if self._turn is None or self._turn.is_closed():
                self._turn = loop
                loop.call_soon(self.write_held)
                return
        finally:
            self._lock.release()
        # Another loop holds lines too (two loops in two threads): written now, in the order they came.
        self.write_held()

    def write_held(self) -> None:
        """Write and flush the lines held."""
        self._lock.acquire()
        try:
            self._write_held()
        finally:
            self._lock.release()

    def _write_held(self) -> None:
        held, self._held, self._turn = self._held, [], None
        # A pipe takes a write of up to PIPE_BUF bytes whole: flushed in pieces no longer, the lines stay
        # whole among other processes' on the one stdout (relay serve --processes N). A longer line alone.
        piece: list[str] = []
        size = 0
        for text in held:
            length = len(text) if text.isascii() else len(text.encode())
            if piece and size + length > select.PIPE_BUF:
                self._write("".join(piece))
                self._flush()
                piece, size = [], 0
            piece.append(text)
            size += length
        if piece:
            self._write("".join(piece))
            self._flush()


class _LineWriterFactory:
    """A _LineWriter per get_logger name, every one writing into `stream` through one _Lines."""

    def __init__(self, stream: TextIO, *, per_turn: bool) -> None:
        self._lines = _Lines(stream, per_turn=per_turn)

    def __call__(self, *args: object) -> _LineWriter:
        return _LineWriter(self._lines, str(args[0]) if args else "relay")


def get_logger(name: str) -> Any:
    """structlog.get_logger(name) for the loggers on a request's way: what it resolves is kept on it."""
    return _KeptLogger(name)


class _KeptLogger:
    """structlog's lazy logger proxy, whose methods (`info`, `bind`, ...) are kept on it once resolved while
    structlog keeps the loggers it makes (cache_logger_on_first_use, as configure_logging sets): the proxy
    resolves them again at every call (a failed look-up, a bind, a getattr), a tenth of a line's cost."""

    def __init__(self, name: str) -> None:
        self._proxy = structlog.get_logger(name)

    def __getattr__(self, attribute: str) -> Any:
        resolved = getattr(self._proxy, attribute)
        if structlog.get_config()["cache_logger_on_first_use"]:
            setattr(self, attribute, resolved)
        return resolved
