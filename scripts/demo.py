"""`make demo`: the relay end to end, from Bringg webhooks in to ratings on Quivo stand-ins, for two tenants.

Starts two `relay sim-quivo` (a Quivo account each) and `relay serve` with a tenants file of two tenants in a
fresh temporary folder (never the developer's var/relay.db), links one order to an inquiry, posts the vendor
fixtures and a few hand-made webhooks to each tenant's URL, waits for the worker, then shows what each Quivo
account received and where every delivery stands. Exits 0 only when every rating that should reach Quivo
reached its own tenant's account exactly once and the relay stopped cleanly.
"""

import asyncio
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from relay.domain.delivery import WAITING_STATES
from relay.store import create_store
from relay.store.api import Store
from relay.store.filters import DeliveryFilter

# The vendors' payloads beside the project, or the unedited copies in tests/fixtures for a clone elsewhere.
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
FIXTURES = _SHARED if _SHARED.is_dir() else Path(__file__).resolve().parents[1] / "tests" / "fixtures"
WEBHOOK_TOKEN = "demo-webhook-token-0123456789"
MERCHANT_ID = 1
# The second tenant: its own merchant, Bringg token, URL and Quivo account (a second stand-in).
GLOBEX = "globex"
GLOBEX_MERCHANT_ID = 2
GLOBEX_TOKEN = "demo-globex-token-9876543210"
GLOBEX_LOGIN = {"api-key": "globex-key", "username": "globex-user", "password": "globex-pass"}
# The order in rating_submitted.json, linked to an inquiry through `relay links import`.
FIXTURE_ORDER = "12443523"
FIXTURE_INQUIRY = 1001
# The stand-in's default credentials, given to the relay as its Quivo login.
QUIVO_LOGIN = {"QUIVO_API_KEY": "sim-key", "QUIVO_USERNAME": "sim-user", "QUIVO_PASSWORD": "sim-pass"}

STARTUP_TIMEOUT_S = 20.0
SETTLE_TIMEOUT_S = 15.0
# The relay's default shutdown grace is 10 s; past that a stop is a hang, not a drain.
STOP_TIMEOUT_S = 15.0
LISTENING = re.compile(r"listening on (http://\S+)")

# Reference tags end every rating message (the relay's contract with reconciliation), so the
# demo can tell which rating each Quivo message carries: tag -> the inquiry it must land on.
MUST_ARRIVE = {
    "[bringg:1:3452]": FIXTURE_INQUIRY,
    "[bringg:1:3460]": 2002,
    "[bringg:1:3461:20240502T101500.000000Z]": 2003,
}
# The second tenant's ratings, each on its own account's inquiry; none may reach the first account.
GLOBEX_MUST_ARRIVE = {"[bringg:2:5001]": 3001, "[bringg:2:5002]": 3002}
UNLINKED_TAG = "[bringg:1:3462]"
UNLINKED_RATING_ID = 3462
# Why a delivery in this state is not (or no longer) going to Quivo, when the row has no error.
STATE_NOTES = {
    "unmatched": "no link or pattern match for this order yet",
    "superseded": "a newer version of the rating replaced it",
    "pending": "waiting for the worker",
}


class DemoError(Exception):
    """The demo cannot go on (a process did not start or stopped answering); says what to look at."""


@dataclass(frozen=True)
class Post:
    """One webhook the demo sends, and the answer the relay should give it."""

    label: str
    body: bytes
    http_status: int
    status: str
    token: str = WEBHOOK_TOKEN


@dataclass
class Processes:
    """The background processes, so whatever happens they are stopped at the end."""

    sim: asyncio.subprocess.Process | None = None
    globex_sim: asyncio.subprocess.Process | None = None
    relay: asyncio.subprocess.Process | None = None
    relay_url: str = ""


def main() -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="relay-demo-"))
    print(
        "The relay demo: Bringg rating webhooks in, ratings on Quivo customer inquiries out, for two tenants."
    )
    print(f"Working folder: {workdir} (database and logs; kept for you to look at)\n")
    try:
        problems = asyncio.run(run_demo(workdir))
    except DemoError as error:
        print(f"\nThe demo could not run: {error}")
        return 1
    print(f"\nRelay log (JSON lines): {workdir / 'relay.log'}")
    print(f"Took {time.monotonic() - started:.1f} s.")
    if problems:
        print("\nNOT OK:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(
        "\nOK: every rating reached its inquiry on its own tenant's Quivo account exactly once; nothing was "
        "posted twice or to another tenant's account."
    )
    return 0


