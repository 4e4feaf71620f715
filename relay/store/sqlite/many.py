"""Many rows in few statements: a multi-row INSERT per power of two in their count, its values numbered."""

import functools
import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Insert:
    """A multi-row INSERT: the table, its columns, and what fills them in each row: the row's Nth value for
    a number N (one value may fill several columns, bound once), else the SQL given."""

    table: str
    columns: str
    row: tuple[int | str, ...]

    @property
    def width(self) -> int:
        """How many values each row has."""
        return max(value for value in self.row if isinstance(value, int))


def insert_many(conn: sqlite3.Connection, insert: Insert, values: list[object]) -> None:
    """Rows given as one flat list of values, in one statement per power of two in their count (at most 9
    for 256)."""
    width = insert.width
    rows, start = len(values) // width, 0
    while start < rows:
        size = 1 << ((rows - start).bit_length() - 1)
        conn.execute(_statement(insert, size), values[start * width : (start + size) * width])
        start += size


@functools.cache
def _statement(insert: Insert, count: int) -> str:
    """`INSERT INTO table (columns) VALUES (...), ...` for `count` rows, their values numbered on row after
    row: few sizes, so few statements to prepare."""
    width = insert.width
    rows = (
        ", ".join(f"?{n * width + value}" if isinstance(value, int) else value for value in insert.row)
        for n in range(count)
    )
    return f"INSERT INTO {insert.table} ({insert.columns}) VALUES ({'), ('.join(rows)})"
