-- Planned switchover (issue 14): a primary hands a table over to the region that is to become
-- its primary. From the handover until that region's promotion is learned (or the handover
-- lapses, when the promotion never came), no client write commits here.
--
-- Every client write reads the row through `write_rule::table_for_write`, which joins this table,
-- and a commit writes with the compare-and-set of `floe_commit_tables`, which checks it again
-- under the table's change lock. The handover is made under that same lock, so a commit that
-- read the row before the handover and writes after it finds it, fails its compare-and-set, and
-- reading again is refused naming the new primary.
CREATE TABLE table_handover (
    table_id      uuid PRIMARY KEY REFERENCES iceberg_table (table_id) ON DELETE CASCADE,
    to_region     text NOT NULL,
    to_url        text,
    -- The handover lapses then (the region that asked for it promotes only before it).
    until         timestamptz NOT NULL,
    -- The version every change up to which the new primary must apply before it promotes.
    at_version    bigint NOT NULL,
    handed_at     timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION floe_handed_over(p_table_id uuid) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM table_handover WHERE table_id = p_table_id AND until > now())
$$;

-- As migrations/0021, and a table handed over takes no commit.
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
               AND source_region IS NULL AND NOT floe_handed_over(p_table_ids[i])
               FOR SHARE;
            GET DIAGNOSTICS changed = ROW_COUNT;
        ELSE
            UPDATE iceberg_table
               SET table_uuid = p_table_uuids[i], metadata_location = p_metadata_locations[i],
                   version = p_expected_versions[i] + 1, location = p_locations[i],
                   updated_at = now()
             WHERE table_id = p_table_ids[i] AND version = p_expected_versions[i]
               AND source_region IS NULL AND NOT floe_handed_over(p_table_ids[i]);
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
