"""`relay serve --processes N` counts in files every process reads: a scrape of any one shows them all."""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# prometheus-client's own switch: a process that finds it keeps its counts in files in that directory.
DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often a process adds its counts to its files: a scrape of another process shows them this late at most.
SHARE_INTERVAL_S = 1.0

# Both ship untyped.
_value_class: Callable[[], type] = values.get_value_class
_read_every_process: Callable[..., object] = MultiProcessCollector


@contextlib.contextmanager
def shared_by_processes() -> Iterator[Path]:
    """A fresh directory, named in the environment of the processes forked meanwhile; removed after.

    Fresh at every start, as prometheus-client requires: files a past run left would add to the counts.
    """
    directory = Path(tempfile.mkdtemp(prefix="relay-metrics-"))
    previous = os.environ.get(DIRECTORY_ENV)
    os.environ[DIRECTORY_ENV] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(DIRECTORY_ENV, None)
        else:
            os.environ[DIRECTORY_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


def shared_directory() -> Path | None:
    """The directory this process shares its counts in, if it was started to share them."""
    named = os.environ.get(DIRECTORY_ENV)
    return Path(named) if named else None


def count_in_files() -> None:
    """Counters and histograms made from now on keep their values in this process's files."""
    # prometheus-client chose at its import, which in a forked process came before the directory was named.
    values.ValueClass = _value_class()


def every_process(directory: Path, *own: Collector) -> CollectorRegistry:
    """A registry reading what every process counted in `directory` (summed), and `own` collectors."""
    registry = CollectorRegistry()
    _read_every_process(registry, path=str(directory))
    for collector in own:
        registry.register(collector)
    return registry
