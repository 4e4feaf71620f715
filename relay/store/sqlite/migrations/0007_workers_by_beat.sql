-- Retention takes workers silent since before its cutoff out of the registry, and `relay status` lists those
-- that beat lately: both by the last beat.
CREATE INDEX workers_beat ON workers (beat_at);
