"""The delivery states defined in the domain are exactly those the migrated deliveries table allows."""

import re
import sqlite3

from relay.domain.delivery import DELIVERY_STATES, WAITING_STATES
from relay.store.sqlite.migrations import migrate


def test_deliveries_check_constraint_allows_exactly_the_domain_states():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    (table,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'"
    ).fetchone()
    conn.close()

    check = re.search(r"CHECK \((state = '[a-z_]+'(?: OR state = '[a-z_]+')*)\)", table)

    assert check is not None
    assert re.findall(r"'([a-z_]+)'", check.group(1)) == list(DELIVERY_STATES)
    assert set(WAITING_STATES) < set(DELIVERY_STATES)


def test_the_backlog_and_claim_indexes_cover_exactly_the_waiting_states():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    indexes = dict(
        conn.execute(
            "SELECT name, sql FROM sqlite_master "
            "WHERE name IN ('deliveries_waiting', 'deliveries_due_tenant')"
        ).fetchall()
    )
    conn.close()

    assert sorted(indexes) == ["deliveries_due_tenant", "deliveries_waiting"]
    for sql in indexes.values():
        where = re.search(r"WHERE (state = '[a-z_]+'(?: OR state = '[a-z_]+')*)$", sql)
        assert where is not None, sql
        assert re.findall(r"'([a-z_]+)'", where.group(1)) == list(WAITING_STATES)
