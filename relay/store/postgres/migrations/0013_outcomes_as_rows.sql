-- A batch of outcomes comes as one call with two arrays of rows (relay_outcome, and relay_call naming its
-- outcome by its place in the batch), not as one call per outcome with six arrays of columns each: the
-- driver checks each element of an array in Python before sending it, and encodes a row's fields without
-- those checks (as 0011 did for webhooks). Instants come as microseconds since the Unix epoch: the driver's
-- timestamptz encoding costs several times a bigint's. Each outcome is still recorded by 0012's function,
-- which stays for the workers of an older build still running beside this one.

-- Exact for instants between the years 1685 and 2255 (the product is computed in double precision).
CREATE FUNCTION relay_instant(p_micros bigint) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN timestamptz '1970-01-01 00:00:00+00' + p_micros * interval '1 microsecond';

CREATE TYPE relay_outcome AS (
    delivery_id bigint, leased_until bigint, state text, attempts integer, unconfirmed boolean,
    next_attempt_at bigint, inquiry_id bigint, last_status integer, last_error text,
    current_rating double precision, recorded_at bigint);

-- `place` is the call's outcome's place in the batch, from 1.
CREATE TYPE relay_call AS (
    place integer, action text, started_at bigint, duration_ms integer, status_code integer, outcome text,
    error text);

CREATE FUNCTION relay_record_outcomes(p_outcomes relay_outcome[], p_calls relay_call[])
RETURNS SETOF text
LANGUAGE plpgsql
AS $$
DECLARE
    o record;
BEGIN
    -- In the batch's order, each with its own calls in theirs: the answers line up with the outcomes.
    FOR o IN
        WITH calls AS (
            SELECT c.place, array_agg(c.action ORDER BY c.n) AS actions,
                array_agg(relay_instant(c.started_at) ORDER BY c.n) AS started,
                array_agg(c.duration_ms ORDER BY c.n) AS durations,
                array_agg(c.status_code ORDER BY c.n) AS status_codes,
                array_agg(c.outcome ORDER BY c.n) AS outcomes, array_agg(c.error ORDER BY c.n) AS errors
            FROM unnest(p_calls) WITH ORDINALITY AS c (place, action, started_at, duration_ms, status_code,
                outcome, error, n)
            GROUP BY c.place)
        SELECT u.*, calls.* FROM unnest(p_outcomes) WITH ORDINALITY AS u
        LEFT JOIN calls ON calls.place = u.ordinality
        ORDER BY u.ordinality
    LOOP
        RETURN NEXT relay_record_outcome(
            o.delivery_id, relay_instant(o.leased_until), o.state, o.attempts, o.unconfirmed,
            relay_instant(o.next_attempt_at), o.inquiry_id, o.last_status, o.last_error, o.current_rating,
            relay_instant(o.recorded_at), COALESCE(o.actions, '{}'), COALESCE(o.started, '{}'), COALESCE(o.durations, '{}'),
            COALESCE(o.status_codes, '{}'), COALESCE(o.outcomes, '{}'), COALESCE(o.errors, '{}'));
    END LOOP;
END
$$;
