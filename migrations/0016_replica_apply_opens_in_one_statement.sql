-- A replica's apply opens in one statement. An apply was BEGIN, the table's change lock, the
-- lease fence, the replica row FOR UPDATE, its build row FOR UPDATE, then its writes and COMMIT:
-- four round trips before the first write. `floe_open_replica_apply` does those four in order,
-- inside the apply's transaction, and returns what they found.
--
-- The order is the same as before, and it is what the apply's safety rests on: the change lock
-- first (it assigns no transaction id, so the apply's first write still comes after the lock and
-- its log entries after the table's previous ones, migrations/0012 and 0014); then the fence
-- (a change sent under a revoked lease stops here, and the fence row stays locked, so changes
-- to one replica pass one at a time); then the reads, each its own statement inside the
-- function, so each sees everything committed before it ran, including what the holder of the
-- lock committed while this apply waited for it. (One SQL statement joining the same reads would
-- read with a snapshot taken before the lock was granted.)
--
-- Returns one row: accepted = false (and nothing else) when the fence refused the lease;
-- otherwise the replica's row (the columns of `db::catalog::TABLE_COLUMNS`, all null when there
-- is no replica) and its build's (null when none).
CREATE FUNCTION floe_open_replica_apply(
    p_warehouse_id uuid, p_lock_names text[], p_source_region text, p_source_table_id uuid,
    p_lease_token bigint
) RETURNS TABLE (
    accepted boolean,
    table_id uuid, table_uuid uuid, namespace_id uuid, name text, metadata_location text,
    version bigint, source_region text, source_table_id uuid, origin_region text,
    origin_url text, replica_generation bigint, replica_version bigint, replica_step integer,
    orphaned boolean,
    build_generation bigint, build_version bigint, build_step integer,
    build_metadata_location text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t iceberg_table%ROWTYPE;
    b replica_build%ROWTYPE;
BEGIN
    PERFORM floe_lock_tables(p_warehouse_id, p_lock_names);
    INSERT INTO replica_fence AS f (warehouse_id, source_region, source_table_id, lease_token)
    VALUES (p_warehouse_id, p_source_region, p_source_table_id, p_lease_token)
    ON CONFLICT (warehouse_id, source_region, source_table_id) DO UPDATE
        SET lease_token = EXCLUDED.lease_token
        WHERE f.lease_token <= EXCLUDED.lease_token;
    IF NOT FOUND THEN
        accepted := false;
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
    RETURN QUERY SELECT true, t.table_id, t.table_uuid, t.namespace_id, t.name,
        t.metadata_location, t.version, t.source_region, t.source_table_id, t.origin_region,
        t.origin_url, t.replica_generation, t.replica_version, t.replica_step, t.orphaned,
        b.generation, b.version, b.step, b.metadata_location;
END
$$;
