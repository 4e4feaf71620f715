"""The drain ceiling: a bare aiohttp client that only posts ratings to the Quivo stand-in, no database."""

import asyncio
import time

import aiohttp


async def post_ratings(
    base_url: str, count: int, *, concurrency: int, login: dict[str, str], first_inquiry: int = 1
) -> float:
    """Ratings per second of `concurrency` loops posting `count` ratings in all, each to its own inquiry
    from `first_inquiry` on (one login first, untimed); raises if any answer is not 2xx."""
    headers = {"X-Api-Key": login["QUIVO_API_KEY"], "Content-Type": "application/json"}
    credentials = {"username": login["QUIVO_USERNAME"], "password": login["QUIVO_PASSWORD"]}
    # As the worker's session: one connection per concurrent call, kept alive.
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as session:
        async with session.post("/login", json=credentials) as answer:
            answer.raise_for_status()
            token = (await answer.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        numbers = iter(range(first_inquiry, first_inquiry + count))

        async def loop() -> None:
            for n in numbers:
                body = b'{"rating": 4, "ratingMessage": "Quick and friendly"}'
                async with session.post(f"/customerInquiries/{n}/ratings", data=body, headers=auth) as answer:
                    await answer.read()
                    answer.raise_for_status()

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return count / (time.perf_counter() - began)
