"""The bench's reference receivers: the naive receiver, the group-commit probe and the FastAPI receiver answer
202 only for what they committed, and refuse a body that is no rating."""

import asyncio
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest

from bench.loadgen import rating_body
from bench.procs import free_port, started

BENCH = Path(__file__).resolve().parent.parent / "bench"
TOKEN = "reference-token-0123456789"


async def post_all(url: str, bodies: list[bytes]) -> list[int]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def post(body: bytes) -> int:
            async with session.post(url, data=body, headers=headers) as answer:
                return answer.status

        return await asyncio.gather(*(post(body) for body in bodies))


# Each receiver's script and arguments beyond --port, --database and --token; its answer to a body that is no
# rating (FastAPI's validation answers 422).
RECEIVERS = {
    "naive": (["naive_app.py", "--commit", "each"], 400),
    "probe": (["naive_app.py", "--commit", "batch"], 400),
    "fastapi": (["fastapi_app.py"], 422),
}


@pytest.mark.parametrize("receiver", sorted(RECEIVERS))
def test_every_acknowledged_webhook_is_a_committed_row(tmp_path: Path, receiver: str) -> None:
    (script, *options), refused = RECEIVERS[receiver]
    database, port = tmp_path / "reference.db", free_port()
    args = [sys.executable, str(BENCH / script), "--port", str(port), "--database", str(database)]
    args += ["--token", TOKEN, *options]
    bodies = [rating_body(900 + n, merchant_id=3) for n in range(40)]
    with started(args, env={}, log=tmp_path / "reference.log", ready_url=f"http://127.0.0.1:{port}/healthz"):
        statuses = asyncio.run(post_all(f"http://127.0.0.1:{port}/webhooks/bringg", [*bodies, b"{}"]))

    assert statuses == [202] * len(bodies) + [refused]
    with sqlite3.connect(database) as db:
        stored = {row[0] for row in db.execute("SELECT rating_id FROM ratings")}
    assert stored == set(range(900, 940))
