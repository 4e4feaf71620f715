"""The store contract: every verb of the Store interface, on each backend, in the domain's terms."""

import pytest

from tests.pg_server import PostgresServer, ServerUnavailable


def test_the_postgresql_server_restarts_with_its_databases(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    postgres_server.sql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)", postgres_database)
    postgres_server.stop()
    try:
        with pytest.raises(ServerUnavailable):
            postgres_server.sql("SELECT 1", postgres_database)
    finally:
        postgres_server.start()
    assert postgres_server.sql("SELECT n FROM kept", postgres_database).strip() == "7"
