-- A delivery's outcome with sequential scans off, as 0007 made the webhook's function: a session keeps the
-- plans it made while the table was empty, and the UPDATE of the outcome's row by its id was one that reads
-- the whole table (20,000 rows an outcome, in the test). Its look-up of a newer version is now planned once
-- per session too, not at every call (the EXECUTE of 0002 and 0003): the rating's key is the only index
-- that serves it. Otherwise as in 0003.
CREATE OR REPLACE FUNCTION relay_record_outcome(
    p_delivery_id bigint, p_leased_until timestamptz, p_state text, p_attempts integer, p_unconfirmed boolean,
    p_next_attempt_at timestamptz, p_inquiry_id bigint, p_last_status integer, p_last_error text,
    p_current_rating double precision, p_now timestamptz, c_action text[], c_started_at timestamptz[],
    c_duration_ms integer[], c_status_code integer[], c_outcome text[], c_error text[])
RETURNS text
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    merchant_sent bigint;
    rating_sent bigint;
    version_sent text COLLATE "C";
    newer boolean;
BEGIN
    UPDATE deliveries SET state = p_state, attempts = p_attempts, unconfirmed = p_unconfirmed,
        next_attempt_at = p_next_attempt_at, inquiry_id = COALESCE(p_inquiry_id, inquiry_id),
        last_status = COALESCE(p_last_status, last_status), last_error = p_last_error,
        current_rating = COALESCE(p_current_rating, current_rating), updated_at = p_now,
        delivered_at = CASE WHEN p_state = 'delivered' THEN p_now ELSE delivered_at END
    WHERE id = p_delivery_id AND state = 'sending' AND next_attempt_at = p_leased_until
    RETURNING merchant_id, rating_id, version INTO merchant_sent, rating_sent, version_sent;
    IF NOT FOUND THEN
        -- Its hold, if any, is the new lessee's now: left alone too.
        RETURN 'lost';
    END IF;
    DELETE FROM inquiry_holds WHERE delivery_id = p_delivery_id;
    INSERT INTO attempts (delivery_id, number, action, started_at, duration_ms, status_code, outcome, error)
    SELECT p_delivery_id, p_attempts, c.action, c.started_at, c.duration_ms, c.status_code, c.outcome, c.error
    FROM unnest(c_action, c_started_at, c_duration_ms, c_status_code, c_outcome, c_error)
        WITH ORDINALITY AS c (action, started_at, duration_ms, status_code, outcome, error, n)
    ORDER BY c.n;
    IF p_state = 'unmatched' THEN
        -- A link may have been saved while this delivery was in flight: then it is not unmatched.
        UPDATE deliveries SET state = 'pending', next_attempt_at = p_now
        WHERE id = p_delivery_id AND EXISTS (
            SELECT 1 FROM links l
            WHERE l.merchant_id = deliveries.merchant_id AND l.external_id = deliveries.external_id);
        IF FOUND THEN
            PERFORM pg_notify('relay_work', '');
            RETURN 'pending';
        END IF;
    END IF;
    IF p_state IN ('pending', 'retrying', 'unmatched') THEN
        -- A newer version arrived while this one was in flight: it takes over, this one stops here.
        SELECT EXISTS (SELECT FROM deliveries n
            WHERE n.merchant_id = merchant_sent AND n.rating_id = rating_sent AND n.version > version_sent)
        INTO newer;
        IF newer THEN
            UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL WHERE id = p_delivery_id;
            RETURN 'superseded';
        END IF;
    END IF;
    IF p_state = 'pending' THEN
        PERFORM pg_notify('relay_work', '');
    END IF;
    RETURN p_state;
END
$$;
