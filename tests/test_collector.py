"""`relay serve` and `relay worker` freeze what start-up built: full passes of the collector skip it."""

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiohttp import web

from relay import cli


def tracked(thing: object) -> bool:
    """Whether the collector's passes (any generation, the frozen ones aside) would walk `thing`."""
    return any(candidate is thing for candidate in gc.get_objects())


@pytest.mark.parametrize("started", [cli._serving, cli._delivering], ids=["serve", "worker"])
def test_once_serving_what_start_up_built_is_out_of_the_collectors_reach(
    started: Callable[[web.Application], Coroutine[Any, Any, None]],
) -> None:
    built_at_start_up = {"routes": ["/webhooks/bringg"]}
    try:
        asyncio.run(started(web.Application()))
        made_while_serving = {"webhook": ["rating"]}
        assert not tracked(built_at_start_up)
        assert tracked(made_while_serving)
    finally:
        # Give the test process's objects back to the collector, as they were before this test.
        gc.unfreeze()
