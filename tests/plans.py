"""Query-plan checks: run a write job with SQL tracing on, then EXPLAIN what it ran."""

import sqlite3
from typing import Any

from relay.store.db import Database, WriteJob


async def traced(database: Database, job: WriteJob[Any]) -> list[str]:
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
    """Steps that read a whole table or sort in a temporary B-tree: what an indexed query avoids."""
    return [step for step in steps if step.startswith("SCAN") or "TEMP B-TREE" in step]
