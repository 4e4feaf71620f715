"""Moving house: every copied table's rows out in primary key order, and in again with their ids kept."""

from collections.abc import AsyncIterator, Callable
from typing import Any

from relay.store.postgres.connection import Conn
from relay.store.records import COPIED_TABLES, Row

# Each copied table's primary key, the order rows leave in and the key the next batch starts past.
_KEYS: dict[str, tuple[str, ...]] = {
    "webhooks": ("id",),
    "deliveries": ("id",),
    "attempts": ("id",),
    "links": ("merchant_id", "external_id"),
    "inquiry_holds": ("tenant", "inquiry_id"),
    "account_state": ("account",),
    "meta": ("key",),
}
# Tables whose ids PostgreSQL issues: after an import, its sequence continues past the highest.
_IDENTITY_TABLES = ("webhooks", "deliveries", "attempts")
# ANALYZE reads a sample of some 30,000 rows a table whatever its size: seconds, longer on a cold slow disk.
ANALYZE_TIMEOUT_S = 600


def _known(table: str) -> str:
    if table not in COPIED_TABLES:
        raise ValueError(f"{table!r} is not one of {', '.join(COPIED_TABLES)}")
    return table


async def row_counts(conn: Conn) -> dict[str, int]:
    """How many rows each copied table holds."""
    return {table: int(await conn.fetchval(f"SELECT count(*) FROM {table}")) for table in COPIED_TABLES}


async def export_rows(fetch: Callable[..., Any], table: str, *, batch_size: int) -> AsyncIterator[list[Row]]:
    """Batches of rows past the last key, each read by `fetch(sql, *args)` on any pooled connection."""
    key = ", ".join(_KEYS[_known(table)])
    last: tuple[Any, ...] | None = None
    while True:
        if last is None:
            rows = await fetch(f"SELECT * FROM {table} ORDER BY {key} LIMIT $1", batch_size)
        else:
            marks = ", ".join(f"${n + 2}" for n in range(len(last)))
            rows = await fetch(
                f"SELECT * FROM {table} WHERE ({key}) > ({marks}) ORDER BY {key} LIMIT $1", batch_size, *last
            )
        if not rows:
            return
        yield [dict(row) for row in rows]
        last = tuple(rows[-1][column] for column in _KEYS[table])


async def import_rows(conn: Conn, table: str, rows: list[Row]) -> None:
    """Insert exported rows as they are, ids kept; ids issued later continue past the highest."""
    if not rows:
        return
    found = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = $1",
        _known(table),
    )
    types = {str(row["column_name"]): str(row["data_type"]) for row in found}
    columns = list(rows[0])
    unknown = [column for column in columns if column not in types]
    if unknown:
        raise ValueError(f"{table} has no column {', '.join(unknown)}")
    convert = [_converter(types[column]) for column in columns]
    records = [
        tuple(change(row[column]) for change, column in zip(convert, columns, strict=True)) for row in rows
    ]
    await conn.copy_records_to_table(table, records=records, columns=columns)
    if table in _IDENTITY_TABLES:
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )


async def analyze(conn: Conn) -> None:
    """Planner statistics for every copied table: a bulk load leaves them to autovacuum, a minute or more
    later, and the relay's first queries would be planned on an empty table's."""
    for table in COPIED_TABLES:
        await conn.execute(f"ANALYZE {table}", timeout=ANALYZE_TIMEOUT_S)


def _converter(data_type: str) -> Callable[[Any], Any]:
    """Another backend's value as this column's binary format takes it (SQLite keeps flags as 0 and 1)."""
    if data_type == "boolean":
        return lambda value: None if value is None else bool(value)
    if data_type == "bytea":
        return lambda value: None if value is None else bytes(value)
    return lambda value: value
