-- An operator may dismiss a quarantined webhook with a reason: it stays, body and errors kept, but no longer
-- waits for anyone. Its status stays 'quarantined', as on SQLite (whose CHECK on the column cannot widen
-- without rebuilding the table), and reads as 'dismissed' while dismissed_at is set.
ALTER TABLE webhooks ADD COLUMN dismissed_at timestamptz, ADD COLUMN dismissed_reason text;
