-- A batch of new webhooks, each with its delivery when it carries a new rating, stored by one INSERT into
-- this view: run outside BEGIN ... COMMIT, that statement is its own transaction, commit included, so the
-- writer thread hands the GIL to the event loop and waits to get it back once a batch instead of at each
-- of BEGIN, the inserts and COMMIT. Its columns: the webhook row, then the delivery's (NULL without one).
-- A row whose webhook_id is NULL pads a statement to a size already prepared, and stores nothing.
CREATE VIEW arrivals AS
SELECT
    NULL AS webhook_id, NULL AS received_at, NULL AS request_id, NULL AS status, NULL AS webhook_type,
    NULL AS merchant_id, NULL AS rating_id, NULL AS errors, NULL AS content_type, NULL AS body,
    NULL AS tenant, NULL AS delivery_id, NULL AS version, NULL AS external_id, NULL AS stars,
    NULL AS rating, NULL AS unconfirmed
WHERE 0;

CREATE TRIGGER arrivals_stored INSTEAD OF INSERT ON arrivals
WHEN NEW.webhook_id IS NOT NULL
BEGIN
    INSERT INTO webhooks (
        id, received_at, request_id, status, webhook_type, merchant_id, rating_id, errors, content_type,
        body, tenant
    ) VALUES (
        NEW.webhook_id, NEW.received_at, NEW.request_id, NEW.status, NEW.webhook_type, NEW.merchant_id,
        NEW.rating_id, NEW.errors, NEW.content_type, NEW.body, NEW.tenant
    );
    -- A new rating's delivery is pending from its arrival, whose instant fills three columns.
    INSERT INTO deliveries (
        id, webhook_id, tenant, merchant_id, rating_id, version, external_id, stars, rating, state,
        next_attempt_at, unconfirmed, created_at, updated_at
    )
    SELECT
        NEW.delivery_id, NEW.webhook_id, NEW.tenant, NEW.merchant_id, NEW.rating_id, NEW.version,
        NEW.external_id, NEW.stars, NEW.rating, 'pending', NEW.received_at, NEW.unconfirmed,
        NEW.received_at, NEW.received_at
    WHERE NEW.delivery_id IS NOT NULL;
END;