async def run_demo(workdir: Path) -> list[str]:
    """Run the whole story; return what went wrong (empty when all is well)."""
    processes = Processes()
    try:
        problems = await exercise(workdir, processes)
        assert processes.relay is not None and processes.sim is not None and processes.globex_sim is not None
        relay_code = await stop(processes.relay)
        sim_code = await stop(processes.sim)
        await stop(processes.globex_sim)
    except aiohttp.ClientError as error:
        raise DemoError(
            f"lost contact: {error}\nrelay.log ends with:\n{tail(workdir / 'relay.log')}"
        ) from None
    finally:
        # Still running here only when the demo broke off; leave nothing behind.
        for process in (processes.relay, processes.sim, processes.globex_sim):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    print(f"\nStopped with SIGTERM: relay exited {relay_code}, sim-quivo exited {sim_code}.")
    if relay_code != 0:
        problems.append(f"the relay exited {relay_code} on SIGTERM, not 0 (see relay.log)")
    return problems


async def exercise(workdir: Path, processes: Processes, *, admin_token: str | None = None) -> list[str]:
    """Start both processes, link, post, wait for the worker, show the outcome; return the problems.

    With `admin_token`, the relay serves its admin API and console too (`make console`).
    """
    processes.sim = await start_relay_command(
        ["sim-quivo", "--port", "0"], base_env(), workdir, workdir / "sim-quivo.log"
    )
    processes.globex_sim = await start_relay_command(
        ["sim-quivo", "--port", "0", *(f"--{option}={value}" for option, value in GLOBEX_LOGIN.items())],
        base_env(),
        workdir,
        workdir / "sim-quivo-globex.log",
    )
    sim_url = await sim_address(processes.sim, workdir / "sim-quivo.log")
    globex_sim_url = await sim_address(processes.globex_sim, workdir / "sim-quivo-globex.log")
    print(f"Quivo stand-in of tenant default (relay sim-quivo): {sim_url}")
    print(f"Quivo stand-in of tenant {GLOBEX} (relay sim-quivo, its own login): {globex_sim_url}")

    port = free_port()
    env = relay_env(workdir, sim_url, port)
    if admin_token is not None:
        env["RELAY_ADMIN_TOKEN"] = admin_token
    env["RELAY_TENANTS_FILE"] = str(write_tenants_file(workdir, sim_url, globex_sim_url))
    relay_url = processes.relay_url = f"http://127.0.0.1:{port}"
    processes.relay = await start_relay_command(["serve"], env, workdir, workdir / "relay.log")
    problems: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await wait_until_ready(session, relay_url, processes.relay, workdir / "relay.log")
        print(f"Relay (relay serve): {relay_url}, ready\n")
        # The demo looks at the relay's database through the store, as every part of the relay does.
        store = create_store(env["DATABASE_URL"], timeout_s=10.0, pool_size=2)
        await store.open()
        try:
            problems += await import_links(workdir, env)
            print("\nPosting webhooks to POST /webhooks/bringg (the tenant named default):")
            problems += await post_all(session, f"{relay_url}/webhooks/bringg", webhooks_to_post())
            print(f"\nPosting webhooks to POST /webhooks/bringg/{GLOBEX} (tenant {GLOBEX}):")
            problems += await post_all(session, f"{relay_url}/webhooks/bringg/{GLOBEX}", globex_webhooks())
            problems += await wait_for_worker(store)
            received = await quivo_ratings(session, sim_url)
            globex_received = await quivo_ratings(session, globex_sim_url)
            deliveries = await read_deliveries(store)
            webhooks = (await store.stats(now=datetime.now(UTC))).webhooks
        finally:
            await store.close()
    print_received("default", received)
    print_received(GLOBEX, globex_received)
    print_deliveries(deliveries)
    print_webhook_counts(webhooks)
    return problems + check_outcome(received, deliveries) + check_globex(received, globex_received)


