"""Query-plan checks: run a write job with SQL tracing on, then EXPLAIN what it ran."""

import sqlite3
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import aiosqlite

T = TypeVar("T")


class Database(Protocol):
    """What the checks need of a SQLite database: its reader, and its writer taking a write job."""

    @property
    def reader(self) -> aiosqlite.Connection: ...

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T: ...


async def traced(database: Database, job: Callable[[sqlite3.Connection], Any]) -> list[str]:
    """The SQL statements (with their values) that `job` ran."""
    statements: list[str] = []

    def with_trace(conn: sqlite3.Connection) -> Any:
        conn.set_trace_callback(statements.append)
        try:
            return job(conn)
        finally:
            conn.set_trace_callback(None)

    await database.write(with_trace)
    return statements


async def plan(database: Database, sql: str) -> list[str]:
    """SQLite's query plan of one statement, one step per item."""
    return [row[3] for row in await database.reader.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}")]


def full_scans_and_sorts(steps: list[str]) -> list[str]:
    """Steps that read a whole table or sort in a temporary B-tree: what an indexed query avoids. Rows the
    statement is given (a VALUES list, a WITH materializing one, json_each of a parameter) are no table."""
    given = {"CONSTANT", "json_each"} | {step.split()[1] for step in steps if step.startswith("MATERIALIZE ")}
    return [
        step
        for step in steps
        if (step.startswith("SCAN") and step.split()[1] not in given) or "TEMP B-TREE" in step
    ]
