-- Namespace properties replicate to peers, as views do: as the namespace's whole state (its
-- properties), each change sent at the namespace's next properties version, kept by the
-- destination only if it follows the version it holds. A namespace's stream is a
-- `replication_stream` row of kind `namespace` (its `table_id` holds the namespace's id); rules
-- for a warehouse or a namespace cover the namespaces under them, rules for one table do not.

-- Counts the changes of the namespace's properties (1 = as created), here: a replica namespace
-- counts its own applies, so a further region compares against this region's count.
ALTER TABLE namespace
    ADD COLUMN properties_version bigint NOT NULL DEFAULT 1 CHECK (properties_version > 0),
    -- Set when replication sent this namespace's properties: the sender, its namespace's id there,
    -- and the stream generation and sender's version last applied. A namespace made only to hold
    -- replica tables has an origin (`origin_region`) but no sender until its properties come.
    ADD COLUMN source_region       text,
    ADD COLUMN source_namespace_id uuid,
    ADD COLUMN replica_generation  bigint,
    ADD COLUMN replica_version     bigint,
    ADD CHECK ((source_region IS NULL) = (source_namespace_id IS NULL)),
    ADD CHECK ((source_region IS NULL) = (replica_version IS NULL)),
    ADD CHECK (source_region IS NULL OR origin_region IS NOT NULL);

ALTER TABLE replication_stream DROP CONSTRAINT replication_stream_object_kind_check;
ALTER TABLE replication_stream ADD CONSTRAINT replication_stream_object_kind_check
    CHECK (object_kind IN ('table', 'view', 'namespace'));