def base_env() -> dict[str, str]:
    """Only what a Python process needs: the developer's own relay settings must not leak in."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR")
    return {key: value for key, value in os.environ.items() if key in keep}


def relay_env(workdir: Path, sim_url: str, port: int) -> dict[str, str]:
    return {
        **base_env(),
        "BRINGG_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "QUIVO_BASE_URL": sim_url,
        **QUIVO_LOGIN,
        "RELAY_INQUIRY_ID_PATTERN": r"^INQ-(\d+)$",
        # Short retries and sweeps so the demo finishes in seconds, not minutes.
        "RELAY_RETRY_BASE_S": "0.2",
        "RELAY_RETRY_MAX_S": "1",
        "RELAY_SWEEP_INTERVAL_S": "0.5",
        "LOG_FORMAT": "json",
        "DATABASE_URL": f"sqlite:///{workdir / 'relay.db'}",
        "RELAY_HOST": "127.0.0.1",
        "PORT": str(port),
    }


def write_tenants_file(workdir: Path, sim_url: str, globex_sim_url: str) -> Path:
    """Two tenants, as an operator writes them: `default` is the URL registered before tenants
    (POST /webhooks/bringg), globex has its own; each its merchant, token and Quivo account. The file
    holds secrets itself, so its owner alone may read it (the relay refuses it otherwise)."""
    path = workdir / "tenants.toml"
    path.write_text(
        f"""[tenants.default]
merchants = [{MERCHANT_ID}]
[tenants.default.bringg]
webhook_tokens = ["{WEBHOOK_TOKEN}"]
[tenants.default.quivo]
base_url = "{sim_url}"
api_key = {{ env = "QUIVO_API_KEY" }}
username = "{QUIVO_LOGIN["QUIVO_USERNAME"]}"
password = {{ env = "QUIVO_PASSWORD" }}

[tenants.{GLOBEX}]
merchants = [{GLOBEX_MERCHANT_ID}]
message_template = "Globex rating: {{stars}}/5\\n{{comment}}"
[tenants.{GLOBEX}.bringg]
webhook_tokens = ["{GLOBEX_TOKEN}"]
[tenants.{GLOBEX}.quivo]
base_url = "{globex_sim_url}"
api_key = "{GLOBEX_LOGIN["api-key"]}"
username = "{GLOBEX_LOGIN["username"]}"
password = "{GLOBEX_LOGIN["password"]}"
""",
        encoding="utf-8",
    )
    path.chmod(0o600)
    print(f"Tenants file: {path} (default: merchant {MERCHANT_ID}; {GLOBEX}: merchant {GLOBEX_MERCHANT_ID})")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_relay_command(
    args: Sequence[str], env: Mapping[str, str], workdir: Path, log_path: Path
) -> asyncio.subprocess.Process:
    """`relay ARGS` in the background, stdout and stderr into log_path."""
    with log_path.open("ab") as log_file:
        # The child keeps its own copy of the descriptor, so ours can close right away.
        return await asyncio.create_subprocess_exec(
            *relay_command(args), env=dict(env), cwd=workdir, stdout=log_file, stderr=log_file
        )


def relay_command(args: Sequence[str]) -> list[str]:
    # The interpreter running the demo, so the relay comes from the same virtual environment.
    return [sys.executable, "-m", "relay", *args]


async def sim_address(sim: asyncio.subprocess.Process, log_path: Path) -> str:
    """The stand-in's URL, from the first line it prints once it listens."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        found = LISTENING.search(await asyncio.to_thread(log_path.read_text))
        if found:
            return found.group(1)
        if sim.returncode is not None:
            raise DemoError(f"relay sim-quivo exited {sim.returncode}:\n{tail(log_path)}")
        await asyncio.sleep(0.05)
    raise DemoError(f"relay sim-quivo printed no address within {STARTUP_TIMEOUT_S:g} s:\n{tail(log_path)}")


