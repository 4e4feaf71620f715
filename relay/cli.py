"""The `relay` command line: serve, worker, migrate, and the Quivo stand-in."""

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from aiohttp import web

from relay.app import create_app
from relay.linkfile import links_to_csv
from relay.logs import configure_logging
from relay.settings import Settings, SettingsError, load_settings
from relay.sim import cli as sim_cli
from relay.store.db import Database
from relay.store.links import LinkImport, import_links_file, list_links
from relay.store.retention import PruneResult, prune

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

    worker = commands.add_parser("worker", help="deliver stored ratings to Quivo (no webhook intake)")
    worker.set_defaults(command=_worker)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(command=_migrate)

    links = commands.add_parser("links", help="the order -> Quivo inquiry links")
    link_commands = links.add_subparsers(required=True, metavar="ACTION")
    link_import = link_commands.add_parser("import", help="upsert links from a CSV file")
    link_import.add_argument("file", type=Path, help="CSV with header merchant_id,external_id,inquiry_id")
    link_import.set_defaults(command=_links_import)
    link_export = link_commands.add_parser("export", help="write every link as CSV to stdout")
    link_export.set_defaults(command=_links_export)

    prune_parser = commands.add_parser(
        "prune", help="delete finished records older than RELAY_RETENTION_DAYS"
    )
    prune_parser.set_defaults(command=_prune)

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
    settings = _settings(serves_webhooks=True, runs_worker=not args.no_worker)
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
        worker=not args.no_worker,
    )
    web.run_app(
        create_app(settings, run_worker=not args.no_worker),
        host=settings.relay_host,
        port=settings.port,
        print=None,
        shutdown_timeout=settings.relay_shutdown_grace_s,
    )
    log.info("relay.stopped")
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=True)
    configure_logging(settings.log_level, settings.log_format)
    log.info("relay.starting", database=str(settings.database_path), worker=True, web=False)

    async def run() -> None:
        # The same application and cleanup contexts as `relay serve`, without a listening site.
        runner = web.AppRunner(create_app(settings, run_worker=True), handle_signals=False)
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())
    log.info("relay.stopped")
    return 0


def _links_import(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)

    async def run() -> LinkImport:
        database = await _open(settings)
        try:
            return await import_links_file(
                database,
                args.file,
                now=datetime.now(UTC),
                progress=lambda saved: print(f"\r{saved} links saved", end="", file=sys.stderr, flush=True),
            )
        finally:
            await database.close()

    if not args.file.is_file():
        print(f"relay: no such file: {args.file}", file=sys.stderr)
        return 1
    result = asyncio.run(run())
    print(file=sys.stderr)
    for problem in result.problems:
        print(f"{args.file}:{problem.line}: {problem.reason}", file=sys.stderr)
    bad = len(result.problems)
    print(f"saved {result.saved} links, woke {result.woken} unmatched deliveries, {bad} bad rows")
    return 1 if result.problems else 0


def _links_export(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)

    async def run() -> None:
        database = await _open(settings)
        try:
            after: tuple[int, str] | None = None
            header = True
            while page := await list_links(database.reader, after=after, limit=5000):
                text = links_to_csv(page)
                sys.stdout.write(text if header else text.split("\n", 1)[1])
                header = False
                after = (page[-1].merchant_id, page[-1].external_id)
            if header:
                sys.stdout.write(links_to_csv([]))
        finally:
            await database.close()

    asyncio.run(run())
    return 0


def _prune(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    older_than = datetime.now(UTC) - timedelta(days=settings.relay_retention_days)

    def show(total: PruneResult) -> None:
        print(
            f"\rpruned {total.deliveries} deliveries, {total.attempts} attempts, {total.webhooks} webhooks",
            end="",
            file=sys.stderr,
            flush=True,
        )

    async def run() -> PruneResult:
        database = await _open(settings)
        try:
            return await prune(database, older_than=older_than, progress=show)
        finally:
            await database.close()

    total = asyncio.run(run())
    print(file=sys.stderr)
    print(
        f"pruned {total.deliveries} deliveries, {total.attempts} attempts and {total.webhooks} webhooks "
        f"finished before {older_than.isoformat(timespec='seconds')}; dead, unmatched and quarantined kept"
    )
    return 0


async def _open(settings: Settings) -> Database:
    database = Database(settings.database_path, timeout_s=settings.relay_store_timeout_s)
    await database.open()
    return database


def _migrate(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        database = await _open(settings)
        version = await database.schema_version()
        await database.close()
        log.info("relay.migrated", database=str(settings.database_path), schema_version=version)

    asyncio.run(run())
    return 0
