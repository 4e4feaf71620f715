"""`relay serve --processes N`: forked processes serve on the sockets the parent bound; it minds them."""

import ctypes
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from relay.logs import write_held_lines

log = structlog.get_logger("relay")

# A child tells its parent it serves with this signal, whose sender's pid the parent reads: a real-time
# one, as the kernel queues each of those, where children sending SIGUSR1 at once would arrive as one.
SERVING = signal.SIGRTMIN
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, SERVING}
_PR_SET_PDEATHSIG = 1
# Set in a forked child: the parent to tell once it serves.
_parent: int | None = None

Serve = Callable[[int, list[socket.socket]], int]
SocketSets = list[list[socket.socket]]


@dataclass
class _Child:
    number: int
    serving: bool = False


def supervise(socket_sets: SocketSets, serve: Serve, *, stop_within_s: float) -> int:
    """Run `serve(n, socket_sets[n])` in a forked process for each set until SIGTERM or SIGINT; the exit
    status. Call it before any thread exists: it forks.

    - SIGTERM or SIGINT: SIGTERM to every process, which stops as one `relay serve` stops; one still running
      after `stop_within_s` is killed (status 1). SIGHUP is passed on to each.
    - A process that dies after it served (`serving()`) is reported (relay.process_exited) and started
      again with its number. One that dies before it could serve would only die again (a database it cannot
      use, another worker on the SQLite file): every other process is stopped and the status is its own
      (1 if a signal killed it).
    - The parent keeps every set open while it runs, so connections the kernel hands to a process being
      started again wait for it; it closes them all as it stops.
    """
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    children: dict[int, _Child] = {}
    status = 0
    stop_by: float | None = None

    def start(number: int) -> None:
        pid = _fork(number, socket_sets, serve, old_mask)
        children[pid] = _Child(number)
        log.info("relay.process_started", number=number, pid=pid)

    def stop_all(reason: str) -> float:
        log.info("relay.processes_stopping", reason=reason, pids=sorted(children))
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        # From now on new connections go to the processes still listening, or are refused once none is.
        _close(socket_sets)
        return time.monotonic() + stop_within_s

    try:
        for number in range(len(socket_sets)):
            start(number)
        while children:
            if stop_by is not None and time.monotonic() >= stop_by:
                log.error("relay.processes_killed", pids=sorted(children), after_s=stop_within_s)
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                status, stop_by = status or 1, float("inf")
            if stop_by is None or stop_by == float("inf"):
                received = signal.sigwaitinfo(_SIGNALS)
            elif (got := signal.sigtimedwait(_SIGNALS, stop_by - time.monotonic())) is not None:
                received = got
            else:
                continue
            signo = received.si_signo
            if signo == SERVING and received.si_pid in children:
                child = children[received.si_pid]
                child.serving = True
                log.info("relay.process_serving", number=child.number, pid=received.si_pid)
            elif signo == signal.SIGHUP:
                for pid in children:
                    os.kill(pid, signal.SIGHUP)
            elif signo in (signal.SIGTERM, signal.SIGINT) and stop_by is None:
                stop_by = stop_all(signal.Signals(signo).name)
            elif signo == signal.SIGCHLD:
                for pid, code in _reaped():
                    child = children.pop(pid)
                    if stop_by is not None:
                        # Killed by the SIGTERM itself: it came while the process was still starting, before
                        # it could take anything.
                        status = status or (0 if code in (0, -signal.SIGTERM) else 1)
                        continue
                    log.error(
                        "relay.process_exited",
                        number=child.number,
                        pid=pid,
                        exit_code=code,
                        served=child.serving,
                    )
                    if child.serving:
                        start(child.number)
                    else:
                        status = code if code > 0 else 1
                        stop_by = stop_all(f"process {child.number} exited with {code} before it served")
    finally:
        _close(socket_sets)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return status


def serving() -> None:
    """In a process `supervise` started, once it serves: from now on its death restarts it."""
    if _parent is not None and os.getppid() == _parent:
        os.kill(_parent, SERVING)


def _reaped() -> list[tuple[int, int]]:
    """Every child that has ended since the last look, with its exit code (-N: killed by signal N)."""
    ended: list[tuple[int, int]] = []
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, os.waitstatus_to_exitcode(wait_status)))


def _close(socket_sets: SocketSets) -> None:
    for sockets in socket_sets:
        for sock in sockets:
            sock.close()


def _fork(number: int, socket_sets: SocketSets, serve: Serve, old_mask: set[int | signal.Signals]) -> int:
    """Fork; the child serves on its own set and exits with its status (never back to the parent's stack)."""
    global _parent
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _parent = parent
        # Its own process group: a terminal's Ctrl-C reaches the parent alone, which stops each child once
        # (a second signal would cut a graceful stop short).
        os.setpgid(0, 0)
        # The kernel sends SIGTERM to a child whose parent died, however it died: no orphan keeps serving.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        # The other processes' sockets: held here, they would outlive their own process.
        _close([sockets for other, sockets in enumerate(socket_sets) if other != number])
        if os.getppid() == parent:
            code = serve(number, socket_sets[number])
    except SystemExit as exit_:
        code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        write_held_lines()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
