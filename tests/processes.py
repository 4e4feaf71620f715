"""Real relay processes for tests: started on free loopback ports, stopped by the test or at its end."""

import ctypes
import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Ports handed out by free_port, each reserved by a lock file for as long as this test run lives.
PORT_LOCKS = Path(tempfile.gettempdir()) / "relay-test-ports"
_reserved: list[int] = []


def free_port() -> int:
    """A loopback port for a process the test starts later, reserved for this test run alone.

    It lies below the kernel's ephemeral range, so no outgoing connection and no bind to port 0 takes it
    before the process binds it; a lock file per port keeps every other test, and every other run of the
    suite on this machine, from being handed the same one. The process may bind it again after a restart.
    """
    low, _ = (int(word) for word in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    PORT_LOCKS.mkdir(exist_ok=True)
    for port in random.sample(range(20000, low), k=min(500, low - 20000)):
        lock = os.open(PORT_LOCKS / str(port), os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue
        if _bindable(port):
            _reserved.append(lock)  # held (and the port ours) until this process exits
            return port
        os.close(lock)
    raise RuntimeError("no free port to reserve below the ephemeral range")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def relay_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "relay", *args]


def run_relay(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 30, honour_file_modes: bool = False
) -> subprocess.CompletedProcess[str]:
    """`relay ARGS` to its end; `honour_file_modes`: read-only files stay read-only to it, even as root."""
    return subprocess.run(
        relay_command(*args),
        env=_clean_env(env, args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_without_file_override if honour_file_modes and os.geteuid() == 0 else None,
    )


def _without_file_override() -> None:
    """In the child, before exec: root loses CAP_DAC_OVERRIDE, so file modes apply to it as to anyone."""
    pr_capbset_drop, cap_dac_override = 24, 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_capbset_drop, cap_dac_override, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE) failed")


def _clean_env(extra: Mapping[str, str], args: Sequence[str] = ()) -> dict[str, str]:
    # Only the test's own settings: nothing from the developer's shell leaks into the relay under test.
    base = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    # `relay worker` listens too: each on a loopback port of its own, not on a default another run holds.
    if args[:1] == ("worker",):
        base |= {"RELAY_WORKER_HOST": "127.0.0.1", "RELAY_WORKER_PORT": str(free_port())}
    return {**base, "LOG_FORMAT": "json", **extra}


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """The predicate's first true value, polled until `timeout`; TimeoutError naming `what` after it."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)
    return value


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
            env=_clean_env(env, args),
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
