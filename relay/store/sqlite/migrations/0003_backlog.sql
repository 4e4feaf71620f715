-- The backlog gauge: the oldest undelivered rating by when it was accepted (or replayed), in one seek.
CREATE INDEX deliveries_waiting ON deliveries (COALESCE(replayed_at, created_at))
    WHERE state IN ('pending', 'retrying', 'sending');
