"""An open-loop load generator in Python: distinct rating webhooks at a fixed rate, for the end-to-end phase.

Its own event loop's lateness counts as latency (against the bare app at 1,000/s it reported a p99 of
13-130 ms: bench/HISTORY.md), so the p99 targets at 1,000 req/s are measured with bench/paced.py instead;
the end-to-end phase (200/s) judges accepted -> delivered from the store's own instants, not this one's.
"""

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass
class LoadResult:
    """What a fixed-rate run saw."""

    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    duration_s: float = 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")

    @property
    def non_2xx(self) -> int:
        return self.errors + sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


def rating_body(rating_id: int, merchant_id: int = 8) -> bytes:
    return json.dumps(
        {
            "webhook_type": "rating_submitted",
            "merchant_id": merchant_id,
            "rating": {
                "id": rating_id,
                "rating": 1 + rating_id % 5,
                "created_at": "2026-11-20T10:00:00.000Z",
                "comment": "Quick and friendly",
                "task": {
                    "id": rating_id,
                    "status": 4,
                    "title": "Groceries",
                    "external_id": f"INQ-{rating_id}",
                },
                "rating_reasons": [{"text": "On time"}],
            },
        }
    ).encode()


async def run_at_rate(
    url: str, *, rate: float, seconds: float, token: str, first_rating_id: int, merchant_id: int = 8
) -> LoadResult:
    """POST distinct ratings at `rate` per second for `seconds`; latency counts from when each was due."""
    result = LoadResult()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    total = int(rate * seconds)
    bodies = [rating_body(first_rating_id + n, merchant_id) for n in range(total)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(body: bytes, due: float) -> None:
            try:
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    result.statuses[answer.status] = result.statuses.get(answer.status, 0) + 1
            except aiohttp.ClientError:
                result.errors += 1
            result.latencies_ms.append((time.perf_counter() - due) * 1000)

        started = time.perf_counter()
        tasks = []
        for n, body in enumerate(bodies):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body, due)))
            result.sent += 1
        await asyncio.gather(*tasks)
        result.duration_s = time.perf_counter() - started
    return result
