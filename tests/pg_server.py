"""A throwaway PostgreSQL 15 server for the tests: its own folders and port, gone when the run ends."""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.processes import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The cluster's superuser: over TCP it signs in with a password, as the relay does in production.
ROLE = "relay"
PASSWORD = "relay-test-pg-password"
SYSTEM_USER = "postgres"


class ServerUnavailable(Exception):
    """No PostgreSQL server could be started here; the message says why in one line."""


class PostgresServer:
    """One PostgreSQL cluster in a temp folder, listening on 127.0.0.1 and on a socket folder of its own.

    PostgreSQL refuses to run as root, so as root every server command runs as the `postgres` system user.
    A guard process stops the server and removes its folders if this process dies without doing so.
    """

    def __init__(self) -> None:
        if not (PG_BIN / "postgres").is_file():
            raise ServerUnavailable(f"PostgreSQL 15 is not installed ({PG_BIN}/postgres; `make postgresql`)")
        self._as_user: list[str] = []
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise ServerUnavailable(f"running as root and there is no {SYSTEM_USER!r} user") from None
            self._as_user = ["runuser", "-u", SYSTEM_USER, "--"]
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self._guard: subprocess.Popen[bytes] | None = None
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None

    def url(self, dbname: str) -> str:
        """A DATABASE_URL for one database of this server, over TCP with the password."""
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def set_up(self) -> None:
        """Create the cluster and start it (raises ServerUnavailable, naming why)."""
        self._start_guard()
        self.sockets.mkdir()
        password_file = self.root / "password"
        password_file.write_text(PASSWORD)
        if self._owner is not None:
            for path in (self.root, self.sockets, password_file):
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)
        self._run(
            *self._as_user,
            str(PG_BIN / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            ROLE,
            "--pwfile",
            str(password_file),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # the cluster dies with the run; the server itself keeps fsync on
            what="initdb",
        )
        password_file.unlink()
        self.start()

    def start(self) -> None:
        """Start the server (again) on the same port; returns once it takes connections."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c max_connections=200"
        self._run(
            *self._as_user,
            str(PG_BIN / "pg_ctl"),
            "start",
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log),
            "--options",
            options,
            "--wait",
            "--timeout=60",
            what="pg_ctl start",
        )

    def stop(self) -> None:
        """Stop the server, as an operator's fast shutdown does: open sessions are cut off."""
        self._run(
            *self._as_user,
            str(PG_BIN / "pg_ctl"),
            "stop",
            "--pgdata",
            str(self.data),
            "--mode=fast",
            "--wait",
            what="pg_ctl stop",
        )

    def tear_down(self) -> None:
        """Stop the server if it runs and remove its folders; the guard then has nothing left to do."""
        if self._admin is not None:
            self._admin.close()
        _stop_and_remove(self.root, self._as_user)
        if self._guard is not None:
            assert self._guard.stdin is not None
            self._guard.stdin.close()
            self._guard.wait(timeout=30)

    def create_database(self, template: str = "template1") -> str:
        """A new database copied from `template` (which nobody may be connected to); its name."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        self._administer(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        self._administer(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _administer(self, statement: str) -> None:
        # On one connection kept open over the socket folder: a psql process per statement costs more than
        # the statement. A connection the server cut (a test stopped and restarted it) is opened again.
        if self._admin is None or self._admin.closed or self._admin.broken:
            conninfo = f"host={self.sockets} port={self.port} user={ROLE} dbname=postgres"
            self._admin = psycopg.connect(conninfo, autocommit=True)
        try:
            self._admin.execute(statement.encode())
        except psycopg.OperationalError:
            if not self._admin.broken:
                raise
            self._admin = None
            self._administer(statement)

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run one statement as the superuser over the socket folder; what psql printed."""
        return self._run(
            str(PG_BIN / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
            f"--host={self.sockets}",
            f"--port={self.port}",
            f"--username={ROLE}",
            f"--dbname={dbname}",
            f"--command={statement}",
            what="psql",
        )

    def _start_guard(self) -> None:
        # In its own session, so a Ctrl-C meant for pytest does not take the guard down with it.
        self._guard = subprocess.Popen(
            [sys.executable, "-m", "tests.pg_server", str(self.root), *self._as_user],
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def _run(self, *command: str, what: str) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ServerUnavailable(f"{what} failed: {error}") from None
        if done.returncode != 0:
            detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
            if what == "pg_ctl start" and self.log.exists():
                detail = self.log.read_text(errors="replace").strip().splitlines() or detail
            raise ServerUnavailable(f"{what} exited with {done.returncode}: {detail[-1] if detail else ''}")
        return done.stdout


def _stop_and_remove(root: Path, as_user: list[str]) -> None:
    if (root / "data" / "postmaster.pid").exists():
        subprocess.run(
            [*as_user, str(PG_BIN / "pg_ctl"), "stop", "--pgdata", str(root / "data"), "--mode=immediate"],
            capture_output=True,
            timeout=60,
            cwd="/",
            check=False,
        )
    shutil.rmtree(root, ignore_errors=True)


def _guard(root: Path, as_user: list[str]) -> None:
    """Wait for the test run to close our stdin (or die), then clean up whatever it left behind."""
    sys.stdin.buffer.read()
    _stop_and_remove(root, as_user)


if __name__ == "__main__":
    _guard(Path(sys.argv[1]), sys.argv[2:])
