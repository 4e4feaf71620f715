"""`make console`: the demo (`make demo`), then the relay and its stand-ins left running for a person to look
at the console, until Ctrl-C.

Prints the console's address and the admin token to sign in with. Ctrl-C (SIGINT) or SIGTERM stops the relay
and the stand-ins cleanly; exits 0 when the relay stopped cleanly.
"""

import asyncio
import secrets
import signal
import sys
import tempfile
from pathlib import Path

import aiohttp

from scripts.demo import DemoError, Processes, exercise, stop, tail


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="relay-console-"))
    # A fresh token each run: the console lives only as long as this command.
    admin_token = secrets.token_urlsafe(24)
    print("The relay demo, then its console, left running until Ctrl-C.")
    print(f"Working folder: {workdir} (database and logs; kept for you to look at)\n")
    try:
        return asyncio.run(run_console(workdir, admin_token))
    except DemoError as error:
        print(f"\nThe demo could not run: {error}")
        return 1


async def run_console(workdir: Path, admin_token: str) -> int:
    """The demo's story, then the console's address until a stop signal; the processes stopped at the end."""
    processes = Processes()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopping.set)
    try:
        problems = await exercise(workdir, processes, admin_token=admin_token)
        for problem in problems:
            print(f"NOT OK: {problem}")
        print(f"\nRelay log (JSON lines): {workdir / 'relay.log'}")
        print(f"\nConsole: {processes.relay_url}/console")
        print(f"Admin token: {admin_token}")
        print("The relay and the Quivo stand-ins keep running; Ctrl-C stops them.", flush=True)
        await stopping.wait()
    except aiohttp.ClientError as error:
        log_tail = tail(workdir / "relay.log")
        raise DemoError(f"lost contact: {error}\nrelay.log ends with:\n{log_tail}") from None
    finally:
        started = [processes.relay, processes.sim, processes.globex_sim]
        relay_code, *sim_codes = [await stop(process) for process in started if process is not None]
    print(f"\nStopped: the relay exited {relay_code}, the stand-ins {', '.join(map(str, sim_codes))}.")
    return 0 if relay_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
