"""The `relay` command line: serve, worker, migrate, the operator's commands, and the Quivo stand-in."""

import argparse
import asyncio
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from relay import collector, console
from relay.app import create_app, create_worker_app, reload_tenants_on_sighup, store_for
from relay.domain.delivery import DELIVERY_STATES
from relay.linkfile import links_to_csv
from relay.listen import CannotListen, listening_socket_sets, listening_sockets
from relay.logs import configure_logging
from relay.ops import actions, link_actions, webhook_actions
from relay.ops.admin import (
    DEFAULT_PAGE,
    MAX_PAGE,
    MAX_REPORTED,
    DeliveryListing,
    page_cursor,
    replay_answer,
)
from relay.ops.health import WORKER_SILENT_AFTER_S, worker_beats
from relay.ops.shared_metrics import shared_by_processes
from relay.settings import MAX_PROCESSES, Settings, SettingsError, load_settings
from relay.sim import cli as sim_cli
from relay.store import create_store
from relay.store.api import DatabaseUnusable, Store, StoreUnavailable
from relay.store.copy import CopyRefused, copy_store
from relay.store.filters import REPLAYABLE_STATES, DeliveryFilter, Id, ReplayFilter
from relay.store.operations import import_links_file, prune
from relay.store.records import COPIED_TABLES, DeliveryDetail, PruneResult, StateChange
from relay.supervisor import serving, supervise
from relay.tenants.file import read_tenants_file
from relay.tenants.registry import load_tenants
from relay.tenants.tenant import Tenant

log = structlog.get_logger("relay")

EXIT_MISCONFIGURED = 2
# This command only marks deliveries pending; the worker process finds them when it next polls.
WORKER_PICKS_UP = "a running `relay worker` or `relay serve` sends pending ones within RELAY_SWEEP_INTERVAL_S"

T = TypeVar("T")
F = TypeVar("F", bound=BaseModel)
_DELIVERY_ID = TypeAdapter(Id)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    return _guarded(args.command, args)


