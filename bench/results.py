"""The bench's verdicts: targets, rows grouped in tables (one per backend, one across them), the page."""

import os
import platform
import sqlite3
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from relay.domain.rating import format_instant


@dataclass(frozen=True)
class Target:
    """What a figure must reach, and against what: a reference this run measured, or a fixed limit."""

    relative: bool
    text: str

    def __str__(self) -> str:
        return f"{'relative' if self.relative else 'fixed'}: {self.text}"


def relative(text: str) -> Target:
    """A target set by a reference measured in the same run (the bare app, the empty store, ...)."""
    return Target(True, text)


def fixed(text: str) -> Target:
    """A target that is a fixed limit, whatever else the run measured."""
    return Target(False, text)


@dataclass
class Row:
    """One line of a results table."""

    table: str
    measure: str
    value: str
    target: Target | None  # None: a figure reported, with no target
    met: bool | None


def missed(rows: Sequence[Row]) -> list[str]:
    """One line per missed target, naming its table, the measure, its value and the target."""
    return [
        f"MISSED {row.table}: {row.measure.strip()}: {row.value}, target {row.target}"
        for row in rows
        if row.met is False
    ]


def exit_status(rows: Sequence[Row], *, quick: bool) -> int:
    """1 when a target was missed; a quick run checks the harness, not the relay, so it passes regardless."""
    return 1 if missed(rows) and not quick else 0


def machine() -> str:
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("aiohttp", "aiosqlite", "asyncpg", "pydantic", "structlog", "prometheus-client")
    )
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" [")[0]
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {versions}, {wrk_version}"
    )


def write_results(
    rows: Sequence[Row], path: Path, *, quick: bool, took_s: float, commit: str, machine: str
) -> None:
    """The tables of this run alone, with the commit and machine it ran on and every missed target."""
    misses = missed(rows)
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench{'-quick` (small sizes)' if quick else '`'} from its own run alone: run"
        f" {format_instant(datetime.now(UTC))[:19]}Z in {took_s:.0f} s on commit {commit},"
        f" on: {machine}.",
        "",
        "A target is either *relative* (to a reference measured in this same run: the bare app, the naive",
        "receiver, the bare client, the empty store, the same drain's early memory, one worker, the other",
        "backend) or *fixed* (a limit, whatever else the run measured). Timings on shared machines vary from",
        "run to run. Earlier runs and comparisons: bench/HISTORY.md.",
        "",
        f"Missed targets: {len(misses) or 'none'}.",
        *(f"- {miss}" for miss in misses),
    ]
    for table in dict.fromkeys(row.table for row in rows):
        lines += ["", f"## {table}", "", "| measure | value | target | met |", "| --- | ---: | --- | --- |"]
        for row in rows:
            if row.table == table:
                met = {True: "yes", False: "**no**", None: ""}[row.met]
                lines.append(f"| {row.measure.strip()} | {row.value} | {row.target or ''} | {met} |")
    path.write_text("\n".join(lines) + "\n")
