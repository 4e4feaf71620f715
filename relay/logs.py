"""Logging: structlog JSON lines on stdout, with stdlib loggers (aiohttp's too) in the same stream."""

import logging
import sys
from typing import Literal, TextIO

import structlog
from structlog.typing import Processor

_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(
    level: str = "INFO", fmt: Literal["json", "console"] | None = None, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib records through one pipeline; JSON unless stdout is a terminal."""
    if fmt is None:
        fmt = "console" if sys.stdout.isatty() else "json"
    renderer: Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
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
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=_NamedWriteLoggerFactory(stream or sys.stdout),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
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
