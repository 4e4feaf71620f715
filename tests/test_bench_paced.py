"""The paced generator of `make bench` (bench/paced.lua through Debian's wrk): what it sends and counts."""

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.paced import run_paced

FIRST = 7_000_000
STALL_S = 0.2


async def test_every_rating_is_sent_once_and_a_wait_behind_a_slow_answer_counts_from_its_due_time():
    received: list[int] = []

    async def take(request: web.Request) -> web.Response:
        rating_id = json.loads(await request.read())["rating"]["id"]
        received.append(rating_id)
        if rating_id == FIRST:
            # The first request of connection 0: the next three it has due, 50 ms apart, wait behind it.
            await asyncio.sleep(STALL_S)
        return web.json_response({"status": "accepted"}, status=202)

    app = web.Application()
    app.router.add_post("/webhooks/bringg", take)
    async with TestServer(app, host="127.0.0.1") as server:
        assert server.port is not None
        load = await asyncio.to_thread(
            run_paced, server.port, rate=1000, seconds=0.2, token="t", first_rating_id=FIRST
        )

    assert sorted(received) == list(range(FIRST, FIRST + 200))
    assert (load.sent, len(load.latencies_ms), load.non_2xx) == (200, 200, 0)
    # The stalled one, then those due 50, 100 and 150 ms after it on its connection, each from its due time.
    slowest = sorted(load.latencies_ms, reverse=True)[:4]
    assert [ms >= floor for ms, floor in zip(slowest, (190, 140, 90, 40), strict=True)] == [True] * 4
