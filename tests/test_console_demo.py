"""`make console`: the demo, then the console's address and token printed, until SIGINT stops it cleanly."""

import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from queue import Empty, Queue

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = re.compile(r"^Console: (http://\S+/console)$")
TOKEN = re.compile(r"^Admin token: (\S+)$")


def lines_of(process: subprocess.Popen[str]) -> "Queue[str | None]":
    """The process's stdout, a line at a time, read in a thread (None at its end) so waits have deadlines."""
    lines: Queue[str | None] = Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def until(lines: "Queue[str | None]", pattern: re.Pattern[str], seen: list[str], timeout: float = 90) -> str:
    while True:
        try:
            line = lines.get(timeout=timeout)
        except Empty:
            pytest.fail(f"no line matching {pattern.pattern} within {timeout}s:\n" + "\n".join(seen))
        if line is None:
            pytest.fail(f"the script ended before printing {pattern.pattern}:\n" + "\n".join(seen))
        seen.append(line)
        if found := pattern.match(line):
            return found[1]


def test_make_console_prints_a_working_console_and_stops_cleanly_on_sigint() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.console_demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        lines = lines_of(process)
        console = until(lines, CONSOLE, seen)
        token = until(lines, TOKEN, seen)
        assert not [line for line in seen if line.startswith("NOT OK")], seen

        with urllib.request.urlopen(f"{console}/sign-in", timeout=10) as answer:
            assert answer.status == 200
        signed_in = urllib.request.Request(
            f"{console}/sign-in", data=urllib.parse.urlencode({"token": token}).encode(), method="POST"
        )
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(signed_in, timeout=10) as answer:  # follows the 303 to the overview
            assert answer.status == 200 and answer.url == console
            assert "Overview" in answer.read().decode()

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, "\n".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stopped = until(lines, re.compile(r"^Stopped: (.*)$"), seen, timeout=5)
    assert stopped == "the relay exited 0, the stand-ins 0, 0."
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{console}/sign-in", timeout=5)
