-- A worker's claim planned once per session, not at every call (the server's log_planner_stats in a drain):
-- as a prepared statement, its generic plan knows neither the due instant nor the LIMIT (taken as 10% of
-- the due rows), so with many due it looked dearer than a plan made for the call's own values and the
-- claim was planned again at every call (0.6 ms of the server's CPU each). Here its plan is generic, and
-- made of index walks and nested loops whatever the table's size: a claim touches at most its limit of
-- rows, yet the generic plan's 10% estimate chose to read the whole table into a hash or merge join.
-- Same rows, order and decisions as the statement it replaces (relay/store/postgres/outbox.py).
CREATE FUNCTION relay_claim_due(p_tenant text, p_now timestamptz, p_lease_until timestamptz, p_limit integer)
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
        WHERE d.tenant = p_tenant AND d.state IN ('pending', 'retrying', 'sending')
          AND d.next_attempt_at <= p_now
          AND NOT EXISTS (
              SELECT 1 FROM deliveries o
              WHERE o.merchant_id = d.merchant_id AND o.rating_id = d.rating_id
                AND o.version < d.version AND o.state = 'sending')
        ORDER BY d.next_attempt_at
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