async def wait_until_ready(
    session: aiohttp.ClientSession, relay_url: str, relay: asyncio.subprocess.Process, log_path: Path
) -> None:
    """/healthz first (the process serves), then /readyz (it can take webhooks; may be 503 a moment)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for path in ("/healthz", "/readyz"):
        while True:
            if relay.returncode is not None:
                raise DemoError(f"relay serve exited {relay.returncode}:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise DemoError(f"relay serve not ready within {STARTUP_TIMEOUT_S:g} s:\n{tail(log_path)}")
            try:
                async with session.get(relay_url + path) as answer:
                    if answer.status == 200:
                        break
            except aiohttp.ClientError:
                pass  # Not listening yet.
            await asyncio.sleep(0.1)


def tail(log_path: Path, lines: int = 15) -> str:
    return "\n".join(f"    {line}" for line in log_path.read_text().splitlines()[-lines:])


async def import_links(workdir: Path, env: Mapping[str, str]) -> list[str]:
    """Link the fixture's order to an inquiry, the way an operator would: a CSV and `relay links import`."""
    csv_path = workdir / "links.csv"
    csv_path.write_text(
        f"merchant_id,external_id,inquiry_id\n{MERCHANT_ID},{FIXTURE_ORDER},{FIXTURE_INQUIRY}\n"
    )
    print(f"Linking merchant {MERCHANT_ID}'s order {FIXTURE_ORDER} to Quivo inquiry {FIXTURE_INQUIRY}:")
    print(f"  relay links import {csv_path}")
    process = await asyncio.create_subprocess_exec(
        *relay_command(["links", "import", str(csv_path)]),
        env=dict(env),
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode == 0:
        print("  -> imported")
        return []
    print(f"  -> exited {process.returncode}; the demo goes on without the link. Its stderr:")
    for line in stderr.decode(errors="replace").strip().splitlines()[-10:]:
        print(f"     {line}")
    return [f"`relay links import` exited {process.returncode}, so order {FIXTURE_ORDER} has no link"]


def webhooks_to_post() -> list[Post]:
    """The vendor fixtures byte for byte, then hand-made webhooks that show each path a rating can take."""
    bringg = FIXTURES / "bringg"
    five_stars = rating_webhook(3460, 5, "INQ-2002", comment="Lovely driver, right on time.")
    return [
        Post(
            "fixture rating_submitted.doc-example.txt (docs' sample, not JSON)",
            (bringg / "rating_submitted.doc-example.txt").read_bytes(),
            202,
            "quarantined",
        ),
        Post(
            "fixture rating_submitted.doc-nulls.txt (docs' sample, not JSON)",
            (bringg / "rating_submitted.doc-nulls.txt").read_bytes(),
            202,
            "quarantined",
        ),
        Post(
            f"fixture rating_submitted.json (4 stars, order {FIXTURE_ORDER})",
            (bringg / "rating_submitted.json").read_bytes(),
            202,
            "accepted",
        ),
        Post(
            "fixture rating_submitted.nulls.json (every field null)",
            (bringg / "rating_submitted.nulls.json").read_bytes(),
            202,
            "quarantined",
        ),
        Post("5 stars with a comment, order INQ-2002", five_stars, 202, "accepted"),
        Post(
            "1 star with two reasons, order INQ-2003",
            rating_webhook(3461, 1, "INQ-2003", reasons=("Late delivery", "Package damaged")),
            202,
            "accepted",
        ),
        Post(
            "update of that rating: now 2 stars",
            rating_webhook(
                3461,
                2,
                "INQ-2003",
                comment="Support sorted it out.",
                reasons=("Late delivery",),
                updated_at="2024-05-02T10:15:00.000Z",
            ),
            202,
            "accepted",
        ),
        Post("the 5-star webhook again (Bringg resends)", five_stars, 200, "duplicate"),
        Post(
            "3 stars for order ORDER-77 (no link, no pattern match)",
            rating_webhook(UNLINKED_RATING_ID, 3, "ORDER-77"),
            202,
            "accepted",
        ),
        Post("a task_done webhook (not a rating)", task_done_webhook(), 202, "ignored"),
        Post("9 stars (Bringg's scale is 1..5)", rating_webhook(3463, 9, "INQ-2004"), 202, "quarantined"),
    ]


def globex_webhooks() -> list[Post]:
    """The second tenant's ratings on its own URL, and what its URL refuses or holds back."""
    return [
        Post(
            "5 stars, order INQ-3001",
            rating_webhook(5001, 5, "INQ-3001", comment="Perfect.", merchant_id=GLOBEX_MERCHANT_ID),
            202,
            "accepted",
            GLOBEX_TOKEN,
        ),
        Post(
            "4 stars, order INQ-3002",
            rating_webhook(5002, 4, "INQ-3002", merchant_id=GLOBEX_MERCHANT_ID),
            202,
            "accepted",
            GLOBEX_TOKEN,
        ),
        Post(
            "the default tenant's token on this URL",
            rating_webhook(5003, 4, "INQ-3003", merchant_id=GLOBEX_MERCHANT_ID),
            401,
            "Unauthorized",
        ),
        Post(
            f"merchant {MERCHANT_ID} (the default tenant's) on this URL",
            rating_webhook(5004, 3, "INQ-3004"),
            202,
            "quarantined",
            GLOBEX_TOKEN,
        ),
    ]


def rating_webhook(
    rating_id: int,
    stars: int,
    external_id: str,
    *,
    comment: str | None = None,
    reasons: Sequence[str] = (),
    updated_at: str | None = None,
    merchant_id: int = MERCHANT_ID,
) -> bytes:
    payload = {
        "webhook_type": "rating_submitted",
        "merchant_id": merchant_id,
        "rating": {
            "id": rating_id,
            "rating": stars,
            "comment": comment,
            "created_at": "2024-05-02T09:30:00.000Z",
            "updated_at": updated_at,
            "task": {"id": 880000 + rating_id, "status": 4, "title": "delivery", "external_id": external_id},
            "rating_reasons": [{"text": reason} for reason in reasons],
        },
    }
    return json.dumps(payload).encode()


def task_done_webhook() -> bytes:
    payload = {"webhook_type": "task_done", "merchant_id": MERCHANT_ID, "task": {"id": 880099, "status": 4}}
    return json.dumps(payload).encode()


async def post_all(session: aiohttp.ClientSession, url: str, posts: Sequence[Post]) -> list[str]:
    """Post each webhook in turn, one line per answer; return the answers that were not as expected."""
    problems = []
    width = max(len(post.label) for post in posts)
    for post in posts:
        headers = {"Authorization": f"Bearer {post.token}", "Content-Type": "application/json"}
        async with session.post(url, data=post.body, headers=headers) as answer:
            try:
                # A refusal is a problem document (RFC 9457): its title says what went wrong.
                field = "title" if answer.status >= 400 else "status"
                status = str((await answer.json(content_type=None)).get(field, "?"))
            except ValueError:
                status = "(not JSON)"
            http_status = answer.status
        expected = (http_status, status) == (post.http_status, post.status)
        note = "" if expected else f"   <- expected {post.http_status} {post.status}"
        print(f"  {post.label:<{width}}  {http_status}  {status}{note}")
        if not expected:
            problems.append(
                f"{post.label}: answered {http_status} {status}, expected {post.http_status} {post.status}"
            )
    return problems


async def wait_for_worker(store: Store) -> list[str]:
    """Wait until no delivery is pending, sending or retrying; on timeout say so rather than hang."""
    print(f"\nWaiting up to {SETTLE_TIMEOUT_S:g} s for the worker to deliver ...")
    started = time.monotonic()
    while True:
        by_state = await store.deliveries_by_state()
        waiting = sum(by_state[state] for state in WAITING_STATES)
        if waiting == 0:
            print(f"  no delivery left waiting after {time.monotonic() - started:.1f} s")
            return []
        if time.monotonic() - started > SETTLE_TIMEOUT_S:
            print(
                f"  {waiting} deliveries still waiting after {SETTLE_TIMEOUT_S:g} s: "
                "the worker has not delivered them (is it running? see relay.log)"
            )
            return [f"{waiting} deliveries still pending/sending/retrying after {SETTLE_TIMEOUT_S:g} s"]
        await asyncio.sleep(0.2)


async def read_deliveries(store: Store) -> list[dict[str, Any]]:
    """Every delivery, oldest first (the demo makes a handful)."""
    listed = await store.list_deliveries(DeliveryFilter(), limit=1000)
    return [asdict(delivery) for delivery in reversed(listed)]


async def quivo_ratings(session: aiohttp.ClientSession, sim_url: str) -> list[dict[str, Any]]:
    async with session.get(f"{sim_url}/_sim/ratings") as answer:
        answer.raise_for_status()
        ratings: list[dict[str, Any]] = (await answer.json())["ratings"]
        return ratings


def tag_of(message: str | None) -> str:
    """The reference tag: always the message's last line."""
    lines = (message or "").strip().splitlines()
    return lines[-1] if lines else ""


def print_received(tenant: str, received: Sequence[dict[str, Any]]) -> None:
    print(f"\nWhat Quivo received on tenant {tenant}'s account (GET /_sim/ratings on its stand-in):")
    rows = [
        [str(item["inquiry_id"]), f"{item['rating']:g}", first_line(item["message"]), tag_of(item["message"])]
        for item in received
    ]
    print_table(["inquiry", "rating", "message (first line)", "tag (last line)"], rows or [["(none)"]])


def first_line(message: str | None) -> str:
    lines = (message or "").strip().splitlines()
    return lines[0] if lines else ""


def print_deliveries(deliveries: Sequence[dict[str, Any]]) -> None:
    print("\nDeliveries (the relay's outbox, one row per rating version):")
    rows = [
        [
            str(row["id"]),
            row["tenant"],
            f"{row['merchant_id']}/{row['rating_id']}",
            str(row["stars"]),
            row["external_id"] or "",
            row["state"],
            "" if row["inquiry_id"] is None else str(row["inquiry_id"]),
            str(row["attempts"]),
            shorten(row["last_error"] or STATE_NOTES.get(row["state"], ""), 60),
        ]
        for row in deliveries
    ]
    headers = [
        "id",
        "tenant",
        "merchant/rating",
        "stars",
        "order",
        "state",
        "inquiry",
        "attempts",
        "why / last error",
    ]
    print_table(headers, rows or [["(none)"]])


def print_webhook_counts(webhooks: Mapping[str, int]) -> None:
    summary = ", ".join(f"{count} {status}" for status, count in sorted(webhooks.items()) if count)
    print(f"\nWebhooks stored, by status: {summary}")


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(header) for header in headers]
    for row in rows:
        for column, cell in enumerate(row):
            widths[column] = max(widths[column], len(cell))
    for row in [headers, ["-" * width for width in widths], *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())


