"""The bench's reference receivers: the naive receiver and the group-commit probe answer 202 only for what
they committed, whichever way they commit."""

import asyncio
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest

from bench.loadgen import rating_body
from bench.procs import free_port, started

NAIVE_APP = Path(__file__).resolve().parent.parent / "bench" / "naive_app.py"
TOKEN = "reference-token-0123456789"


async def post_all(url: str, bodies: list[bytes]) -> list[int]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def post(body: bytes) -> int:
            async with session.post(url, data=body, headers=headers) as answer:
                return answer.status

        return await asyncio.gather(*(post(body) for body in bodies))


@pytest.mark.parametrize("commit", ["each", "batch"])
def test_every_acknowledged_webhook_is_a_committed_row(tmp_path: Path, commit: str) -> None:
    database, port = tmp_path / "reference.db", free_port()
    args = [sys.executable, str(NAIVE_APP), "--port", str(port), "--database", str(database)]
    args += ["--token", TOKEN, "--commit", commit]
    bodies = [rating_body(900 + n, merchant_id=3) for n in range(40)]
    with started(args, env={}, log=tmp_path / "reference.log", ready_url=f"http://127.0.0.1:{port}/healthz"):
        statuses = asyncio.run(post_all(f"http://127.0.0.1:{port}/webhooks/bringg", [*bodies, b"{}"]))

    assert statuses == [202] * len(bodies) + [400]
    with sqlite3.connect(database) as db:
        stored = {row[0] for row in db.execute("SELECT rating_id FROM ratings")}
    assert stored == set(range(900, 940))
