"""`relay serve` and `relay worker` freeze what start-up built: full passes of the collector skip it."""

import asyncio
import gc
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from aiohttp import web

from relay import cli, collector


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    """Give the test process's objects and thresholds back to the collector, as they were before a test."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def tracked(thing: object) -> bool:
    """Whether the collector's passes (any generation, the frozen ones aside) would walk `thing`."""
    return any(candidate is thing for candidate in gc.get_objects())


@pytest.mark.parametrize("started", [cli._serving, cli._delivering], ids=["serve", "worker"])
def test_once_serving_what_start_up_built_is_out_of_the_collectors_reach(
    started: Callable[[web.Application], Coroutine[Any, Any, None]],
) -> None:
    built_at_start_up = {"routes": ["/webhooks/bringg"]}
    asyncio.run(started(web.Application()))
    made_while_serving = {"webhook": ["rating"]}
    assert not tracked(built_at_start_up)
    assert tracked(made_while_serving)


@pytest.mark.parametrize("started", [cli._serving, cli._delivering], ids=["serve", "worker"])
def test_once_serving_the_youngest_objects_are_collected_less_often(
    started: Callable[[web.Application], Coroutine[Any, Any, None]],
) -> None:
    thresholds = gc.get_threshold()
    asyncio.run(started(web.Application()))
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, *thresholds[1:])
    assert thresholds[0] < collector.YOUNG_THRESHOLD
