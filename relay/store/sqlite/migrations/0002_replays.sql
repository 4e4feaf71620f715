-- When an operator last replayed a delivery: its age limits count from then, not from its creation.
ALTER TABLE deliveries ADD COLUMN replayed_at TEXT;
-- The admin listing filters by order and inquiry; pruning walks finished rows by age.
CREATE INDEX deliveries_external ON deliveries (merchant_id, external_id);
CREATE INDEX deliveries_inquiry ON deliveries (inquiry_id);
CREATE INDEX deliveries_finished ON deliveries (updated_at) WHERE state IN ('delivered', 'superseded');
CREATE INDEX webhooks_received ON webhooks (received_at);
