"""docs/operations.md and the README walked by the real CLI: every command they show runs as shown."""

import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from relay.keys import SETTINGS
from tests.processes import free_port, relay_process, run_relay, sim_quivo_process, wait_until_ready
from tests.test_admin import ago, seed, sql

ROOT = Path(__file__).resolve().parents[1]
GUIDES = (ROOT / "docs" / "operations.md", ROOT / "README.md")
FENCE = re.compile(r"^\s*```(\S*)\s*$")
SHELL_BLOCKS = ("sh", "bash", "shell")
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
# Anything a shell must interpret: pipes, lists, redirections, and variables other than the $ID placeholder.
NEEDS_SHELL = re.compile(r"[|&;<>`]|\$(?!ID\b)")
LONG_RUNNING = ("serve", "worker", "sim-quivo")
# Commands the guides show that this test does not run, and why.
NOT_RUN_HERE = {
    "make test": "this test is part of `make test`: it would run itself",
    "make demo": "tests/test_demo.py runs scripts/demo.py, which is what `make demo` runs",
    "make console": "it runs until Ctrl-C; tests/test_console_demo.py runs its script and stops it",
    "relay db copy sqlite:///var/relay.db postgresql://relay:PASSWORD@db.internal:5432/relay": (
        "its PostgreSQL server is the operator's; tests/test_db_copy.py copies into a test server"
    ),
}
MERCHANT = 7  # the guide's own example merchant (PUT /admin/links/7/ORDER-1001)
UNMATCHED_ORDER = "ORDER-1001"


@dataclass(frozen=True)
class Shown:
    """A command as a guide shows it: continuation lines joined, its trailing comment dropped."""

    guide: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.guide}:{self.line}: {self.text}"


def shown_commands(path: Path) -> list[Shown]:
    """Every command in a guide's code blocks: each line of a shell block, and each `relay ...` line of an
    unlabelled block (the others there are sample output, a file tree or `make` targets)."""
    found: list[Shown] = []
    language: str | None = None  # None: outside any block
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        fence = FENCE.match(raw)
        if fence:
            language = fence[1] if language is None else None
            continue
        if language not in (*SHELL_BLOCKS, ""):
            continue
        start = start if pending else number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1].strip() + " "
            continue
        code, comment = _split_comment(pending + raw.strip())
        pending = ""
        # A comment may show another way: `relay replay ID   # or: relay replay --state dead --since 1d`.
        alternative = re.match(r"\s*or:\s*(relay\s.+)", comment)
        for text in (code.strip(), alternative[1].strip() if alternative else ""):
            if text and (language or text.split()[0] == "relay"):
                found.append(Shown(path.relative_to(ROOT).as_posix(), start, text))
    return found


def _split_comment(text: str) -> tuple[str, str]:
    """The command, and the comment after its first unquoted `#`."""
    quote = ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or text[index - 1].isspace()):
            return text[:index], text[index + 1 :]
    return text, ""


ALL_SHOWN = [shown for guide in GUIDES for shown in shown_commands(guide)]
# The guide's own variables (BASE, AUTH): set before each of its shell commands, BASE then pointed here.
VARIABLES = [shown.text for shown in ALL_SHOWN if ASSIGNMENT.match(shown.text)]
COMMANDS = [shown for shown in ALL_SHOWN if not ASSIGNMENT.match(shown.text)]


# ------------------------------------------------------------------------------------------- the site


@dataclass
class Site:
    """A relay's working folder as an operator finds it: settings in the environment, var/relay.db seeded."""

    cwd: Path
    env: dict[str, str]
    given_up: int  # a dead delivery that ran out of attempts (RELAY_MAX_ATTEMPTS)
    quarantined: int  # a quarantined webhook

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    def states(self) -> dict[int, str]:
        conn = sqlite3.connect(self.cwd / "var" / "relay.db")
        try:
            return dict(conn.execute("SELECT id, state FROM deliveries").fetchall())
        finally:
            conn.close()

    def placeholder_id(self, text: str) -> int:
        # The runbooks' $ID is a webhook's where the command is about webhooks, a delivery's elsewhere.
        return self.quarantined if "webhook" in text else self.given_up


SECRETS = {
    "BRINGG_WEBHOOK_TOKEN": "runbook-webhook-token-0123456789",
    "BRINGG_OAUTH_CLIENT_ID": "runbook-client",
    "BRINGG_OAUTH_CLIENT_SECRET": "runbook-oauth-secret-0123456789",
    "RELAY_ADMIN_TOKEN": "runbook-admin-token-0123456789",
    # The stand-in's own defaults.
    "QUIVO_API_KEY": "sim-key",
    "QUIVO_USERNAME": "sim-user",
    "QUIVO_PASSWORD": "sim-pass",
}


