"""The bench's PostgreSQL server writes into WAL files made ahead, as a server in service does, and is
checkpointed before each timed measure."""

import os

from bench.backends import recycle_wal
from bench.run import settled
from tests.pg_server import PostgresServer


def wal_files(server: PostgresServer) -> set[int]:
    """The inode of each WAL file: a recycled file is renamed, and keeps its inode."""
    folder = server.data / "pg_wal"
    return {os.stat(folder / name).st_ino for name in os.listdir(folder) if name[:1].isdigit()}


def test_after_recycling_a_phase_of_writing_creates_no_wal_file(postgres_server: PostgresServer) -> None:
    recycle_wal(postgres_server)
    ready = wal_files(postgres_server)
    # 160 MB: ten files' worth, more than three 10 s runs at 1,000 webhooks a second write.
    postgres_server.sql(
        "SELECT count(pg_logical_emit_message(false, 'test', repeat('x', 1048576))) "
        "FROM generate_series(1, 160)"
    )
    assert wal_files(postgres_server) <= ready


def test_settling_before_a_timed_measure_checkpoints_the_server(postgres_server: PostgresServer) -> None:
    def requested() -> int:
        return int(postgres_server.sql("SELECT checkpoints_req FROM pg_stat_bgwriter"))

    before = requested()
    postgres_server.sql("CREATE TABLE IF NOT EXISTS settle_probe AS SELECT 1 AS x")  # a page to write

    settled(postgres_server)

    assert requested() > before
