"""The saturating generator of `make bench` (bench/ratings.lua through Debian's wrk): what it sends."""

import asyncio
import json
import subprocess
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.bringg.payload import judge

RATINGS_LUA = Path(__file__).resolve().parent.parent / "bench" / "ratings.lua"
RUN_BASE = 5_000


async def test_every_request_is_a_new_accepted_rating_across_wrk_threads():
    received: list[int] = []
    verdicts: set[str] = set()

    async def take(request: web.Request) -> web.Response:
        body = await request.read()
        received.append(json.loads(body)["rating"]["id"])
        verdicts.add(judge(body).status)
        return web.json_response({"status": "accepted"}, status=202)

    app = web.Application()
    app.router.add_post("/webhooks/bringg", take)
    async with TestServer(app, host="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}/webhooks/bringg"
        command = ["wrk", "-t2", "-c2", "-d1s", "-s", str(RATINGS_LUA), url, "--", str(RUN_BASE), "t"]
        await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True)

    assert len(received) == len(set(received)) > 2
    # Each wrk thread draws from a range of its own, above the run's base.
    assert {rating_id // 100_000_000 for rating_id in received} == {1, 2}
    assert min(received) > RUN_BASE
    assert verdicts == {"accepted"}