def check_outcome(received: Sequence[dict[str, Any]], deliveries: Sequence[dict[str, Any]]) -> list[str]:
    """Each rating that should reach Quivo did, once, on its inquiry; none arrived twice; newest last."""
    problems = []
    arrivals = Counter(tag_of(item["message"]) for item in received)
    for tag, times in arrivals.items():
        if times > 1:
            problems.append(f"{tag} was posted to Quivo {times} times")
    for tag, inquiry_id in MUST_ARRIVE.items():
        landed = [item["inquiry_id"] for item in received if tag_of(item["message"]) == tag]
        if not landed:
            problems.append(f"{tag} never reached Quivo (expected on inquiry {inquiry_id})")
        elif set(landed) != {inquiry_id}:
            problems.append(f"{tag} landed on inquiry {landed}, expected {inquiry_id}")
    on_2003 = [tag_of(item["message"]) for item in received if item["inquiry_id"] == 2003]
    if on_2003 and on_2003[-1] != "[bringg:1:3461:20240502T101500.000000Z]":
        problems.append(f"inquiry 2003's last rating is {on_2003[-1]}, not the updated version")
    if UNLINKED_TAG in arrivals:
        problems.append(f"{UNLINKED_TAG} (order ORDER-77, linked to nothing) reached Quivo")
    unlinked = [row["state"] for row in deliveries if row["rating_id"] == UNLINKED_RATING_ID]
    if unlinked and unlinked != ["unmatched"] and "pending" not in unlinked:
        problems.append(f"order ORDER-77's delivery is {unlinked[0]}, expected unmatched")
    return problems


