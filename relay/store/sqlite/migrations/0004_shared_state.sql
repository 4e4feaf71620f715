-- What every worker must agree on, kept in the database rather than in one process's memory.
-- Same tables and column names on PostgreSQL; instants are TEXT here, as in every table of this file.

-- At most one send in flight per inquiry: the primary key admits one holder, until its hold runs out.
CREATE TABLE inquiry_holds (
    inquiry_id   INTEGER PRIMARY KEY,
    delivery_id  INTEGER NOT NULL,
    held_until   TEXT    NOT NULL
);
-- Recording a delivery's outcome releases its hold by the delivery's id.
CREATE INDEX inquiry_holds_delivery ON inquiry_holds (delivery_id);

-- The workers alive: each beats while it runs, and leaves when it stops cleanly.
CREATE TABLE workers (
    worker_id      TEXT    PRIMARY KEY,
    host           TEXT    NOT NULL,
    pid            INTEGER NOT NULL,
    started_at     TEXT    NOT NULL,
    beat_at        TEXT    NOT NULL,
    paused_reason  TEXT
) WITHOUT ROWID;

-- Per Quivo account, across every worker: the next free send slot, and a pause in force (no
-- paused_until with a pause_reason: until a worker lifts it).
CREATE TABLE account_state (
    account       TEXT PRIMARY KEY,
    next_slot_at  TEXT,
    paused_until  TEXT,
    pause_reason  TEXT
) WITHOUT ROWID;

-- Relay-wide duties (retention, the unmatched sweep): one holder at a time, until its hold runs out.
CREATE TABLE duties (
    duty        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    held_until  TEXT NOT NULL
) WITHOUT ROWID;
