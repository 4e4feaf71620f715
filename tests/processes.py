"""Real relay processes for tests: started on free loopback ports, stopped by the test or at its end."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def relay_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "relay", *args]


def run_relay(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        relay_command(*args), env=_clean_env(env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    # Only the test's own settings: nothing from the developer's shell leaks into the relay under test.
    base = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return {**base, "LOG_FORMAT": "json", **extra}


def wait_until_ready(url: str, process: subprocess.Popen[Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} not ready within {timeout}s")


@contextmanager
def relay_process(
    *args: str, env: Mapping[str, str], cwd: Path, log_path: Path
) -> Iterator[subprocess.Popen[str]]:
    """`relay ARGS` in the background, its output in log_path; killed at the end if still running."""
    with log_path.open("a") as log_file:
        process = subprocess.Popen(
            relay_command(*args),
            env=_clean_env(env),
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def sim_quivo_process(*args: str, cwd: Path) -> Iterator[str]:
    """`relay sim-quivo` on a free port; yields its base URL."""
    process = subprocess.Popen(
        relay_command("sim-quivo", "--port", "0", *args),
        env=_clean_env({}),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("sim-quivo listening on "):
            raise RuntimeError(f"sim-quivo did not start: {line!r}")
        yield line.removeprefix("sim-quivo listening on ").strip()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def http_json(
    method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> Any:
    """A small blocking JSON call for tests that drive real processes."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read() or b"null")