def check_globex(received: Sequence[dict[str, Any]], globex_received: Sequence[dict[str, Any]]) -> list[str]:
    """The second tenant's ratings reached its own account, once each, and nothing crossed between them."""
    problems = []
    arrivals = Counter(tag_of(item["message"]) for item in globex_received)
    for tag, inquiry_id in GLOBEX_MUST_ARRIVE.items():
        landed = [item["inquiry_id"] for item in globex_received if tag_of(item["message"]) == tag]
        if landed != [inquiry_id]:
            problems.append(
                f"{tag} reached {GLOBEX}'s Quivo {len(landed)} times, expected once on {inquiry_id}"
            )
    if stray := set(arrivals) - set(GLOBEX_MUST_ARRIVE):
        problems.append(f"{GLOBEX}'s Quivo received ratings not of {GLOBEX}: {sorted(stray)}")
    if crossed := {tag_of(item["message"]) for item in received} & set(GLOBEX_MUST_ARRIVE):
        problems.append(f"the default tenant's Quivo received {GLOBEX}'s ratings: {sorted(crossed)}")
    return problems


async def stop(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, as an orchestrator stops a service; SIGKILL only if it will not go."""
    if process.returncode is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        return await process.wait()


if __name__ == "__main__":
    sys.exit(main())
