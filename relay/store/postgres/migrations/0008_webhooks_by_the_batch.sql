-- A batch of webhooks is stored by one call, its columns as arrays (element i of each is webhook i), not by
-- one call of relay_record_webhook per webhook: the server's CPU per webhook went to each call's own
-- statements, and competes with the web process for the machine's cores.
-- In the usual batch no rating is known yet and none comes twice: each kind of row is then inserted for
-- the whole batch by one statement. Otherwise relay_record_webhook decides for each webhook in turn, in
-- order, exactly as before.
CREATE FUNCTION relay_record_webhooks(
    p_received_at timestamptz[], p_request_id text[], p_status text[], p_webhook_type text[],
    p_merchant_id bigint[], p_rating_id bigint[], p_errors text[], p_content_type text[], p_body bytea[],
    -- The rating, all NULL unless p_status is 'accepted' with a usable rating:
    r_merchant_id bigint[], r_rating_id bigint[], r_version text[], r_external_id text[], r_stars integer[],
    r_rating text[], r_recheck boolean[],
    p_tenant text[])
RETURNS TABLE (stored_webhook_id bigint, stored_status text, stored_delivery_id bigint, superseded_ids bigint[])
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    n integer := cardinality(p_received_at);
    lock_key record;
    webhook_ids bigint[];
    delivery_ids bigint[];
BEGIN
    -- Each rating's lock (as relay_record_webhook takes it), all before any decision, in one order for
    -- every batch: two batches sharing ratings never wait for each other in a circle.
    FOR lock_key IN
        SELECT DISTINCT hashint8(m) AS high, hashint8(r) AS low
        FROM unnest(r_merchant_id, r_rating_id) AS u(m, r) WHERE r IS NOT NULL ORDER BY 1, 2
    LOOP
        PERFORM pg_advisory_xact_lock(lock_key.high, lock_key.low);
    END LOOP;
    IF EXISTS (
        SELECT FROM unnest(r_merchant_id, r_rating_id) AS u(m, r) WHERE r IS NOT NULL
        GROUP BY m, r HAVING count(*) > 1
    ) OR EXISTS (
        SELECT FROM unnest(r_merchant_id, r_rating_id) AS u(m, r)
        JOIN deliveries d ON d.merchant_id = u.m AND d.rating_id = u.r
    ) THEN
        FOR i IN 1 .. n LOOP
            RETURN QUERY SELECT * FROM relay_record_webhook(
                p_received_at[i], p_request_id[i], p_status[i], p_webhook_type[i], p_merchant_id[i],
                p_rating_id[i], p_errors[i], p_content_type[i], p_body[i], r_merchant_id[i], r_rating_id[i],
                r_version[i], r_external_id[i], r_stars[i], r_rating[i], r_recheck[i], p_tenant[i]);
        END LOOP;
        RETURN;
    END IF;
    -- Every rating is new: accepted, its delivery pending. Ids are drawn in the batch's order.
    webhook_ids := ARRAY(SELECT nextval('webhooks_id_seq') FROM generate_series(1, n));
    delivery_ids := ARRAY(
        SELECT CASE WHEN rating IS NULL THEN NULL ELSE nextval('deliveries_id_seq') END
        FROM unnest(r_rating) WITH ORDINALITY AS u(rating, ord) ORDER BY ord);
    INSERT INTO webhooks (id, received_at, request_id, status, webhook_type, merchant_id, rating_id, errors,
        content_type, body, tenant)
    SELECT id, received_at, request_id, CASE WHEN rating IS NULL THEN status ELSE 'accepted' END,
        webhook_type, merchant_id, rating_id, errors, content_type, body, tenant
    FROM unnest(webhook_ids, p_received_at, p_request_id, p_status, p_webhook_type, p_merchant_id,
        p_rating_id, p_errors, p_content_type, p_body, p_tenant, r_rating)
        AS u(id, received_at, request_id, status, webhook_type, merchant_id, rating_id, errors, content_type,
            body, tenant, rating);
    INSERT INTO deliveries (id, webhook_id, tenant, merchant_id, rating_id, version, external_id, stars,
        rating, state, next_attempt_at, unconfirmed, created_at, updated_at)
    SELECT id, webhook_id, tenant, merchant_id, rating_id, version, external_id, stars, rating, 'pending',
        received_at, recheck, received_at, received_at
    FROM unnest(delivery_ids, webhook_ids, p_tenant, r_merchant_id, r_rating_id, r_version, r_external_id,
        r_stars, r_rating, p_received_at, r_recheck)
        AS u(id, webhook_id, tenant, merchant_id, rating_id, version, external_id, stars, rating,
            received_at, recheck)
    WHERE id IS NOT NULL;
    IF FOUND THEN
        -- Wakes the workers at the commit.
        PERFORM pg_notify('relay_work', '');
    END IF;
    RETURN QUERY
        SELECT id, CASE WHEN rating IS NULL THEN status ELSE 'accepted' END, delivery, '{}'::bigint[]
        FROM unnest(webhook_ids, p_status, delivery_ids, r_rating) WITH ORDINALITY
            AS u(id, status, delivery, rating, ord)
        ORDER BY ord;
END
$$;
