-- Every row written to deliveries or webhooks is tested against its table's CHECK on the state (status),
-- and SQLite builds a temporary b-tree of an IN list of more than two values for each row it tests (as
-- for the partial indexes of 0010): one per new webhook, one per new delivery, one per change of state.
-- Spelled with OR each CHECK admits exactly the same values, so every stored row still meets it and no row
-- is rewritten: the schema's text is edited in place, the way SQLite's documentation gives for changes of a
-- CHECK that leave the stored rows as they are (lang_altertable.html, "other kinds of table schema
-- changes"), instead of rebuilding both tables (minutes on a million webhooks with their bodies).
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql,
    'CHECK (state IN' || char(10) || '                     (''pending'', ''sending'', ''retrying'', '
        || '''delivered'', ''dead'', ''unmatched'', ''superseded''))',
    'CHECK (state = ''pending'' OR state = ''sending'' OR state = ''retrying'' OR state = ''delivered'''
        || ' OR state = ''dead'' OR state = ''unmatched'' OR state = ''superseded'')')
WHERE type = 'table' AND name = 'deliveries';
UPDATE sqlite_schema SET sql = replace(sql,
    'CHECK (status IN (''accepted'', ''duplicate'', ''ignored'', ''quarantined''))',
    'CHECK (status = ''accepted'' OR status = ''duplicate'' OR status = ''ignored'' OR status = ''quarantined'')')
WHERE type = 'table' AND name = 'webhooks';
-- This connection reads the edited schema at its next statement.
PRAGMA writable_schema = RESET;
-- A schema change moves the schema's version on, so every other connection reads the schema again too
-- (the documented procedure's step 4; PRAGMA schema_version takes only a literal, unknown here).
CREATE TABLE relay_schema_edited (x);
DROP TABLE relay_schema_edited;
