-- Every inbound webhook, its raw bytes kept whatever became of it.
CREATE TABLE webhooks (
    id            INTEGER PRIMARY KEY,
    received_at   TEXT    NOT NULL,
    request_id    TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('accepted', 'duplicate', 'ignored', 'quarantined')),
    webhook_type  TEXT,
    merchant_id   INTEGER,
    rating_id     INTEGER,
    errors        TEXT,
    content_type  TEXT,
    body          BLOB    NOT NULL
);
CREATE INDEX webhooks_status ON webhooks (status, id);

-- One row per version of a Bringg rating, to be posted to Quivo once.
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    webhook_id       INTEGER NOT NULL,
    merchant_id      INTEGER NOT NULL,
    rating_id        INTEGER NOT NULL,
    version          TEXT    NOT NULL,
    external_id      TEXT,
    stars            INTEGER NOT NULL,
    rating           TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN
                     ('pending', 'sending', 'retrying', 'delivered', 'dead', 'unmatched', 'superseded')),
    inquiry_id       INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    unconfirmed      INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_status      INTEGER,
    last_error       TEXT,
    current_rating   REAL,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    delivered_at     TEXT,
    UNIQUE (merchant_id, rating_id, version)
);
-- The worker's claim: due rows only, in due order (a sending row is due when its lease expires).
CREATE INDEX deliveries_due ON deliveries (next_attempt_at)
    WHERE state IN ('pending', 'retrying', 'sending');
CREATE INDEX deliveries_unmatched ON deliveries (merchant_id, external_id) WHERE state = 'unmatched';
CREATE INDEX deliveries_state ON deliveries (state, id);

-- Every call made to Quivo for a delivery.
CREATE TABLE attempts (
    id           INTEGER PRIMARY KEY,
    delivery_id  INTEGER NOT NULL,
    number       INTEGER NOT NULL,
    action       TEXT    NOT NULL CHECK (action IN ('send', 'reconcile')),
    started_at   TEXT    NOT NULL,
    duration_ms  INTEGER NOT NULL,
    status_code  INTEGER,
    outcome      TEXT    NOT NULL,
    error        TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, id);

-- Which Quivo customer inquiry a merchant's order belongs to.
CREATE TABLE links (
    merchant_id  INTEGER NOT NULL,
    external_id  TEXT    NOT NULL,
    inquiry_id   INTEGER NOT NULL,
    updated_at   TEXT    NOT NULL,
    PRIMARY KEY (merchant_id, external_id)
) WITHOUT ROWID;

-- Small facts the processes share: worker heartbeat, readiness probe.
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;
