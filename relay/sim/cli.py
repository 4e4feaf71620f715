"""`relay sim-quivo`: run the simulated Quivo API until SIGINT or SIGTERM."""

import argparse
import asyncio
import signal

from aiohttp import web

from relay.sim.app import create_sim_app
from relay.sim.state import SimState


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on; 0 picks a free one")
    parser.add_argument("--api-key", default="sim-key", help="the X-Api-Key clients must send")
    parser.add_argument("--username", default="sim-user", help="the login username")
    parser.add_argument("--password", default="sim-pass", help="the login password")
    parser.add_argument("--token-ttl", type=_non_negative_int, default=3600, help="session token lifetime, s")
    parser.add_argument("--latency-ms", type=_non_negative_float, default=0.0, help="delay before answers")
    parser.add_argument(
        "--error-rate", type=_probability, default=0.0, help="fraction of rating POSTs that answer 5xx"
    )
    parser.add_argument(
        "--missing-inquiries",
        type=_inquiry_ids,
        default=set(),
        help="comma-separated inquiry ids that answer 404",
    )


def run(args: argparse.Namespace) -> int:
    state = SimState(
        api_key=args.api_key,
        username=args.username,
        password=args.password,
        token_ttl_s=args.token_ttl,
        missing=args.missing_inquiries,
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
    )
    asyncio.run(_serve(state, args.host, args.port))
    return 0


async def _serve(state: SimState, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # No access log: the sim serves benchmarks at thousands of requests per second.
    runner = web.AppRunner(create_sim_app(state), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        print(f"sim-quivo listening on http://{shown_host}:{bound_port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text}")
    return value


def _inquiry_ids(text: str) -> set[int]:
    try:
        return {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of inquiry ids: {text}") from None
