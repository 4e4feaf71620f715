"""Moving house: every copied table's rows out and in as plain values, ids and instants kept exactly."""

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite

from relay.store.records import COPIED_TABLES, Row
from relay.store.sqlite.instants import from_text, to_text
from relay.store.sqlite.writer import WriteJob


@dataclass(frozen=True)
class _Table:
    """What a copy needs to know of a table beyond its columns: its key, and which columns need reading."""

    key: tuple[str, ...]
    instants: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()


_TABLES = {
    "webhooks": _Table(("id",), ("received_at", "dismissed_at")),
    "deliveries": _Table(
        ("id",),
        ("next_attempt_at", "created_at", "updated_at", "delivered_at", "replayed_at"),
        ("unconfirmed",),
    ),
    "attempts": _Table(("id",), ("started_at",)),
    "links": _Table(("merchant_id", "external_id"), ("updated_at",)),
    "inquiry_holds": _Table(("tenant", "inquiry_id"), ("held_until",)),
    "account_state": _Table(("account",), ("next_slot_at", "paused_until")),
    "meta": _Table(("key",)),
}
assert tuple(_TABLES) == COPIED_TABLES, "every copied table, in the order `relay db copy` takes them"


async def row_counts(conn: aiosqlite.Connection) -> dict[str, int]:
    """How many rows each copied table holds."""
    counts = {}
    for table in _TABLES:
        rows = list(await conn.execute_fetchall(f"SELECT COUNT(*) FROM {table}"))
        counts[table] = int(rows[0][0])
    return counts


async def export_rows(conn: aiosqlite.Connection, table: str, *, batch_size: int) -> AsyncIterator[list[Row]]:
    """Every row of `table` in primary key order, `batch_size` at a time, each from just past the last."""
    shape = _shape(table)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    columns = await _columns(conn, table)
    key = ", ".join(shape.key)
    select = f"SELECT {', '.join(columns)} FROM {table}"
    last: tuple[Any, ...] | None = None
    while True:
        past = "" if last is None else f" WHERE ({key}) > ({', '.join('?' for _ in shape.key)})"
        rows = await conn.execute_fetchall(
            f"{select}{past} ORDER BY {key} LIMIT ?", [*(last or ()), batch_size]
        )
        batch = [_exported(shape, row) for row in rows]
        if not batch:
            return
        yield batch
        last = tuple(batch[-1][column] for column in shape.key)


def import_rows(table: str, rows: list[Row]) -> WriteJob[None]:
    """A write job inserting exported rows as they are, ids included (SQLite issues later ids past them)."""
    _shape(table)

    def job(conn: sqlite3.Connection) -> None:
        if not rows:
            return
        known = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
        names = list(rows[0])
        if unknown := [name for name in names if name not in known]:
            raise ValueError(f"{table} has no column {', '.join(unknown)}")
        conn.executemany(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(':' + name for name in names)})",
            [_imported(row) for row in rows],
        )

    return job


def _shape(table: str) -> _Table:
    try:
        return _TABLES[table]
    except KeyError:
        raise ValueError(f"{table!r} is not one of {', '.join(COPIED_TABLES)}") from None


async def _columns(conn: aiosqlite.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in await conn.execute_fetchall(f"PRAGMA table_info({table})")]


def _exported(shape: _Table, row: sqlite3.Row) -> Row:
    values: Row = dict(zip(row.keys(), row, strict=True))
    for column in shape.instants:
        if values[column] is not None:
            values[column] = from_text(values[column])
    for column in shape.flags:
        values[column] = bool(values[column])
    return values


def _imported(row: Row) -> Row:
    return {column: to_text(value) if isinstance(value, datetime) else value for column, value in row.items()}
