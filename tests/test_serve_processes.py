"""`relay serve --processes N`, real processes on one port and one database: every acknowledged webhook
stored once, one worker, a dead process started again, SIGTERM a clean stop of them all."""

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.store.api import Store
from tests.chaos.harness import relay_env
from tests.conftest import AUTH, BACKENDS
from tests.forwarding import on_store, rating_webhook
from tests.processes import (
    free_port,
    http_json,
    relay_process,
    run_relay,
    sim_quivo_process,
    wait_for,
    wait_until_ready,
)

pytestmark = pytest.mark.backends(*BACKENDS)
EVER = datetime(2000, 1, 1, tzinfo=UTC)


def children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def processes(parent: subprocess.Popen[str], count: int) -> set[int]:
    """The parent's `count` children, once it has that many."""
    return wait_for(lambda: len(now := children(parent.pid)) == count and now, f"{count} processes")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def connections_by_process(port: int, pids: set[int]) -> Counter[int]:
    """Established connections to `port` each of `pids` holds, from the kernel's socket table and fds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(fields[9])
    held: Counter[int] = Counter()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held[pid] += 1
    return held


async def post_all(
    port: int, first: int, count: int, *, connections: int, pids: set[int]
) -> tuple[dict[int, int], Counter[int]]:
    """POST `count` distinct ratings over `connections` keep-alive connections: each rating's status, and
    how many of the connections each of `pids` holds (counted before they close)."""
    url = f"http://127.0.0.1:{port}/webhooks/bringg"
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:
        ids = iter(range(first, first + count))

        async def one_connection() -> None:
            for rating_id in ids:
                async with session.post(url, data=rating_webhook(rating_id, f"INQ-{rating_id}")) as answer:
                    await answer.read()
                    statuses[rating_id] = answer.status

        await asyncio.gather(*(one_connection() for _ in range(connections)))
        return statuses, connections_by_process(port, pids)


def stored_ratings(url: str) -> Counter[int]:
    """How many deliveries each rating id has in the database."""

    async def read(store: Store) -> Counter[int]:
        counts: Counter[int] = Counter()
        async for batch in store.export_rows("deliveries", batch_size=5000):
            counts.update(row["rating_id"] for row in batch)
        return counts

    return on_store(url, read)


@contextmanager
def serving(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[str]]:
    log = tmp_path / "serve.log"
    with relay_process("serve", *args, env=env, cwd=tmp_path, log_path=log) as parent:
        wait_until_ready(f"http://127.0.0.1:{env['PORT']}/readyz?scope=intake", parent)
        yield parent


def events(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """The log lines of event `name` (stderr's refusals, not JSON, are in the same file)."""
    lines = (tmp_path / "serve.log").read_text().splitlines()
    logged = [json.loads(line) for line in lines if not line.startswith("relay: ")]
    return [line for line in logged if line.get("event") == name]


def test_processes_answer_on_one_port_store_every_acknowledged_webhook_once_and_stop_on_sigterm(
    tmp_path: Path, database_url: str
):
    port = free_port()
    env = relay_env(tmp_path, "http://127.0.0.1:9", port, DATABASE_URL=database_url)

    with serving(tmp_path, env, "--no-worker", "--processes", "3") as parent:
        pids = processes(parent, 3)
        statuses, held = asyncio.run(post_all(port, 1, 600, connections=48, pids=pids))
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0

    acknowledged = {rating_id for rating_id, status in statuses.items() if 200 <= status < 300}
    assert len(acknowledged) == 600, Counter(statuses.values())
    stored = stored_ratings(database_url)
    assert {rating_id for rating_id in acknowledged if stored[rating_id] != 1} == set()
    assert set(held) == pids  # every process took connections on the one port
    assert not any(alive(pid) for pid in pids)
    # Every line the processes wrote to their shared stdout is whole: none cut into another.
    assert len(events(tmp_path, "relay.stopped")) == 4  # each process, and the parent last


def test_the_first_process_alone_delivers_and_each_rating_goes_out_once(tmp_path: Path, database_url: str):
    port = free_port()
    with sim_quivo_process(cwd=tmp_path) as sim:
        env = relay_env(tmp_path, sim, port, DATABASE_URL=database_url)
        with serving(tmp_path, env, "--processes", "3") as parent:
            pids = processes(parent, 3)
            statuses, _ = asyncio.run(post_all(port, 1, 60, connections=12, pids=pids))
            assert set(statuses.values()) == {202}
            wait_for(lambda: http_json("GET", f"{sim}/_sim/ratings")["count"] == 60, "every rating delivered")
            workers = on_store(database_url, lambda store: store.live_workers(since=EVER))
            parent.send_signal(signal.SIGTERM)
            assert parent.wait(timeout=30) == 0
        posted = http_json("GET", f"{sim}/_sim/ratings")

    assert posted["count"] == 60
    assert len(workers) == 1
    (started,) = [event for event in events(tmp_path, "relay.process_started") if event["number"] == 0]
    assert workers[0].pid == started["pid"]
    assert len(events(tmp_path, "worker.started")) == 1


# The samples scraped_totals adds up, by their key: a word, then the values of these labels.
SCRAPED = {
    "relay_webhooks_received_total": ("webhooks", "outcome"),
    "relay_delivery_outcomes_total": ("deliveries", "outcome"),
    "relay_quivo_requests_total": ("quivo", "action", "status"),
    "relay_delivery_latency_seconds_count": ("latency count",),
    "relay_deliveries": ("rows", "state"),
}


def scraped_totals(port: int) -> dict[str, float]:
    """One scrape of /metrics on a new connection (the kernel picks the process): the counts summed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (words := SCRAPED.get(sample.name)) is not None:
                key = " ".join([words[0], *(sample.labels[label] for label in words[1:])])
                totals[key] = totals.get(key, 0.0) + sample.value
    return {name: value for name, value in totals.items() if value}


def test_a_scrape_of_any_process_shows_what_every_process_counted(tmp_path: Path, database_url: str):
    port = free_port()
    (tmp_path / "tmp").mkdir()
    with sim_quivo_process(cwd=tmp_path) as sim:
        env = relay_env(tmp_path, sim, port, DATABASE_URL=database_url, TMPDIR=str(tmp_path / "tmp"))
        with serving(tmp_path, env, "--processes", "2") as parent:
            pids = processes(parent, 2)
            statuses, held = asyncio.run(post_all(port, 1, 60, connections=12, pids=pids))
            wait_for(lambda: http_json("GET", f"{sim}/_sim/ratings")["count"] == 60, "every rating delivered")
            everything = {
                "webhooks accepted": 60,
                "deliveries delivered": 60,
                "quivo login 200": 1,
                "quivo post_rating 200": 60,
                "latency count": 60,
                "rows delivered": 60,  # read from the database by the process scraped alone
            }
            # Each process adds its counts to the shared files within a second.
            wait_for(lambda: scraped_totals(port) == everything, "the counts of both processes")
            # Sixteen scrapes on new connections: with counts of its own alone, one would miss the other's.
            scrapes = [scraped_totals(port) for _ in range(16)]
            shared = list((tmp_path / "tmp").iterdir())
            parent.send_signal(signal.SIGTERM)
            assert parent.wait(timeout=30) == 0

    assert set(statuses.values()) == {202}
    assert set(held) == pids  # both processes answered webhooks
    assert scrapes == [everything] * 16
    assert [path.name.startswith("relay-metrics-") for path in shared] == [True]  # the parent's one directory
    assert list((tmp_path / "tmp").iterdir()) == []  # the parent removed the directory as it stopped


def test_a_process_that_dies_serving_is_started_again_and_the_port_keeps_answering(
    tmp_path: Path, database_url: str
):
    port = free_port()
    env = relay_env(tmp_path, "http://127.0.0.1:9", port, DATABASE_URL=database_url)
    with serving(tmp_path, env, "--no-worker", "--processes", "2") as parent:
        first = processes(parent, 2)
        wait_for(lambda: len(events(tmp_path, "relay.process_serving")) == 2, "both serving")
        victim = min(first)
        os.kill(victim, signal.SIGKILL)

        after = wait_for(
            lambda: len(now := children(parent.pid)) == 2 and victim not in now and now, "a new process"
        )
        statuses, held = asyncio.run(post_all(port, 1, 200, connections=32, pids=after))
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0

    assert set(statuses.values()) == {202}
    assert set(held) == after
    (exited,) = events(tmp_path, "relay.process_exited")
    assert (exited["pid"], exited["exit_code"], exited["served"]) == (victim, -signal.SIGKILL, True)
    restarted = events(tmp_path, "relay.process_started")[-1]
    assert restarted["pid"] in after and restarted["number"] == exited["number"]
    assert Counter(stored_ratings(database_url).values()) == Counter({1: 200})


@pytest.mark.backends("sqlite")  # the file's write lock, held by another connection: SQLite's alone
def test_sqlite_processes_waiting_on_the_write_lock_answer_2xx_only_for_what_they_committed(
    tmp_path: Path, database_url: str
):
    port = free_port()
    env = relay_env(
        tmp_path, "http://127.0.0.1:9", port, DATABASE_URL=database_url, RELAY_STORE_TIMEOUT_S="2"
    )
    database = database_url.removeprefix("sqlite:///")
    with serving(tmp_path, env, "--no-worker", "--processes", "3") as parent:
        pids = processes(parent, 3)
        # Held shorter than the busy timeout: every process waits for the lock, then commits and answers.
        waited, waited_early = asyncio.run(_posted_while_locked(database, port, 1, 90, pids, hold_s=0.5))
        # Held longer, one webhook per connection: each writer gives up (503: not acknowledged, Bringg
        # sends it again), and takes webhooks again once the lock is free.
        refused, refused_early = asyncio.run(_posted_while_locked(database, port, 1001, 30, pids, hold_s=3.5))
        after, _ = asyncio.run(post_all(port, 2001, 90, connections=30, pids=pids))
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0

    assert Counter(waited.values()) == Counter({202: 90}) and not waited_early
    assert Counter(refused.values()) == Counter({503: 30}) and refused_early
    assert Counter(after.values()) == Counter({202: 90})
    stored = stored_ratings(database_url)
    acknowledged = [
        rating for answers in (waited, refused, after) for rating, code in answers.items() if code == 202
    ]
    assert [stored[rating] for rating in acknowledged] == [1] * 180


async def _posted_while_locked(
    database: str, port: int, first: int, count: int, pids: set[int], *, hold_s: float
) -> tuple[dict[int, int], bool]:
    """`count` webhooks over 30 connections, spread over every process, posted while the test holds
    SQLite's write lock for `hold_s`: each rating's status, and whether all were answered meanwhile."""
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        posting = asyncio.create_task(post_all(port, first, count, connections=30, pids=pids))
        await asyncio.sleep(hold_s)  # the lock's holder's own time: what is measured is the others' wait
        answered_while_held = posting.done()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    statuses, held = await posting
    assert set(held) == pids
    return statuses, answered_while_held


@pytest.mark.backends("sqlite")  # one worker per SQLite file: the refusal that stops the whole
def test_a_process_that_cannot_start_stops_the_others_and_the_parent_exits_with_its_status(
    tmp_path: Path, database_url: str
):
    port = free_port()
    env = relay_env(tmp_path, "http://127.0.0.1:9", port, DATABASE_URL=database_url)
    lock = Path(database_url.removeprefix("sqlite:///") + ".worker-lock")
    with relay_process("worker", env=env, cwd=tmp_path, log_path=tmp_path / "worker.log") as worker:
        wait_for(lambda: lock.exists() and lock.read_text() == str(worker.pid), "the worker's lock")
        with relay_process(
            "serve", "--processes", "3", env=env, cwd=tmp_path, log_path=tmp_path / "serve.log"
        ) as parent:
            assert parent.wait(timeout=30) == 2

    log = (tmp_path / "serve.log").read_text()
    assert f"another relay worker (pid {worker.pid})" in log
    (exited,) = events(tmp_path, "relay.process_exited")
    assert (exited["number"], exited["exit_code"], exited["served"]) == (0, 2, False)
    stopped = {event["pid"] for event in events(tmp_path, "relay.process_started")} - {exited["pid"]}
    assert not any(alive(pid) for pid in stopped)


def test_processes_stop_when_their_parent_is_killed(tmp_path: Path, database_url: str):
    port = free_port()
    env = relay_env(tmp_path, "http://127.0.0.1:9", port, DATABASE_URL=database_url, RELAY_PROCESSES="2")
    with serving(tmp_path, env, "--no-worker") as parent:
        pids = processes(parent, 2)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in pids), "the processes gone")

    assert len(events(tmp_path, "relay.stopped")) == 2  # each stopped as on SIGTERM


@pytest.mark.backends("sqlite")  # refused before any database is opened
@pytest.mark.parametrize(
    ("option", "setting", "says"),
    [
        (("--processes", "0"), "1", "argument --processes: not a number of processes from 1 to 64: '0'"),
        ((), "65", "relay: configuration error: RELAY_PROCESSES: Input should be less than or equal to 64"),
    ],
)
def test_a_number_of_processes_out_of_range_is_refused_with_one_line(
    tmp_path: Path, database_url: str, option: tuple[str, ...], setting: str, says: str
):
    env = relay_env(tmp_path, "http://127.0.0.1:9", free_port(), DATABASE_URL=database_url)

    refused = run_relay("serve", *option, env={**env, "RELAY_PROCESSES": setting}, cwd=tmp_path)

    assert refused.returncode == 2
    assert says in refused.stderr


@pytest.mark.backends("sqlite")  # the parent's bookkeeping, the same on any backend
def test_every_process_starting_at_once_is_known_to_serve(tmp_path: Path, database_url: str):
    port = free_port()
    env = relay_env(tmp_path, "http://127.0.0.1:9", port, DATABASE_URL=database_url)
    with serving(tmp_path, env, "--no-worker", "--processes", "8") as parent:
        pids = processes(parent, 8)
        # Eight saying so within milliseconds: none may be missed, or its death would stop them all.
        wait_for(
            lambda: {event["pid"] for event in events(tmp_path, "relay.process_serving")} == pids,
            "each process known to serve",
        )
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0
