"""A server's lines written once an event loop turn, in whole lines, and none left behind at exit."""

import asyncio
import io
import json
import logging
import select
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import structlog

from relay.logs import configure_logging, get_logger


class Writes(io.StringIO):
    """A stream that keeps each flushed write apart, as a pipe's reader would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []
        self._since = 0

    def flush(self) -> None:
        text = self.getvalue()
        if len(text) > self._since:
            self.flushed.append(text[self._since :])
            self._since = len(text)


@pytest.fixture
def per_turn() -> Iterator[Writes]:
    stream = Writes()
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json", stream, per_turn=True)
        yield stream
    finally:
        structlog.configure(**saved)
        root.handlers[:], root.level = handlers, level


def events(text: str) -> list[str]:
    return [json.loads(line)["event"] for line in text.splitlines()]


async def test_a_turns_lines_are_written_together_when_the_next_turn_starts(per_turn):
    log = get_logger("relay.webhook")
    for number in range(5):
        log.info(f"line.{number}")

    assert per_turn.getvalue() == ""
    await asyncio.sleep(0)

    assert len(per_turn.flushed) == 1
    assert events(per_turn.flushed[0]) == [f"line.{number}" for number in range(5)]


async def test_each_write_is_whole_lines_a_pipe_takes_whole(per_turn):
    log = get_logger("relay.webhook")
    comment = "a long comment " * 40
    for number in range(40):
        log.info(f"line.{number}", comment=comment)
    # A line longer than the pipe takes whole goes alone, as it went before.
    log.info("line.long", comment="x" * select.PIPE_BUF)
    await asyncio.sleep(0)

    assert len(per_turn.flushed) > 1
    for text in per_turn.flushed:
        assert text.endswith("\n")
        assert len(text.encode()) <= select.PIPE_BUF or text.count("\n") == 1
    assert events("".join(per_turn.flushed)) == [f"line.{number}" for number in range(40)] + ["line.long"]


async def test_a_thread_without_a_loop_writes_at_once_after_the_lines_held(per_turn):
    log = get_logger("relay.store.sqlite.writer")
    log.info("from.the.loop")
    thread = threading.Thread(target=lambda: log.info("from.a.thread"))
    thread.start()
    thread.join()

    assert events(per_turn.getvalue()) == ["from.the.loop", "from.a.thread"]


def test_lines_held_when_the_loop_ends_are_written_at_exit_and_before_os_exit(tmp_path):
    script = """
import asyncio, os, sys
from relay.logs import configure_logging, get_logger, write_held_lines
configure_logging("INFO", "json", per_turn=True)
async def last_turn():
    get_logger("relay").info("said.last")
asyncio.run(last_turn())
if sys.argv[1] == "os_exit":
    get_logger("relay").info("said.in.no.loop")
    asyncio.run(last_turn())
    write_held_lines()
    sys.stdout.flush()
    os._exit(0)
"""
    for how in ("exit", "os_exit"):
        done = subprocess.run(
            [sys.executable, "-c", script, how], capture_output=True, text=True, timeout=60, check=True
        )
        said = events(done.stdout)
        assert said == (["said.last"] if how == "exit" else ["said.last", "said.in.no.loop", "said.last"])
