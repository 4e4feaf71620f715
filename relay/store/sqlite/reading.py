"""Helpers for reads on the reader connection: one row, newest-first pages, and rows as records."""

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from relay.store.sqlite.instants import from_text

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")

# Columns holding an instant, in every table the records are read from.
INSTANT_COLUMNS = frozenset(
    {
        "received_at",
        "next_attempt_at",
        "created_at",
        "updated_at",
        "delivered_at",
        "replayed_at",
        "started_at",
        "dismissed_at",
    }
)


async def one(conn: aiosqlite.Connection, sql: str, parameters: Any) -> sqlite3.Row | None:
    """The first row `sql` gives, or None (every caller's query gives one row at most)."""
    # One call on the reader's thread: a statement left open across an await would hold its read
    # transaction, and every read queued meanwhile on the connection would see the database as it was then.
    rows = await conn.execute_fetchall(sql, parameters)
    return next(iter(rows), None)


async def newest_first(
    conn: aiosqlite.Connection,
    select: str,
    split: tuple[str, Sequence[str]],
    conditions: list[str],
    parameters: list[Any],
    after: int | None,
    limit: int,
) -> Iterable[sqlite3.Row]:
    """Rows of `select` matching `conditions` and one of the `split` column's values, by id descending."""
    if limit < 1:
        # SQLite reads a negative LIMIT as no limit at all.
        raise ValueError(f"limit must be at least 1, got {limit}")
    if after is not None:
        conditions = [*conditions, "id < ?"]
        parameters = [*parameters, after]
    column, values = split
    # One arm per value: each walks its (value, id) index in id order and SQLite merges them without a sort.
    arms = [[f"{column} = ?", *conditions] for _ in values] or [conditions]
    sql = " UNION ALL ".join(select + (f" WHERE {' AND '.join(arm)}" if arm else "") for arm in arms)
    arguments = [argument for value in values for argument in (value, *parameters)] or parameters
    return await conn.execute_fetchall(f"{sql} ORDER BY id DESC LIMIT ?", [*arguments, limit])


def record(kind: type[R], row: sqlite3.Row, **overrides: Any) -> R:
    """A record from the row's columns of the same names, instants as datetimes; `overrides` for others."""
    values = {}
    for name in (field.name for field in fields(kind)):
        value = overrides[name] if name in overrides else row[name]
        values[name] = from_text(value) if name in INSTANT_COLUMNS and isinstance(value, str) else value
    return kind(**values)
