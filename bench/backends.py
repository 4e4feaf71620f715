"""Where a bench phase keeps its data: a new SQLite file, or a new database of one throwaway PostgreSQL."""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from tests.pg_server import PostgresServer


class Backend(Protocol):
    """A kind of database the relay runs on, handing out new databases by their DATABASE_URL."""

    name: str  # the title of its table of results

    def fresh(self, label: str) -> str:
        """The URL of a new, empty database."""

    def copy(self, url: str, label: str) -> str:
        """The URL of a new database holding what `url` holds (no process may have it open)."""

    def server_pid(self) -> int | None:
        """The database server's main process, whose children do the relay's work; None without one."""


class SqliteFiles:
    """SQLite: a file per database in the bench's work folder."""

    name = "SQLite"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def fresh(self, label: str) -> str:
        return f"sqlite:///{self.workdir / f'{label}.db'}"

    def server_pid(self) -> None:
        return None  # the relay's own processes do SQLite's work

    def copy(self, url: str, label: str) -> str:
        target_url = self.fresh(label)
        source = sqlite3.connect(url.removeprefix("sqlite:///"))
        target = sqlite3.connect(target_url.removeprefix("sqlite:///"))
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        return target_url


class PostgresDatabases:
    """PostgreSQL: a database per use on one server, started for the run by the tests' own helper."""

    name = "PostgreSQL"

    def __init__(self, server: PostgresServer) -> None:
        self.server = server

    def server_pid(self) -> int:
        # The first line of postmaster.pid is the postmaster's.
        return int((self.server.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def fresh(self, label: str) -> str:
        return self.server.url(self.server.create_database())

    def copy(self, url: str, label: str) -> str:
        # A template copy is a file copy on the server: seconds for a million rows.
        return self.server.url(self.server.create_database(template=url.rsplit("/", 1)[1]))


# A server in service writes its WAL into files its checkpoints recycled; a new cluster creates every one,
# 16 MB of zeros written and flushed while each commit waits (28-77 ms here, about one each 10 s at 1,000
# webhooks a second). WAL written ahead up to max_wal_size (1 GB), then checkpointed, leaves 500+ MB of
# files recycled, more than the phases before the runs at 1,000 req/s write; later checkpoints recycle as
# in service.
RECYCLED_WAL_MB = 1024


def recycle_wal(server: PostgresServer) -> None:
    """Leave the server with WAL files made and ready to write into, as a server in service has."""
    server.sql(
        "SELECT count(pg_logical_emit_message(false, 'bench', repeat('x', 1048576))) "
        f"FROM generate_series(1, {RECYCLED_WAL_MB})"
    )
    server.sql("CHECKPOINT")


@contextmanager
def postgres_server() -> Iterator[PostgresDatabases]:
    """A throwaway PostgreSQL 15 server (its own folders and port) for the run; stopped and removed after."""
    server = PostgresServer()
    try:
        server.set_up()
        recycle_wal(server)
        yield PostgresDatabases(server)
    finally:
        server.tear_down()