def _guarded(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a database it cannot use ends it with exit 2, one that is unavailable with exit 1."""
    try:
        return command(args)
    except DatabaseUnusable as error:
        _refuse([f"DATABASE_URL: cannot use {error}"])
    except StoreUnavailable as error:
        print(f"relay: database unavailable: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="take Bringg webhooks (and deliver them, unless --no-worker)")
    serve.add_argument("--no-worker", action="store_true", help="serve webhooks only; run `relay worker` too")
    serve.add_argument(
        "--processes",
        type=_processes,
        metavar="N",
        help="serve from N processes on the one port (default RELAY_PROCESSES, 1); the first one delivers",
    )
    serve.set_defaults(command=_serve)

    worker = commands.add_parser("worker", help="deliver stored ratings to Quivo (no webhook intake)")
    worker.set_defaults(command=_worker)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(command=_migrate)

    links = commands.add_parser("links", help="the order -> Quivo inquiry links")
    link_commands = links.add_subparsers(required=True, metavar="ACTION")
    link_import = link_commands.add_parser("import", help="upsert links from a CSV file")
    link_import.add_argument(
        "file", type=Path, help="CSV with header merchant_id,external_id,inquiry_id (and tenant, optional)"
    )
    link_import.add_argument(
        "--tenant", metavar="NAME", help="refuse rows whose merchant is not this tenant's"
    )
    link_import.set_defaults(command=_links_import)
    link_export = link_commands.add_parser("export", help="write every link as CSV to stdout")
    link_export.add_argument("--tenant", metavar="NAME", help="only the links of this tenant's merchants")
    link_export.set_defaults(command=_links_export)

    webhooks = commands.add_parser("webhooks", help="act on quarantined webhooks")
    webhook_commands = webhooks.add_subparsers(required=True, metavar="ACTION")
    reprocess = webhook_commands.add_parser(
        "reprocess",
        help="judge a quarantined webhook's body again, as if it arrived now",
        description="Judge a quarantined webhook's stored body again, for the tenant it came in for, as "
        "if it arrived now: after a release that reads it. A usable rating gets its delivery; a running "
        "`relay worker` (or `relay serve`) sends it. Exit 1: refused (unknown, not quarantined).",
    )
    reprocess.add_argument("webhook_id", type=_webhook_id, metavar="ID", help="the webhook's id")
    _json_option(reprocess)
    reprocess.set_defaults(command=_webhooks_reprocess)
    dismiss = webhook_commands.add_parser(
        "dismiss",
        help="close a quarantined webhook without delivering it, saying why",
        description="Close a quarantined webhook nothing can be delivered from: it is kept with your "
        "reason, its status becomes dismissed, and it no longer counts as quarantined. A dismissed "
        "webhook is not reprocessed. Exit 1: refused (unknown, not quarantined).",
    )
    dismiss.add_argument("webhook_id", type=_webhook_id, metavar="ID", help="the webhook's id")
    dismiss.add_argument("--reason", required=True, metavar="TEXT", help="why, in a line: it is kept")
    _json_option(dismiss)
    dismiss.set_defaults(command=_webhooks_dismiss)

    prune_parser = commands.add_parser(
        "prune", help="delete finished records older than RELAY_RETENTION_DAYS"
    )
    prune_parser.set_defaults(command=_prune)

    status = commands.add_parser(
        "status",
        help="deliveries by state, webhooks by status, backlog, recent outcomes and the live workers",
    )
    _json_option(status)
    status.set_defaults(command=_status)

    deliveries = commands.add_parser("deliveries", help="find and inspect deliveries")
    delivery_commands = deliveries.add_subparsers(required=True, metavar="ACTION")
    listing = delivery_commands.add_parser("list", help="deliveries matching the filters, newest first")
    _filter_options(listing, DELIVERY_STATES)
    listing.add_argument(
        "--limit", metavar="N", help=f"show at most N (default {DEFAULT_PAGE}, at most {MAX_PAGE})"
    )
    listing.add_argument("--cursor", help="show the older ones: the next_cursor a listing ended with")
    _json_option(listing)
    listing.set_defaults(command=_deliveries_list)
    show = delivery_commands.add_parser("show", help="one delivery, its calls to Quivo and its webhook")
    show.add_argument("delivery_id", type=_delivery_id, metavar="ID", help="the delivery's id")
    _json_option(show)
    show.set_defaults(command=_deliveries_show)

    replay = commands.add_parser(
        "replay",
        help="send a dead or unmatched delivery (ID), or all those matching --state ..., back to pending",
        description="Send dead or unmatched deliveries back to pending, unconfirmed: the worker reads the "
        "inquiry back before sending, so a rating is never posted twice. This command does not deliver: "
        "a running `relay worker` (or `relay serve`) polls the database every RELAY_SWEEP_INTERVAL_S "
        "and takes them up then.",
    )
    replay.add_argument(
        "delivery_id", nargs="?", type=_delivery_id, metavar="ID", help="the delivery to replay"
    )
    _filter_options(replay, REPLAYABLE_STATES)
    _json_option(replay)
    replay.set_defaults(command=_replay)

    database = commands.add_parser("db", help="the relay's database as a whole")
    database_commands = database.add_subparsers(required=True, metavar="ACTION")
    copy = database_commands.add_parser(
        "copy",
        help="copy a stopped relay's database into an empty one, on any backends, and check the counts",
        description="Copy every webhook, delivery, attempt, lease, link and the relay's own state from a "
        "stopped relay's database into an empty one (sqlite:///... or postgresql://...; the target is "
        "migrated first), then check that each table holds as many rows in both. Exit 2: refused, "
        "nothing copied; exit 1: counts differ.",
    )
    copy.add_argument(
        "source_url", type=_database_url, metavar="SOURCE_URL", help="the stopped relay's DATABASE_URL"
    )
    copy.add_argument(
        "target_url", type=_database_url, metavar="TARGET_URL", help="an empty database: the new DATABASE_URL"
    )
    copy.set_defaults(command=_db_copy)

    tenants = commands.add_parser("tenants", help="the tenants file (RELAY_TENANTS_FILE)")
    tenant_commands = tenants.add_subparsers(required=True, metavar="ACTION")
    tenants_check = tenant_commands.add_parser(
        "check",
        help="validate a tenants file in this environment and show its tenants (never a secret)",
        description="Validate a tenants file as `relay serve` and `relay worker` would, with this "
        "environment's values for what it leaves out and for its { env = ... } references. Exit 0: "
        "it is valid, each tenant shown on a line; exit 2: one line per problem.",
    )
    tenants_check.add_argument(
        "file", type=Path, help="the TOML file (config/tenants.example.toml shows every key)"
    )
    tenants_check.set_defaults(command=_tenants_check)

    sim = commands.add_parser("sim-quivo", help="serve a Quivo stand-in for demos, tests and benchmarks")
    sim_cli.configure_parser(sim)
    sim.set_defaults(command=sim_cli.run)
    return parser


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print JSON, as the admin API answers, for scripts"
    )


def _filter_options(parser: argparse.ArgumentParser, states: Sequence[str]) -> None:
    """The options of DeliveryFilter's fields, which `_filter` reads back by the same names."""
    parser.add_argument(
        "--state",
        action="append",
        help=f"one or more of {', '.join(states)}: repeat the option or separate with commas",
    )
    parser.add_argument("--tenant", metavar="NAME", help="the tenant's only (default without a tenants file)")
    parser.add_argument("--merchant-id", metavar="N", help="the Bringg merchant")
    parser.add_argument(
        "--external-id", metavar="X", help="the order id (at every merchant, without --merchant-id)"
    )
    parser.add_argument("--rating-id", metavar="N", help="the Bringg rating (at every merchant)")
    parser.add_argument("--inquiry-id", metavar="N", help="the Quivo customer inquiry")
    parser.add_argument(
        "--search", metavar="TEXT", help="an order id, or a rating or inquiry id: whichever of them it is"
    )
    parser.add_argument(
        "--since", metavar="WHEN", help="created at or after: an ISO-8601 time, or a duration back (2h, 7d)"
    )
    parser.add_argument("--until", metavar="WHEN", help="created before: as --since")


def _processes(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"not a number of processes from 1 to {MAX_PROCESSES}: {text!r}")
    return int(text)


def _delivery_id(text: str) -> int:
    try:
        return _DELIVERY_ID.validate_strings(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(f"not a delivery id: {text!r}") from None


def _webhook_id(text: str) -> int:
    try:
        return _DELIVERY_ID.validate_strings(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(f"not a webhook id: {text!r}") from None


def _database_url(text: str) -> str:
    """The URL as given, once its address and port read as a store will read them."""
    try:
        urlsplit(text).port  # noqa: B018 (reading the port is the check)
    except ValueError as error:
        # Its text, never the URL's: that may hold a password.
        raise argparse.ArgumentTypeError(f"not a database URL: {error}") from None
    return text


def _filter(kind: type[F], args: argparse.Namespace) -> F:
    """`kind` from the options named as its fields; a bad one ends the command with a line naming it."""
    given = {name: value for name in kind.model_fields if (value := getattr(args, name, None)) is not None}
    try:
        return kind.model_validate(given)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        option = "--" + str(first["loc"][0]).replace("_", "-")
        reason = console.printable(first["msg"].removeprefix("Value error, "))
        print(f"relay: {option}: {reason}", file=sys.stderr)
        raise SystemExit(EXIT_MISCONFIGURED) from None


def _settings(*, serves_webhooks: bool, runs_worker: bool) -> Settings:
    try:
        settings = load_settings(serves_webhooks=serves_webhooks, runs_worker=runs_worker)
        if settings.relay_tenants_file is not None and (serves_webhooks or runs_worker):
            # Here, so that a file that does not validate stops the start with one line per problem.
            read_tenants_file(
                settings.relay_tenants_file,
                settings,
                serves_webhooks=serves_webhooks,
                runs_worker=runs_worker,
            )
    except SettingsError as error:
        _refuse(error.problems)
    return settings


def _tenants_check(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    try:
        tenants = read_tenants_file(args.file, settings, serves_webhooks=True, runs_worker=True)
    except SettingsError as error:
        _refuse(error.problems)
    for tenant in tenants:
        print(tenant.summary())
    return 0


def _refuse(problems: Sequence[str]) -> NoReturn:
    """Stop before doing anything: one line per problem on stderr (stdout keeps only log lines)."""
    for problem in problems:
        print(f"relay: configuration error: {problem}", file=sys.stderr)
    raise SystemExit(EXIT_MISCONFIGURED)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=True, runs_worker=not args.no_worker)
    processes = args.processes or settings.relay_processes
    socket_sets = _listening_socket_sets(settings.relay_host, settings.port, processes)
    configure_logging(settings.log_level, settings.log_format, per_turn=True)
    if settings.bringg_auth == "none":
        log.warning(
            "relay.auth_disabled", detail="BRINGG_AUTH=none: anyone who knows the URL can post webhooks"
        )
    log.info(
        "relay.starting",
        host=settings.relay_host,
        port=settings.port,
        database=store_for(settings).location,
        auth_methods=settings.auth_methods,
        worker=not args.no_worker,
        processes=processes,
    )
    if processes == 1:
        return _serve_on(socket_sets[0], settings, run_worker=not args.no_worker)

    def serve_one(number: int, sockets: list[socket.socket]) -> int:
        # The first process delivers too (unless --no-worker): one worker, as with one process.
        run_worker = number == 0 and not args.no_worker
        return _guarded(lambda _: _serve_on(sockets, settings, run_worker=run_worker), args)

    # Every process counts in the one directory, so a scrape of any shows them all (see relay.ops.metrics).
    with shared_by_processes():
        status = supervise(socket_sets, serve_one, stop_within_s=2 * settings.relay_shutdown_grace_s + 10)
    log.info("relay.stopped")
    return status


def _serve_on(sockets: list[socket.socket], settings: Settings, *, run_worker: bool) -> int:
    """One process of `relay serve`: webhooks (and deliveries) on the bound sockets until SIGTERM."""
    app = create_app(settings, run_worker=run_worker)
    app.cleanup_ctx.append(reload_tenants_on_sighup)
    app.on_startup.append(_serving)
    web.run_app(
        app,
        sock=sockets,
        print=None,
        shutdown_timeout=settings.relay_shutdown_grace_s,
    )
    log.info("relay.stopped")
    return 0


async def _serving(app: web.Application) -> None:
    # Started, its store open (and its worker running): under `--processes`, a death now means a restart.
    serving()
    collector.settle_after_start()


async def _delivering(app: web.Application) -> None:
    # Started, its store open and its worker running: what start-up built is never walked again.
    collector.settle_after_start()


def _worker(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=True)
    names = ("RELAY_WORKER_HOST", "RELAY_WORKER_PORT")
    sockets = _listening_sockets(settings.relay_worker_host, settings.relay_worker_port, names=names)
    configure_logging(settings.log_level, settings.log_format, per_turn=True)
    log.info(
        "relay.starting",
        host=settings.relay_worker_host,
        port=settings.relay_worker_port,
        database=store_for(settings).location,
        worker=True,
        web=False,
    )

    async def run() -> None:
        # The delivery worker and its cleanup contexts, as in `relay serve`; it answers probes and scrapes.
        app = create_worker_app(settings)
        app.cleanup_ctx.append(reload_tenants_on_sighup)
        app.on_startup.append(_delivering)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            shutdown_timeout=settings.relay_shutdown_grace_s,
        )
        try:
            # A start that fails part way (another worker holds the database) still closes what it opened.
            await runner.setup()
            for sock in sockets:
                await web.SockSite(runner, sock).start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())
    log.info("relay.stopped")
    return 0


def _listening_socket_sets(host: str, port: int, count: int) -> list[list[socket.socket]]:
    """`relay serve`'s: bound before anything starts, as _listening_sockets, a set per process."""
    try:
        return listening_socket_sets(host, port, count)
    except CannotListen as error:
        _refuse([f"{'RELAY_HOST' if error.part == 'host' else 'PORT'}: {error}"])


def _listening_sockets(host: str, port: int, *, names: tuple[str, str]) -> list[socket.socket]:
    """Bound before anything starts: a taken port stops the process before it opens the database."""
    try:
        return listening_sockets(host, port)
    except CannotListen as error:
        _refuse([f"{names[0] if error.part == 'host' else names[1]}: {error}"])


def _tenants(settings: Settings) -> list[Tenant]:
    """The running configuration's tenants, as the relay reads them from the same environment."""
    try:
        return [
            running.tenant for running in load_tenants(settings, serves_webhooks=False, runs_worker=False)
        ]
    except SettingsError as error:
        _refuse(error.problems)


def _links_import(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    tenants = _tenants(settings)
    if not args.file.is_file():
        print(f"relay: no such file: {args.file}", file=sys.stderr)
        return 1
    _log_actions(settings)
    with console.progress_line() as show:
        result = _on_store(
            settings,
            lambda store: import_links_file(
                store,
                args.file,
                now=datetime.now(UTC),
                check=link_actions.link_check(tenants, args.tenant),
                progress=lambda saved: show(f"{saved} links saved"),
            ),
        )
    link_actions.imported(result)
    for problem in result.problems:
        print(console.printable(f"{args.file}:{problem.line}: {problem.reason}"), file=sys.stderr)
    bad = len(result.problems)
    print(f"saved {result.saved} links, woke {result.woken} unmatched deliveries, {bad} bad rows")
    return 1 if result.problems else 0


def _links_export(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    merchants: frozenset[int] | None = None
    if args.tenant is not None:
        tenant = next((tenant for tenant in _tenants(settings) if tenant.name == args.tenant), None)
        if tenant is None:
            print(
                f"relay: --tenant: no tenant {console.printable(args.tenant)} is configured", file=sys.stderr
            )
            return EXIT_MISCONFIGURED
        merchants = tenant.merchants

    async def export(store: Store) -> None:
        after: tuple[int, str] | None = None
        header = True
        while page := await link_actions.tenant_links(store, merchants, after=after, limit=5000):
            text = links_to_csv(page, args.tenant)
            sys.stdout.write(text if header else text.split("\n", 1)[1])
            header = False
            after = (page[-1].merchant_id, page[-1].external_id)
        if header:
            sys.stdout.write(links_to_csv([], args.tenant))

    _on_store(settings, export)
    return 0


def _webhooks_reprocess(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    _log_actions(settings)
    tenants = {tenant.name: tenant for tenant in _tenants(settings)}
    try:
        done = _on_store(
            settings,
            lambda store: webhook_actions.reprocess(
                store,
                args.webhook_id,
                tenant_named=tenants.get,
                retention_days=settings.relay_retention_days,
                now=datetime.now(UTC),
            ),
        )
    except webhook_actions.WebhookRefused as refused:
        print(f"relay: {console.printable(refused.detail)}", file=sys.stderr)
        return 1
    if args.json:
        print(console.as_json(done.answer()))
    elif done.delivery_id is None:
        reasons = "".join(f"\n  {console.printable(error)}" for error in done.errors)
        print(f"webhook {args.webhook_id}: {done.status}{reasons}")
    else:
        print(f"webhook {args.webhook_id}: {done.status}, delivery {done.delivery_id}; {WORKER_PICKS_UP}")
    return 0


def _webhooks_dismiss(args: argparse.Namespace) -> int:
    try:
        dismissal = webhook_actions.Dismissal(reason=args.reason)
    except ValidationError as error:
        reason = console.printable(error.errors(include_url=False)[0]["msg"].removeprefix("Value error, "))
        print(f"relay: --reason: {reason}", file=sys.stderr)
        return EXIT_MISCONFIGURED
    settings = _settings(serves_webhooks=False, runs_worker=False)
    _log_actions(settings)
    try:
        webhook = _on_store(
            settings,
            lambda store: webhook_actions.dismiss(store, args.webhook_id, dismissal, now=datetime.now(UTC)),
        )
    except webhook_actions.WebhookRefused as refused:
        print(f"relay: {console.printable(refused.detail)}", file=sys.stderr)
        return 1
    if args.json:
        print(console.as_json(webhook_actions.webhook_answer(webhook)))
    else:
        print(f"webhook {args.webhook_id}: dismissed ({console.printable(dismissal.reason)})")
    return 0


def _prune(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    older_than = datetime.now(UTC) - timedelta(days=settings.relay_retention_days)

    def counts(total: PruneResult) -> str:
        return f"{total.deliveries} deliveries, {total.attempts} attempts and {total.webhooks} webhooks"

    with console.progress_line() as show:
        total = _on_store(
            settings,
            lambda store: prune(
                store, older_than=older_than, progress=lambda so_far: show(f"pruned {counts(so_far)}")
            ),
        )
    print(
        f"pruned {counts(total)} finished before {older_than.isoformat(timespec='seconds')}; "
        "dead, unmatched and quarantined kept"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    now = datetime.now(UTC)

    running = frozenset(tenant.name for tenant in _tenants(settings))

    async def read(store: Store) -> console.Status:
        stats = await store.stats(now=now)
        beat, workers = await worker_beats(store, now=now)
        if beat is None:
            return console.Status(stats, None, None, workers, running)
        return console.Status(stats, beat.beat_at, beat.paused_reason, workers, running)

    status = _on_store(settings, read)
    # Ages as of now, after the reads: a worker beating while the store opened is never shown as ahead.
    shown_at = datetime.now(UTC)
    if args.json:
        print(console.as_json(console.status_document(status, shown_at)))
    else:
        print(console.status_text(status, shown_at))
    return 0


def _deliveries_list(args: argparse.Namespace) -> int:
    listing = _filter(DeliveryListing, args)
    settings = _settings(serves_webhooks=False, runs_worker=False)
    # One past the page, as the admin API reads: it tells whether older deliveries remain.
    found = _on_store(
        settings,
        lambda store: store.list_deliveries(listing, after=listing.cursor, limit=listing.limit + 1),
    )
    shown = found[: listing.limit]
    next_cursor = page_cursor([shown[-1].id]) if len(found) > len(shown) else None
    if args.json:
        print(console.as_json({"items": shown, "next_cursor": next_cursor}))
        return 0
    if shown:
        print(console.deliveries_table(shown, datetime.now(UTC)))
    else:
        print("no deliveries match", file=sys.stderr)
    if next_cursor is not None:
        print(f"older ones: the same command with --cursor {next_cursor}", file=sys.stderr)
    return 0


def _deliveries_show(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    detail = _on_store(settings, lambda store: store.get_delivery(args.delivery_id))
    if detail is None:
        print(f"relay: no delivery {args.delivery_id}", file=sys.stderr)
        return 1
    print(console.as_json(detail) if args.json else console.delivery_text(detail))
    return 0


def _replay(args: argparse.Namespace) -> int:
    if args.delivery_id is None:
        return _replay_matching(args)
    if any(getattr(args, name) is not None for name in DeliveryFilter.model_fields):
        print("relay: replay takes a delivery ID or filters, not both", file=sys.stderr)
        return EXIT_MISCONFIGURED
    settings = _settings(serves_webhooks=False, runs_worker=False)
    _log_actions(settings)

    async def replay(store: Store) -> tuple[StateChange, DeliveryDetail | None]:
        change = await actions.replay_delivery(store, args.delivery_id, now=datetime.now(UTC))
        return change, await store.get_delivery(args.delivery_id) if change.moved else None

    change, detail = _on_store(settings, replay)
    if detail is None:
        print(f"relay: {change.refusal or f'no delivery {args.delivery_id}'}", file=sys.stderr)
        return 1
    if args.json:
        print(console.as_json(detail))
    else:
        print(f"delivery {args.delivery_id}: {change.before} -> {detail.delivery.state}; {WORKER_PICKS_UP}")
    return 0


def _replay_matching(args: argparse.Namespace) -> int:
    if args.state is None:
        # Naming the states keeps a slip of the keyboard from replaying every dead and unmatched delivery.
        print(f"relay: replay needs an ID or --state ({', '.join(REPLAYABLE_STATES)})", file=sys.stderr)
        return EXIT_MISCONFIGURED
    where = _filter(ReplayFilter, args)
    settings = _settings(serves_webhooks=False, runs_worker=False)
    _log_actions(settings)
    with console.progress_line() as show:
        done = _on_store(
            settings,
            lambda store: actions.replay_deliveries(
                store, where, now=datetime.now(UTC), progress=lambda count: show(f"replayed {count}...")
            ),
        )
    if args.json:
        print(console.as_json(replay_answer(done)))
        return 0
    print(f"replayed {done.replayed} deliveries, skipped {len(done.skipped)}; {WORKER_PICKS_UP}")
    for skip in done.skipped[:MAX_REPORTED]:
        print(f"skipped delivery {skip.delivery_id}: {skip.reason}")
    if len(done.skipped) > MAX_REPORTED:
        print(f"... and {len(done.skipped) - MAX_REPORTED} more skipped for the same reasons")
    return 0


def _log_actions(settings: Settings) -> None:
    """An operator's change is logged as the admin API logs it: on stderr, so stdout stays the answer."""
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)


def _on_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    """`work` done on the store, beside a running relay (its readers never wait for the relay's writes)."""

    async def run() -> T:
        store = store_for(settings)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _migrate(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)
    configure_logging(settings.log_level, settings.log_format)
    version = _on_store(settings, lambda store: store.schema_version())
    log.info("relay.migrated", database=store_for(settings).location, schema_version=version)
    return 0


def _db_copy(args: argparse.Namespace) -> int:
    settings = _settings(serves_webhooks=False, runs_worker=False)

    def masked(url: str) -> str:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user, host = parts.netloc.rpartition("@")[::2]
        return parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}").geturl()

    print(f"copying {masked(args.source_url)} to {masked(args.target_url)}", file=sys.stderr)
    try:
        # The copy moves one batch at a time: a connection each way is all it uses.
        source, target = (
            create_store(url, timeout_s=settings.relay_store_timeout_s, pool_size=1)
            for url in (args.source_url, args.target_url)
        )
        with console.progress_bars() as progress:
            copying = copy_store(
                source,
                target,
                now=datetime.now(UTC),
                silent_after_s=WORKER_SILENT_AFTER_S,
                progress=progress,
            )
            check = asyncio.run(copying)
    # The stores' messages name where they are without a password.
    except (CopyRefused, DatabaseUnusable) as refusal:
        print(f"relay: db copy refused: {refusal}", file=sys.stderr)
        return EXIT_MISCONFIGURED
    except StoreUnavailable as error:
        print(f"relay: database unavailable: {error} (a copy cut short: empty the target)", file=sys.stderr)
        return 1
    rows = [[table, check.source[table], check.target[table]] for table in COPIED_TABLES]
    print(console.table(rows, ["TABLE", "SOURCE ROWS", "TARGET ROWS"]))
    if check.differing:
        print(f"relay: db copy: counts differ in {', '.join(check.differing)}", file=sys.stderr)
        return 1
    print(f"copied {sum(check.source.values())} rows: every table holds as many rows in the target")
    return 0
