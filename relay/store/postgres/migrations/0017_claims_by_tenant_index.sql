-- A worker's claim seeks its tenant's due rows, whatever the other tenants hold: 0016's generic plan, not
-- knowing the tenant, chose deliveries_due and stepped over every other tenant's due row (7,950 of a paused
-- tenant, 1 ms a claim). The tenant and the due instant are compared as one row, ordered by both: only
-- deliveries_due_tenant (0005) serves that. Same arguments, rows, order and decisions as 0016.
CREATE OR REPLACE FUNCTION relay_claim_due(
    p_tenant text, p_now timestamptz, p_lease_until timestamptz, p_limit integer)
RETURNS TABLE (id bigint, tenant text, merchant_id bigint, rating_id bigint, rating text, inquiry_id bigint,
    attempts integer, unconfirmed boolean, age_from timestamptz, due_at timestamptz)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
    -- Rows locked by another worker's claim are skipped, not waited for: claims never queue.
    -- A row still 'sending' here had its lease run out (a worker died mid-send): its send is unconfirmed.
    -- A newer version waits while an older one of the same rating is in flight, so order is kept.
    RETURN QUERY
    WITH due AS (
        SELECT d.id, d.next_attempt_at AS due_at FROM deliveries d
        WHERE (d.tenant, d.next_attempt_at) BETWEEN (p_tenant, '-infinity') AND (p_tenant, p_now)
          AND d.state IN ('pending', 'retrying', 'sending')
          AND NOT EXISTS (
              SELECT 1 FROM deliveries o
              WHERE o.merchant_id = d.merchant_id AND o.rating_id = d.rating_id
                AND o.version < d.version AND o.state = 'sending')
        ORDER BY d.tenant, d.next_attempt_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED)
    UPDATE deliveries SET
        unconfirmed = deliveries.unconfirmed OR deliveries.state = 'sending',
        state = 'sending',
        next_attempt_at = p_lease_until,
        updated_at = p_now,
        inquiry_id = COALESCE(deliveries.inquiry_id, (
            SELECT l.inquiry_id FROM links l
            WHERE l.merchant_id = deliveries.merchant_id AND l.external_id = deliveries.external_id))
    FROM due WHERE deliveries.id = due.id
    RETURNING deliveries.id, deliveries.tenant, deliveries.merchant_id, deliveries.rating_id,
        deliveries.rating, deliveries.inquiry_id, deliveries.attempts, deliveries.unconfirmed,
        COALESCE(deliveries.replayed_at, deliveries.created_at), due.due_at;
END
$$;
