"""Processes for the benchmarks: started on free loopback ports, watched for memory, always stopped."""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.processes import free_port, wait_until_ready

__all__ = ["cpu_s", "family_cpu_s", "free_port", "memory_mb", "relay", "started"]


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH")
    return {**{k: v for k, v in os.environ.items() if k in keep}, "LOG_FORMAT": "json", **extra}


@contextmanager
def started(
    args: list[str], *, env: Mapping[str, str], log: Path, ready_url: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A background process; waits for `ready_url` to answer 200; SIGTERM (then SIGKILL) at the end."""
    with log.open("ab") as out:
        process = subprocess.Popen(args, env=_env(env), stdout=out, stderr=subprocess.STDOUT)
    try:
        if ready_url:
            wait_until_ready(ready_url, process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def relay(*args: str) -> list[str]:
    return [sys.executable, "-m", "relay", *args]


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_s(pid: int) -> float:
    """CPU time (user and system) a process has used so far, in seconds, from /proc."""
    # After the command's closing parenthesis, utime and stime are the 12th and 13th fields.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def family_cpu_s(pid: int) -> float:
    """CPU time of a process and of its children alive now: a PostgreSQL server and its backends."""
    total = cpu_s(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):  # a child that ended meanwhile
            total += cpu_s(int(child))
    return total
