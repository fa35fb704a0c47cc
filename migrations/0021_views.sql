-- Views (Iceberg REST spec: list, create, load, replace, drop, rename, exists, register), kept
-- like tables: a row that points at the current view metadata file, its version counted by the
-- log's entries for it.
--
-- One identifier, one object: a table and a view never share a name in a namespace. Every writer
-- of either takes the name's change lock (`floe_lock_tables`) before it looks, and looks at both
-- kinds under it (the view writer in its transaction, `floe_commit_tables` below for tables, the
-- table rename in its UPDATE), so two writers of one name, whatever they make, take turns and
-- the second sees the first's row.

CREATE TABLE iceberg_view (
    -- floe's own id for this catalog entry; the log's per-view versions count against it.
    view_id           uuid PRIMARY KEY,
    -- The view UUID from the metadata.
    view_uuid         uuid NOT NULL,
    warehouse_id      uuid NOT NULL REFERENCES warehouse (warehouse_id),
    namespace_id      uuid NOT NULL REFERENCES namespace (namespace_id),
    name              text NOT NULL,
    metadata_location text NOT NULL,
    -- The view's location (as `iceberg_table.location`), so a purge under it keeps its files.
    location          text NOT NULL,
    -- The view version of the newest log entry for this view (1 = created).
    version           bigint NOT NULL CHECK (version > 0),
    -- Set when replication made this view: clients cannot change it (as `iceberg_table`'s marks).
    source_region     text,
    source_view_id    uuid,
    origin_region     text,
    origin_url        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace_id, name),
    UNIQUE (warehouse_id, view_uuid),
    CHECK ((source_region IS NULL) = (source_view_id IS NULL))
);

ALTER TABLE commit_log DROP CONSTRAINT commit_log_kind_check;
ALTER TABLE commit_log ADD CONSTRAINT commit_log_kind_check CHECK (kind IN (
    'create-table', 'commit-table', 'drop-table', 'rename-table', 'register-table',
    'create-namespace', 'drop-namespace', 'update-namespace-properties', 'orphan-table',
    'observe-table', 'create-view', 'replace-view', 'drop-view', 'rename-view',
    'register-view'));

-- As migrations/0014, and a new table row is refused (serialization_failure: the caller reads
-- again and finds the view) when a view holds its name.
CREATE OR REPLACE FUNCTION floe_commit_tables(
    p_warehouse_id uuid, p_lock_names text[], p_table_ids uuid[], p_expected_versions bigint[],
    p_namespace_ids uuid[], p_names text[], p_table_uuids uuid[], p_metadata_locations text[],
    p_locations text[], p_entries jsonb
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
BEGIN
    PERFORM floe_lock_tables(p_warehouse_id, p_lock_names);
    FOR i IN 1 .. coalesce(cardinality(p_table_ids), 0) LOOP
        IF p_expected_versions[i] = 0 THEN
            IF EXISTS (SELECT 1 FROM iceberg_view
                        WHERE namespace_id = p_namespace_ids[i] AND name = p_names[i]) THEN
                changed := 0;
            ELSE
                INSERT INTO iceberg_table (table_id, table_uuid, warehouse_id, namespace_id, name,
                    metadata_location, version, location)
                VALUES (p_table_ids[i], p_table_uuids[i], p_warehouse_id, p_namespace_ids[i],
                    p_names[i], p_metadata_locations[i], 1, p_locations[i])
                ON CONFLICT DO NOTHING;
                GET DIAGNOSTICS changed = ROW_COUNT;
            END IF;
        ELSIF p_metadata_locations[i] IS NULL THEN
            PERFORM 1 FROM iceberg_table
             WHERE table_id = p_table_ids[i] AND version = p_expected_versions[i]
               AND source_region IS NULL
               FOR SHARE;
            GET DIAGNOSTICS changed = ROW_COUNT;
        ELSE
            UPDATE iceberg_table
               SET table_uuid = p_table_uuids[i], metadata_location = p_metadata_locations[i],
                   version = p_expected_versions[i] + 1, location = p_locations[i],
                   updated_at = now()
             WHERE table_id = p_table_ids[i] AND version = p_expected_versions[i]
               AND source_region IS NULL;
            GET DIAGNOSTICS changed = ROW_COUNT;
        END IF;
        IF changed <> 1 THEN
            RAISE EXCEPTION 'table % changed since floe read it', p_names[i]
                USING ERRCODE = 'serialization_failure';
        END IF;
    END LOOP;
    PERFORM floe_log_append_entries(p_entries);
END
$$;
