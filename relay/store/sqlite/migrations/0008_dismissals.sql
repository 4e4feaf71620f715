-- An operator may dismiss a quarantined webhook with a reason: it stays, body and errors kept, but no longer
-- waits for anyone. Its status stays 'quarantined' (the column's CHECK names four statuses, and widening it
-- would rebuild the table) and reads as 'dismissed' while dismissed_at is set.
ALTER TABLE webhooks ADD COLUMN dismissed_at TEXT;
ALTER TABLE webhooks ADD COLUMN dismissed_reason TEXT;
