-- An inquiry id is one Quivo account's: two tenants' inquiries 42 are two inquiries, each with its own hold.
CREATE TABLE inquiry_holds_per_tenant (
    tenant       TEXT    NOT NULL,
    inquiry_id   INTEGER NOT NULL,
    delivery_id  INTEGER NOT NULL,
    held_until   TEXT    NOT NULL,
    PRIMARY KEY (tenant, inquiry_id)
) WITHOUT ROWID;
INSERT INTO inquiry_holds_per_tenant (tenant, inquiry_id, delivery_id, held_until)
    SELECT 'default', inquiry_id, delivery_id, held_until FROM inquiry_holds;
DROP TABLE inquiry_holds;
ALTER TABLE inquiry_holds_per_tenant RENAME TO inquiry_holds;
-- Recording a delivery's outcome releases its hold by the delivery's id.
CREATE INDEX inquiry_holds_delivery ON inquiry_holds (delivery_id);
