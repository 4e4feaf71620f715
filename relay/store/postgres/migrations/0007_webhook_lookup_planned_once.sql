-- A webhook's versions are looked up by a statement planned once per session, not at every call: the
-- plan made at each call (the EXECUTE of 0002 and 0005) cost some 45 us of the server's CPU a webhook, a
-- third of its share of ingest. The session's plan can only be the rating's key: with sequential scans off, and with no
-- other index holding merchant_id (a btree can be walked whole for a condition on a later column, and was,
-- on an empty table, for deliveries_external's second column), a plan made while the table was empty
-- cannot be one that reads all of it once it has grown.

-- The admin's lookup by order: an order id is all but unique, its merchant is checked on the row.
DROP INDEX deliveries_external;
CREATE INDEX deliveries_external ON deliveries (external_id);

-- As in 0005 but for the lookup.
CREATE OR REPLACE FUNCTION relay_record_webhook(
    p_received_at timestamptz, p_request_id text, p_status text, p_webhook_type text, p_merchant_id bigint,
    p_rating_id bigint, p_errors text, p_content_type text, p_body bytea,
    -- The rating, all NULL unless p_status is 'accepted' with a usable rating:
    r_merchant_id bigint, r_rating_id bigint, r_version text, r_external_id text, r_stars integer,
    r_rating text, r_recheck boolean,
    -- The tenant it came in for (relay/tenants), its delivery's too.
    p_tenant text)
RETURNS TABLE (stored_webhook_id bigint, stored_status text, stored_delivery_id bigint, superseded_ids bigint[])
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    known bigint;
    newest text COLLATE "C";
    webhook bigint;
    delivery bigint;
    older bigint[] := '{}';
BEGIN
    IF r_rating IS NULL THEN
        INSERT INTO webhooks (received_at, request_id, status, webhook_type, merchant_id, rating_id, errors,
            content_type, body, tenant)
        VALUES (p_received_at, p_request_id, p_status, p_webhook_type, p_merchant_id, p_rating_id, p_errors,
            p_content_type, p_body, p_tenant)
        RETURNING id INTO webhook;
        RETURN QUERY SELECT webhook, p_status, NULL::bigint, older;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashint8(r_merchant_id), hashint8(r_rating_id));
    SELECT max(d.id) FILTER (WHERE d.version = r_version), max(d.version) INTO known, newest FROM deliveries d
    WHERE d.merchant_id = r_merchant_id AND d.rating_id = r_rating_id;
    IF known IS NOT NULL THEN
        INSERT INTO webhooks (received_at, request_id, status, webhook_type, merchant_id, rating_id, errors,
            content_type, body, tenant)
        VALUES (p_received_at, p_request_id, 'duplicate', p_webhook_type, p_merchant_id, p_rating_id, p_errors,
            p_content_type, p_body, p_tenant)
        RETURNING id INTO webhook;
        RETURN QUERY SELECT webhook, 'duplicate'::text, known, older;
        RETURN;
    END IF;
    INSERT INTO webhooks (received_at, request_id, status, webhook_type, merchant_id, rating_id, errors,
        content_type, body, tenant)
    VALUES (p_received_at, p_request_id, 'accepted', p_webhook_type, p_merchant_id, p_rating_id, p_errors,
        p_content_type, p_body, p_tenant)
    RETURNING id INTO webhook;
    -- A version older than one already known is kept for the record, never delivered.
    INSERT INTO deliveries (webhook_id, tenant, merchant_id, rating_id, version, external_id, stars, rating,
        state, next_attempt_at, unconfirmed, created_at, updated_at)
    VALUES (webhook, p_tenant, r_merchant_id, r_rating_id, r_version, r_external_id, r_stars, r_rating,
        CASE WHEN newest > r_version THEN 'superseded' ELSE 'pending' END,
        CASE WHEN newest > r_version THEN NULL ELSE p_received_at END,
        r_recheck, p_received_at, p_received_at)
    RETURNING id INTO delivery;
    IF newest > r_version THEN
        RETURN QUERY SELECT webhook, 'superseded'::text, delivery, older;
        RETURN;
    END IF;
    -- Older versions still waiting are superseded; one in flight finishes first.
    IF newest IS NOT NULL THEN
        WITH gone AS (
            UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL, updated_at = p_received_at
            WHERE merchant_id = r_merchant_id AND rating_id = r_rating_id AND version < r_version
              AND state IN ('pending', 'retrying', 'unmatched')
            RETURNING id)
        SELECT COALESCE(array_agg(id ORDER BY id), '{}') INTO older FROM gone;
    END IF;
    -- Wakes the workers at the commit; the same notification sent twice in one transaction is sent once.
    PERFORM pg_notify('relay_work', '');
    RETURN QUERY SELECT webhook, 'accepted'::text, delivery, older;
END
$$;
