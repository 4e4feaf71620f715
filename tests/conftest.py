"""Shared test fixtures: settings on a temporary database, the relay app, and the vendors' fixtures."""

import asyncio
import io
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import pytest
import structlog

from relay.logs import bind_request_id, configure_logging
from relay.settings import Settings
from relay.store import create_store
from relay.store.api import Store
from relay.store.postgres.store import PostgresStore
from relay.store.sqlite.store import SqliteStore
from tests.pg_server import PostgresServer, ServerUnavailable

# The vendors' own payloads live beside the project in ../shared; tests/fixtures holds unedited copies for a
# clone that sits elsewhere.
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
FIXTURES = SHARED_FIXTURES if SHARED_FIXTURES.is_dir() else Path(__file__).resolve().parent / "fixtures"

# The console's browser fixtures (browser, console, page, screenshot), for its flows' modules.
pytest_plugins = ["tests.console_harness"]

WEBHOOK_TOKEN = "test-webhook-token-0123456789"
AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}


def fixture_bytes(name: str) -> bytes:
    """A vendor fixture, byte for byte."""
    return (FIXTURES / name).read_bytes()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*names): the backends the test's relay runs on, once each (unmarked: SQLite alone); "
        "a mark on the test wins over its module's",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A module marked `backends("sqlite", "postgresql")` runs each test that touches the database once per
    # backend; a test marked `backends("sqlite")` in it stays on SQLite, its mark saying why.
    mark = metafunc.definition.get_closest_marker("backends")
    if mark is not None and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", mark.args, ids=list(mark.args))


@pytest.fixture
def backend() -> str:
    """The backend the test's relay runs on: SQLite, unless a `backends` mark names others."""
    return "sqlite"


@pytest.fixture
def database_url(backend: str, tmp_path: Path, database_url_for: Callable[..., str]) -> str:
    """The DATABASE_URL of the test's relay, a fresh migrated database: tmp_path/relay.db on SQLite."""
    return database_url_for(backend, tmp_path / "relay.db")


@pytest.fixture(autouse=True)
def _database_before_its_users(request: pytest.FixtureRequest) -> None:
    # Set up before the apps and processes the test starts on it, so dropped only after they stopped.
    if "database_url" in request.fixturenames:
        request.getfixturevalue("database_url")


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    """Settings on the test's fresh database; keyword overrides use field names."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "bringg_webhook_token": WEBHOOK_TOKEN,
            "log_format": "json",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


# How a PostgreSQL test skipped for want of a server says so: the run ends with one line naming why.
NO_POSTGRES = "no PostgreSQL server: "


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole run; stopped, its folders removed, at the end.

    When none can be started the PostgreSQL tests fail in CI (CI=true) and are skipped elsewhere.
    """
    server: PostgresServer | None = None
    try:
        server = PostgresServer()
        server.set_up()
    except ServerUnavailable as error:
        if server is not None:
            server.tear_down()
        _no_postgres(str(error))
    try:
        yield server
    finally:
        server.tear_down()


def _no_postgres(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"no PostgreSQL server for the tests: {reason}", pytrace=False)
    pytest.skip(f"{NO_POSTGRES}{reason}")


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The name of an empty database of its own on the test server, dropped after the test."""
    name = postgres_server.create_database()
    try:
        yield name
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A SQLite store opened (and so migrated) on a file of its own; closed after the test."""
    opened = SqliteStore(tmp_path / "relay.db", timeout_s=5)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def postgres_store(
    postgres_server: PostgresServer, postgres_database: str
) -> AsyncIterator[PostgresStore]:
    """A PostgreSQL store opened (and so migrated) on a database of its own; closed after the test."""
    opened = PostgresStore(postgres_server.url(postgres_database), timeout_s=5, pool_size=2)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """configure_logging's JSON into a string; the configuration before it restored after."""
    stream = io.StringIO()
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json", stream)
        yield stream
    finally:
        structlog.configure(**saved)
        root.handlers[:], root.level = handlers, level
        bind_request_id(None)


BACKENDS = ("sqlite", "postgresql")
STORE_TIMEOUT_S = 5
STORE_POOL_SIZE = 4


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """A migrated database each test's database is copied from, so no test waits for the migrations."""
    name = postgres_server.create_database()
    # In a thread of its own: the test's event loop stays the current one in this thread.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _migrate(postgres_server.url(name))).result()
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file each test's file is copied from: the migrations cost far more than a copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "relay.db"
    # In a thread of its own: the test's event loop stays the current one in this thread.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _migrate(f"sqlite:///{path}")).result()
    return path


async def _migrate(url: str) -> None:
    store = create_store(url, timeout_s=STORE_TIMEOUT_S, pool_size=1)
    await store.open()
    await store.close()


@pytest.fixture
def database_url_for(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., str]:
    """The URL of a fresh, migrated database of its own on the backend named, gone after the test; a SQLite
    file at `path` if given."""

    def fresh(backend: str, path: Path | None = None) -> str:
        if backend == "sqlite":
            path = path or tmp_path / f"relay-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
            return f"sqlite:///{path}"
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = server.create_database(template=request.getfixturevalue("postgres_template"))
        request.addfinalizer(lambda: server.drop_database(name))
        return server.url(name)

    return fresh


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, database_url_for: Callable[[str], str]) -> str:
    """A fresh database on each backend in turn: the test runs once on SQLite, once on PostgreSQL."""
    return database_url_for(request.param)


@pytest.fixture
async def opened_store(
    database_url_for: Callable[[str], str],
) -> AsyncIterator[Callable[[str], Awaitable[Store]]]:
    """Opens a store on a DATABASE_URL; every store it opened is closed after the test.

    It asks for `database_url_for` so that its stores close before that fixture drops their databases.
    """
    opened: list[Store] = []

    async def open_on(url: str) -> Store:
        store = create_store(url, timeout_s=STORE_TIMEOUT_S, pool_size=STORE_POOL_SIZE)
        await store.open()
        opened.append(store)
        return store

    try:
        yield open_on
    finally:
        for store in reversed(opened):
            await store.close()


@pytest.fixture
async def store(store_url: str, opened_store: Callable[[str], Awaitable[Store]]) -> Store:
    """An opened store on a fresh database, on each backend in turn; closed after the test."""
    return await opened_store(store_url)


@pytest.fixture
async def second_store(
    store_url: str, opened_store: Callable[[str], Awaitable[Store]], store: Store
) -> Store:
    """Another store on the same database as `store`, as a second relay process opens it."""
    return await opened_store(store_url)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # From the skips' reports, which reach this process from every pytest worker (pytest-xdist).
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        if NO_POSTGRES in reason:
            why = reason.split(NO_POSTGRES, 1)[1]
            terminalreporter.write_line(f"PostgreSQL tests skipped: {why}", yellow=True)
            return


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
