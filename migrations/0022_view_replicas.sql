-- Views replicate to peers like tables, as their whole state: a view holds no data files and its
-- metadata is small, so each change sends the view's current metadata (its location rewritten into
-- the destination), and the destination keeps it only if it is newer than what it has. The stream
-- of a view is a `replication_stream` row of kind `view` (its `table_id` holds the view's id); a
-- replica view carries its source identity and position, as a replica table does.

ALTER TABLE iceberg_view
    ADD COLUMN replica_generation bigint,
    ADD COLUMN replica_version    bigint,
    ADD CHECK ((source_region IS NULL) = (replica_version IS NULL));

CREATE UNIQUE INDEX iceberg_view_replica_of
    ON iceberg_view (warehouse_id, source_region, source_view_id)
    WHERE source_region IS NOT NULL;

ALTER TABLE replication_stream
    ADD COLUMN object_kind text NOT NULL DEFAULT 'table' CHECK (object_kind IN ('table', 'view'));
