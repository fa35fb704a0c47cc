-- Each table's location (from its current metadata, `file:/` spelling for local files), so a purge
-- can tell whether any other table lives under a dropped table's location before it deletes
-- everything there. NULL for rows written before this migration until their next change; a purge
-- treats an unknown location as a possible neighbour and deletes only what the metadata references.
ALTER TABLE iceberg_table ADD COLUMN location text;
