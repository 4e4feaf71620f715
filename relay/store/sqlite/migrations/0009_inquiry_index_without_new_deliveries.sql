-- Intake never knows a delivery's inquiry, yet put each new delivery's NULL into deliveries_inquiry: one
-- more b-tree written per webhook (4% of the pages a batch of 64 commits). Every query the index serves
-- asks for one inquiry, which is never NULL, so the index keeps only the deliveries that have one.
DROP INDEX deliveries_inquiry;
CREATE INDEX deliveries_inquiry ON deliveries (inquiry_id) WHERE inquiry_id IS NOT NULL;
