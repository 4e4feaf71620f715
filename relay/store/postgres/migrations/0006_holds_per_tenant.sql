-- An inquiry id is one Quivo account's: two tenants' inquiries 42 are two inquiries, each with its own hold.
ALTER TABLE inquiry_holds ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE inquiry_holds ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE inquiry_holds DROP CONSTRAINT inquiry_holds_pkey;
ALTER TABLE inquiry_holds ADD PRIMARY KEY (tenant, inquiry_id);
