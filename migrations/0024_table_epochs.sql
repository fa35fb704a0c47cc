-- Epochs (issue 14): which region is a replicated table's primary, and since when.
--
-- A table's epoch is 1 when it is made, and a promotion raises it: a replica promoted to primary
-- takes its source's epoch plus one. A replica row holds the epoch of the primary it follows (every
-- replicated change carries it). At a destination, the fence row of the source a promoted replica
-- followed keeps the promotion (`promoted_epoch`, the table it made, the source version it had
-- reached), so that a change from that source under an older epoch is refused with where the
-- table now lives: a primary that was cut off learns that it no longer is, and what it wrote
-- meanwhile is kept apart, not applied over the new primary's writes.
ALTER TABLE iceberg_table ADD COLUMN epoch bigint NOT NULL DEFAULT 1;

ALTER TABLE replica_fence
    ADD COLUMN source_warehouse    text,
    ADD COLUMN source_namespace    text[],
    ADD COLUMN promoted_epoch      bigint,
    ADD COLUMN promoted_table_id   uuid,
    ADD COLUMN promoted_at_version bigint;

-- A former primary that learned of a newer epoch: the table became a replica of the new primary,
-- and its commits from `promoted_at_version` (exclusive) to `fenced_at_version` (inclusive) never
-- reached it. They stay in the log and their files stay in storage; this row lists them.
CREATE TABLE table_fencing (
    table_id            uuid PRIMARY KEY,
    warehouse_id        uuid NOT NULL REFERENCES warehouse (warehouse_id),
    epoch               bigint NOT NULL,
    primary_region      text NOT NULL,
    primary_url         text,
    promoted_at_version bigint NOT NULL,
    fenced_at_version   bigint NOT NULL,
    last_metadata_location text NOT NULL,
    fenced_at           timestamptz NOT NULL DEFAULT now()
);

-- The apply's opening (migrations/0016), with the epoch fence before the lease fence: a change
-- under an epoch older than a promotion seen here is refused (refusal 'stale-epoch', with the
-- promotion), and it moves no lease token. The promotion takes the table's change lock as well,
-- so the two are ordered. The source table's warehouse and namespace are kept in the fence row
-- (a promotion replicates back into them).
DROP FUNCTION floe_open_replica_apply(uuid, text[], text, uuid, bigint);
CREATE FUNCTION floe_open_replica_apply(
    p_warehouse_id uuid, p_lock_names text[], p_source_region text, p_source_table_id uuid,
    p_lease_token bigint, p_epoch bigint, p_source_warehouse text, p_source_namespace text[]
) RETURNS TABLE (
    refusal text,
    table_id uuid, table_uuid uuid, namespace_id uuid, name text, metadata_location text,
    version bigint, source_region text, source_table_id uuid, origin_region text,
    origin_url text, replica_generation bigint, replica_version bigint, replica_step integer,
    orphaned boolean, epoch bigint,
    build_generation bigint, build_version bigint, build_step integer,
    build_metadata_location text,
    promoted_epoch bigint, promoted_table_id uuid, promoted_at_version bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t iceberg_table%ROWTYPE;
    b replica_build%ROWTYPE;
    f replica_fence%ROWTYPE;
BEGIN
    PERFORM floe_lock_tables(p_warehouse_id, p_lock_names);
    SELECT * INTO f FROM replica_fence r
     WHERE r.warehouse_id = p_warehouse_id AND r.source_region = p_source_region
       AND r.source_table_id = p_source_table_id;
    IF f.promoted_epoch IS NOT NULL AND f.promoted_epoch > p_epoch THEN
        refusal := 'stale-epoch';
        promoted_epoch := f.promoted_epoch;
        promoted_table_id := f.promoted_table_id;
        promoted_at_version := f.promoted_at_version;
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO replica_fence AS f (warehouse_id, source_region, source_table_id, lease_token,
                                    source_warehouse, source_namespace)
    VALUES (p_warehouse_id, p_source_region, p_source_table_id, p_lease_token,
            p_source_warehouse, p_source_namespace)
    ON CONFLICT (warehouse_id, source_region, source_table_id) DO UPDATE
        SET lease_token = EXCLUDED.lease_token,
            source_warehouse = coalesce(EXCLUDED.source_warehouse, f.source_warehouse),
            source_namespace = coalesce(EXCLUDED.source_namespace, f.source_namespace)
        WHERE f.lease_token <= EXCLUDED.lease_token;
    IF NOT FOUND THEN
        refusal := 'stale-lease';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO t FROM iceberg_table r
     WHERE r.warehouse_id = p_warehouse_id AND r.source_region = p_source_region
       AND r.source_table_id = p_source_table_id
       FOR UPDATE;
    SELECT * INTO b FROM replica_build r
     WHERE r.warehouse_id = p_warehouse_id AND r.source_region = p_source_region
       AND r.source_table_id = p_source_table_id
       FOR UPDATE;
    RETURN QUERY SELECT NULL::text, t.table_id, t.table_uuid, t.namespace_id, t.name,
        t.metadata_location, t.version, t.source_region, t.source_table_id, t.origin_region,
        t.origin_url, t.replica_generation, t.replica_version, t.replica_step, t.orphaned,
        t.epoch, b.generation, b.version, b.step, b.metadata_location,
        NULL::bigint, NULL::uuid, NULL::bigint;
END
$$;

-- A promoted table finds the source it followed (a stream from it back there says so).
CREATE INDEX replica_fence_promoted ON replica_fence (promoted_table_id)
    WHERE promoted_table_id IS NOT NULL;