@pytest.fixture(scope="module")
def quivo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with sim_quivo_process(cwd=tmp_path_factory.mktemp("quivo")) as url:
        yield url


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A migrated var/relay.db with a few deliveries in each state the runbooks act on."""
    folder = tmp_path_factory.mktemp("site")
    migrated = run_relay("migrate", env={}, cwd=folder)
    assert migrated.returncode == 0, migrated.stderr
    path = folder / "var" / "relay.db"
    store = SimpleNamespace(
        app={SETTINGS: SimpleNamespace(database_path=path, database_url=f"sqlite:///{path}")}
    )
    given_up = seed(
        store,
        state="dead",
        merchant_id=MERCHANT,
        attempts=20,
        created_at=ago(hours=1),
        last_error="gave up after RELAY_MAX_ATTEMPTS (20) attempts; last answer 503",
    )
    seed(store, state="dead", merchant_id=MERCHANT, created_at=ago(hours=1), last_error="Quivo answered 400")
    seed(store, state="unmatched", merchant_id=MERCHANT, external_id=UNMATCHED_ORDER)
    seed(store, state="pending", merchant_id=MERCHANT)
    seed(store, state="delivered", merchant_id=MERCHANT, inquiry_id=90210)
    [quarantined] = sql(
        store,
        "INSERT INTO webhooks (received_at, request_id, status, webhook_type, merchant_id, errors, body) "
        "VALUES (?, 'seeded', 'quarantined', 'rating_submitted', ?, ?, ?) RETURNING id",
        ago(minutes=5),
        MERCHANT,
        json.dumps(["rating: field required"]),
        b'{"webhook_type": "rating_submitted", "merchant_id": 7}',
    )
    return folder, given_up, int(quarantined["id"])


@pytest.fixture
def site(tmp_path: Path, seeded: tuple[Path, int, int], quivo: str) -> Site:
    folder, given_up, quarantined = seeded
    shutil.copytree(folder, tmp_path / "site")
    env = {"RELAY_HOST": "127.0.0.1", "PORT": str(free_port()), "QUIVO_BASE_URL": quivo, **SECRETS}
    return Site(tmp_path / "site", env, given_up, quarantined)


# ------------------------------------------------------------------------------------- running them


def run_shown(shown: Shown, site: Site) -> str:
    """Run the command as shown (a server started first where it talks to one); its output."""
    for csv_name in re.findall(r"\S+\.csv\b", shown.text):
        (site.cwd / csv_name).write_text(
            f"merchant_id,external_id,inquiry_id\n{MERCHANT},{UNMATCHED_ORDER},90210\n"
        )
    if "$BASE" in shown.text or "relay.log" in shown.text:
        with serving(site):
            return _run(shown, site)
    return _run(shown, site)


def _run(shown: Shown, site: Site) -> str:
    identifier = str(site.placeholder_id(shown.text))
    words = [identifier if word in ("ID", "$ID") else word for word in shlex.split(shown.text)]
    if words[0] != "relay" or NEEDS_SHELL.search(shown.text):
        return _run_in_shell(shown, site, identifier)
    if words[1] in LONG_RUNNING:
        _start_and_stop(words[1:], site)
        return ""
    result = run_relay(*words[1:], env=site.env, cwd=site.cwd)
    assert result.returncode == 0, f"{shown}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _run_in_shell(shown: Shown, site: Site, identifier: str) -> str:
    for tool in ("jq", "curl"):
        if re.search(rf"\b{tool}\b", shown.text) and shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make test installs it)")
    script = "\n".join(["set -euo pipefail", *VARIABLES, f"BASE={site.base}", f"ID={identifier}", shown.text])
    # `relay` in a pipeline is this checkout's, as the operator's is the installed one.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": path, "HOME": os.environ.get("HOME", "/"), "LOG_FORMAT": "json", **site.env},
        cwd=site.cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{shown}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@contextmanager
def serving(site: Site) -> Iterator[None]:
    """`relay serve --no-worker` on the site, its log in relay.log as the guide's jq recipes read it: states
    move only by the commands under test."""
    log = site.cwd / "relay.log"
    with relay_process("serve", "--no-worker", env=site.env, cwd=site.cwd, log_path=log) as process:
        wait_until_ready(f"{site.base}/healthz", process)
        yield


def _start_and_stop(args: list[str], site: Site) -> None:
    """A long-running command: started as shown (on a free port), seen working, stopped by SIGTERM, exit 0."""
    log = site.cwd / "process.log"
    port_args = ["--port", "0"] if args[0] == "sim-quivo" else []  # its default port may be taken here
    with relay_process(*args, *port_args, env=site.env, cwd=site.cwd, log_path=log) as process:
        if args[0] == "serve":
            wait_until_ready(f"{site.base}/healthz", process)
        else:
            marker = "worker.started" if args[0] == "worker" else "listening on"
            wait_for(lambda: marker in log.read_text(), f"{marker!r} in the output of relay {args[0]}")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        time.sleep(0.05)


# -------------------------------------------------------------------------- what the guide says they do

Check = Callable[[Site, str], bool]
# Cheap checks of what the guide says a command does, by the command's text; a command not listed here is held
# to running as shown (exit 0).
CHECKS: list[tuple[str, str, Check]] = [
    (
        r"^relay status$",
        "shows the deliveries by state",
        lambda site, out: "dead" in out and "unmatched" in out,
    ),
    (
        r"^relay deliveries list --state unmatched$",
        "lists the unmatched delivery's order",
        lambda site, out: UNMATCHED_ORDER in out,
    ),
    (
        r"@csv",
        "prints the unmatched order as CSV",
        lambda site, out: f'{MERCHANT},"{UNMATCHED_ORDER}"' in out,
    ),
    (
        r"^relay links import",
        "saves the link and wakes the unmatched delivery",
        lambda site, out: (
            re.search(r"saved 1 links?, woke 1 unmatched deliver(y|ies), 0 bad rows", out) is not None
            and "unmatched" not in site.states().values()
        ),
    ),
    (r"^relay deliveries show \$?ID$", "shows the last error", lambda site, out: "RELAY_MAX_ATTEMPTS" in out),
    (
        r"^relay replay \$?ID$",
        "replays the delivery",
        lambda site, out: site.states()[site.given_up] == "pending",
    ),
    (
        r"^relay replay --state dead",
        "replays every dead delivery",
        lambda site, out: "dead" not in site.states().values(),
    ),
    (
        r"xargs -r -n1 relay replay",
        "replays the delivery that ran out of attempts, only it",
        lambda site, out: site.states()[site.given_up] == "pending" and "dead" in site.states().values(),
    ),
    (r"/readyz\" \| jq", "prints every reason as JSON", lambda site, out: "problems" in json.loads(out)),
    (r"/oauth/token", "prints the token's lifetime", lambda site, out: out.strip().isdigit()),
    (r"connectivity_check", "answers 202 ignored", lambda site, out: " 202" in out and "ignored" in out),
    (r"-X PUT .*admin/links", "saves the link", lambda site, out: "90210" in out),
    (r"/login", "prints 200 for working credentials", lambda site, out: out.strip() == "200"),
    (
        r"/replay\" \| jq \.delivery\.state",
        "says the delivery is pending",
        lambda site, out: out.strip() == '"pending"',
    ),
    (r"admin/deliveries/replay\"", "says how many were replayed", lambda site, out: '"replayed"' in out),
    (r"/reprocess", "answers with the webhook's status", lambda site, out: '"status"' in out),
    (
        r"webhooks\?status=quarantined&since",
        "lists the quarantined webhook",
        lambda site, out: '"errors"' in out,
    ),
]


@pytest.mark.parametrize("shown", COMMANDS, ids=str)
def test_each_command_the_guides_show_runs_as_shown(shown: Shown, site: Site):
    if shown.text in NOT_RUN_HERE:
        pytest.skip(NOT_RUN_HERE[shown.text])
    out = run_shown(shown, site)

    for pattern, says, check in CHECKS:
        if re.search(pattern, shown.text):
            assert check(site, out), f"{shown}: the guide says it {says}; it printed:\n{out}"


def test_the_guides_are_read_whole():
    """The walk above is only as good as the reading: every kind of command the guides show is found."""
    texts = [shown.text for shown in COMMANDS]
    assert sum(text.startswith("relay ") for text in texts) >= 10, texts
    assert any("| jq" in text for text in texts), texts
    assert any(text.startswith("curl ") for text in texts), texts
    assert any(text.startswith("BASE=") for text in VARIABLES), VARIABLES
