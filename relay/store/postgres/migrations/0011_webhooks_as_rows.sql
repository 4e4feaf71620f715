-- A batch of webhooks comes as one array of rows (relay_inbound, a webhook's values as relay_record_webhook
-- takes them), not as 17 arrays of columns: the driver checks each element of an array in Python before
-- sending it (several abstract-class checks apiece), a tenth of the web process's event loop at ingest;
-- a row's fields it encodes without them. The decisions are 0008's, unchanged; 0008's function stays for
-- the web processes of an older build still running beside this one.
CREATE TYPE relay_inbound AS (
    received_at timestamptz, request_id text, status text, webhook_type text, merchant_id bigint,
    rating_id bigint, errors text, content_type text, body bytea,
    -- The rating, all NULL unless status is 'accepted' with a usable rating:
    r_merchant_id bigint, r_rating_id bigint, r_version text, r_external_id text, r_stars integer,
    r_rating text, r_recheck boolean,
    tenant text);

CREATE FUNCTION relay_record_webhooks(p_webhooks relay_inbound[])
RETURNS TABLE (stored_webhook_id bigint, stored_status text, stored_delivery_id bigint, superseded_ids bigint[])
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    lock_key record;
    w relay_inbound;
    webhook_ids bigint[];
    delivery_ids bigint[];
BEGIN
    -- Each rating's lock (as relay_record_webhook takes it), all before any decision, in one order for
    -- every batch: two batches sharing ratings never wait for each other in a circle.
    FOR lock_key IN
        SELECT DISTINCT hashint8(u.r_merchant_id) AS high, hashint8(u.r_rating_id) AS low
        FROM unnest(p_webhooks) AS u WHERE u.r_rating_id IS NOT NULL ORDER BY 1, 2
    LOOP
        PERFORM pg_advisory_xact_lock(lock_key.high, lock_key.low);
    END LOOP;
    IF EXISTS (
        SELECT FROM unnest(p_webhooks) AS u WHERE u.r_rating_id IS NOT NULL
        GROUP BY u.r_merchant_id, u.r_rating_id HAVING count(*) > 1
    ) OR EXISTS (
        SELECT FROM unnest(p_webhooks) AS u
        JOIN deliveries d ON d.merchant_id = u.r_merchant_id AND d.rating_id = u.r_rating_id
    ) THEN
        FOREACH w IN ARRAY p_webhooks LOOP
            RETURN QUERY SELECT * FROM relay_record_webhook(
                w.received_at, w.request_id, w.status, w.webhook_type, w.merchant_id, w.rating_id, w.errors,
                w.content_type, w.body, w.r_merchant_id, w.r_rating_id, w.r_version, w.r_external_id,
                w.r_stars, w.r_rating, w.r_recheck, w.tenant);
        END LOOP;
        RETURN;
    END IF;
    -- Every rating is new: accepted, its delivery pending. Ids are drawn in the batch's order.
    webhook_ids := ARRAY(SELECT nextval('webhooks_id_seq') FROM generate_series(1, cardinality(p_webhooks)));
    delivery_ids := ARRAY(
        SELECT CASE WHEN u.r_rating IS NULL THEN NULL ELSE nextval('deliveries_id_seq') END
        FROM unnest(p_webhooks) WITH ORDINALITY AS u ORDER BY u.ordinality);
    -- A row's fields come out as columns of their own, after the ids zipped with them.
    INSERT INTO webhooks (id, received_at, request_id, status, webhook_type, merchant_id, rating_id, errors,
        content_type, body, tenant)
    SELECT id, received_at, request_id, CASE WHEN r_rating IS NULL THEN status ELSE 'accepted' END,
        webhook_type, merchant_id, rating_id, errors, content_type, body, tenant
    FROM unnest(webhook_ids, p_webhooks) AS u(id, received_at, request_id, status, webhook_type, merchant_id,
        rating_id, errors, content_type, body, r_merchant_id, r_rating_id, r_version, r_external_id, r_stars,
        r_rating, r_recheck, tenant);
    INSERT INTO deliveries (id, webhook_id, tenant, merchant_id, rating_id, version, external_id, stars,
        rating, state, next_attempt_at, unconfirmed, created_at, updated_at)
    SELECT id, webhook_id, tenant, r_merchant_id, r_rating_id, r_version, r_external_id, r_stars, r_rating,
        'pending', received_at, r_recheck, received_at, received_at
    FROM unnest(delivery_ids, webhook_ids, p_webhooks) AS u(id, webhook_id, received_at, request_id, status,
        webhook_type, merchant_id, rating_id, errors, content_type, body, r_merchant_id, r_rating_id,
        r_version, r_external_id, r_stars, r_rating, r_recheck, tenant)
    WHERE id IS NOT NULL;
    IF FOUND THEN
        -- Wakes the workers at the commit.
        PERFORM pg_notify('relay_work', '');
    END IF;
    RETURN QUERY
        SELECT u.id, CASE WHEN u.r_rating IS NULL THEN u.status ELSE 'accepted' END, u.delivery,
            '{}'::bigint[]
        FROM unnest(webhook_ids, delivery_ids, p_webhooks) WITH ORDINALITY AS u(id, delivery, received_at,
            request_id, status, webhook_type, merchant_id, rating_id, errors, content_type, body, r_merchant_id,
            r_rating_id, r_version, r_external_id, r_stars, r_rating, r_recheck, tenant, ord)
        ORDER BY u.ord;
END
$$;
