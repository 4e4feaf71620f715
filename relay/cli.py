"""The `relay` command line: serve, worker, migrate, and the Quivo stand-in."""

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

import structlog
from aiohttp import web

from relay.app import create_app
from relay.logs import configure_logging
from relay.settings import Settings, SettingsError, load_settings
from relay.sim import cli as sim_cli
from relay.store.db import Database

log = structlog.get_logger("relay")

EXIT_MISCONFIGURED = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="take Bringg webhooks (and deliver them, unless --no-worker)")
    serve.add_argument("--no-worker", action="store_true", help="serve webhooks only; run `relay worker` too")
    serve.set_defaults(command=_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(command=_migrate)

    sim = commands.add_parser("sim-quivo", help="serve a Quivo stand-in for demos, tests and benchmarks")
    sim_cli.configure_parser(sim)
    sim.set_defaults(command=sim_cli.run)
    return parser


def _settings(*, serves_webhooks: bool, runs_worker: bool) -> Settings:
    try:
        return load_settings(serves_webhooks=serves_webhooks, runs_worker=runs_worker)
    except SettingsError as error:
        for problem in error.problems:
            print(f"relay: configuration error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_MISCONFIGURED) from None


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=True, runs_worker=False)
    configure_logging(settings.log_level, settings.log_format)
    if settings.bringg_auth == "none":
        log.warning(
            "relay.auth_disabled", detail="BRINGG_AUTH=none: anyone who knows the URL can post webhooks"
        )
    log.info(
        "relay.starting",
        host=settings.relay_host,
        port=settings.port,
        database=str(settings.database_path),
        auth_methods=settings.auth_methods,
    )
    web.run_app(
        create_app(settings),
        host=settings.relay_host,
        port=settings.port,
        print=None,
        shutdown_timeout=settings.relay_shutdown_grace_s,
    )
    log.info("relay.stopped")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        database = Database(settings.database_path, timeout_s=settings.relay_store_timeout_s)
        await database.open()
        version = await database.schema_version()
        await database.close()
        log.info("relay.migrated", database=str(settings.database_path), schema_version=version)

    asyncio.run(run())
    return 0
