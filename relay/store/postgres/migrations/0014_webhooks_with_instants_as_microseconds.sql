-- A batch of webhooks as 0011 takes it, each arrival's instant as microseconds since the Unix epoch
-- (relay_instant of 0013): the driver's timestamptz encoding cost a third of a webhook's row. The rows are
-- made 0011's and recorded by its function, unchanged, which stays for the web processes of an older build.
CREATE TYPE relay_arrival AS (
    received_at bigint, request_id text, status text, webhook_type text, merchant_id bigint,
    rating_id bigint, errors text, content_type text, body bytea,
    r_merchant_id bigint, r_rating_id bigint, r_version text, r_external_id text, r_stars integer,
    r_rating text, r_recheck boolean,
    tenant text);

CREATE FUNCTION relay_record_arrivals(p_arrivals relay_arrival[])
RETURNS TABLE (stored_webhook_id bigint, stored_status text, stored_delivery_id bigint, superseded_ids bigint[])
LANGUAGE sql
AS $$
    SELECT * FROM relay_record_webhooks(ARRAY(
        SELECT ROW(relay_instant(a.received_at), a.request_id, a.status, a.webhook_type, a.merchant_id,
            a.rating_id, a.errors, a.content_type, a.body, a.r_merchant_id, a.r_rating_id, a.r_version,
            a.r_external_id, a.r_stars, a.r_rating, a.r_recheck, a.tenant)::relay_inbound
        FROM unnest(p_arrivals) WITH ORDINALITY AS a
        ORDER BY a.ordinality))
$$;
