-- A rating's versions are found by the rating's key (merchant_id, rating_id) whatever the statistics say.
-- deliveries_external led with merchant_id too: once ANALYZE ran while a merchant had no deliveries (a
-- new merchant, or a database filled by `relay db copy` or COPY), the planner took it for the lookups of
-- relay_record_webhook and relay_record_outcome and filtered every delivery of that merchant stored since
-- (11 ms a webhook at 20,000 of them; ingest at 0.26 x on a 1,000,000-row database in `make bench`).
-- Led by external_id, it still serves the admin's lookup by order, and no longer fits a merchant alone.
-- Numbered 0004: 0003 is another change's.
DROP INDEX deliveries_external;
CREATE INDEX deliveries_external ON deliveries (external_id, merchant_id);
