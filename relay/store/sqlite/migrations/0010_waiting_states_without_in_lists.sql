-- Every write to deliveries tests its old and its new row against each partial index's WHERE, and SQLite
-- builds a temporary b-tree for an IN list of more than two values at each test: six per recorded outcome,
-- three per new delivery (a quarter of the writer's instructions per delivery, in page allocations alone).
-- Spelled with OR, the same rows are indexed at the cost of a few comparisons; the queries that walk these
-- indexes spell their condition the same way, as SQLite uses a partial index only for a WHERE that implies it.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at)
    WHERE state = 'pending' OR state = 'retrying' OR state = 'sending';
DROP INDEX deliveries_waiting;
CREATE INDEX deliveries_waiting ON deliveries (COALESCE(replayed_at, created_at))
    WHERE state = 'pending' OR state = 'retrying' OR state = 'sending';
DROP INDEX deliveries_due_tenant;
CREATE INDEX deliveries_due_tenant ON deliveries (tenant, next_attempt_at)
    WHERE state = 'pending' OR state = 'retrying' OR state = 'sending';
