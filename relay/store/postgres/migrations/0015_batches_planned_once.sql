-- Batches planned once per session, not at every call (perf of the server at ingest):
-- 0014's relay_record_arrivals in PL/pgSQL: as a SQL function returning a set (volatile, so not inlined),
-- its body was parsed, analysed and planned again at every call, 15% of the server's CPU at ingest.
-- Generic plans forced for it and what it calls, and for the worker's outcomes: with an array for argument,
-- a cached plan's estimate (100 rows from unnest) looked dearer than one made for the call's own array, so
-- each statement was planned again at each call (7% more). Their plans are index walks whatever the
-- arguments: sequential scans are off in the functions doing the look-ups (0007, 0011, 0012).
-- Same arguments, rows and decisions as 0014 and 0013.
CREATE OR REPLACE FUNCTION relay_record_arrivals(p_arrivals relay_arrival[])
RETURNS TABLE (stored_webhook_id bigint, stored_status text, stored_delivery_id bigint, superseded_ids bigint[])
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY SELECT * FROM relay_record_webhooks(ARRAY(
        SELECT ROW(relay_instant(a.received_at), a.request_id, a.status, a.webhook_type, a.merchant_id,
            a.rating_id, a.errors, a.content_type, a.body, a.r_merchant_id, a.r_rating_id, a.r_version,
            a.r_external_id, a.r_stars, a.r_rating, a.r_recheck, a.tenant)::relay_inbound
        FROM unnest(p_arrivals) WITH ORDINALITY AS a
        ORDER BY a.ordinality));
END
$$;

ALTER FUNCTION relay_record_outcomes(relay_outcome[], relay_call[]) SET plan_cache_mode = force_generic_plan;
