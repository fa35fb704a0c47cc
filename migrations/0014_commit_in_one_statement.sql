-- A commit in one statement. Until now a commit was a transaction of six round trips (BEGIN, the
-- change locks, the row read under FOR UPDATE, the pointer swap, the log append, COMMIT), with the
-- row locked while the metadata file was written and synced. Now floe reads the rows without a
-- lock, writes the files, and sends one statement, run as its own transaction:
-- `floe_commit_tables` takes the tables' change locks, swaps each pointer only if the row is still
-- at the version floe read (compare-and-set), appends the log entries and commits. A row that
-- moved on in between (another instance committed, renamed, dropped it) aborts the whole
-- statement with serialization_failure: nothing is written, and floe reads again and retries.
--
-- Log order (migrations/0012): the change locks come before the statement's first write, so its
-- transaction id is assigned while it holds every lock: it is larger than that of the tables'
-- previous change, which committed before the locks were free. A table's entries stay in version
-- order along the log, as with the explicit transactions that take the same locks
-- (`floe_lock_tables`, called by `db::catalog::lock_table_names`).

-- The change locks of tables by name (each `<namespace levels joined by 0x1f>0x1e<name>`), held
-- until the transaction ends; taken in key order, so two transactions cannot deadlock on them.
-- Advisory locks assign no transaction id. (PL/pgSQL, not SQL: its plans are kept per session.)
CREATE FUNCTION floe_lock_tables(p_warehouse_id uuid, p_names text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count(pg_advisory_xact_lock(k)) FROM (
        SELECT DISTINCT hashtextextended(p_warehouse_id::text || chr(29) || n, 7380396369697861481) AS k
        FROM unnest(p_names) AS n ORDER BY k) keys;
END
$$;

-- Appends log entries given as a JSON array of objects keyed by commit_log's column names (all
-- but `seq`) in one statement. It replaces `floe_log_append`
-- (one call per entry) and numbers entries the same way (migrations/0012): the transaction's
-- id times 2^20, plus the entry's place among the transaction's entries.
DROP FUNCTION floe_log_append(uuid, uuid, text, text[], text, uuid, uuid, bigint, jsonb, jsonb,
    jsonb, jsonb, text, text, text, text);

CREATE FUNCTION floe_log_append_entries(p_entries jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- This transaction's entries so far (a transaction-local setting).
    place bigint := coalesce(nullif(current_setting('floe.log_entries', true), ''), '0')::bigint;
    n bigint := jsonb_array_length(p_entries);
    first_seq bigint;
BEGIN
    IF place + n > 1048576 THEN
        RAISE EXCEPTION 'one transaction may append at most 1048576 log entries';
    END IF;
    PERFORM set_config('floe.log_entries', (place + n)::text, true);
    first_seq := pg_current_xact_id()::text::bigint * 1048576 + place;
    INSERT INTO commit_log (seq, warehouse_id, txn_group, kind, namespace, table_name, table_id,
        table_uuid, table_version, changes, requirements, metadata, details, principal,
        origin_region, previous_metadata_location, new_metadata_location)
    SELECT first_seq + e.ord - 1, e.warehouse_id, e.txn_group, e.kind, e.namespace, e.table_name,
        e.table_id, e.table_uuid, e.table_version, e.changes, e.requirements, e.metadata,
        e.details, e.principal, e.origin_region, e.previous_metadata_location,
        e.new_metadata_location
    FROM ROWS FROM (jsonb_to_recordset(p_entries) AS (warehouse_id uuid, txn_group uuid,
        kind text, namespace text[], table_name text, table_id uuid, table_uuid uuid,
        table_version bigint, changes jsonb, requirements jsonb, metadata jsonb, details jsonb,
        principal text, origin_region text, previous_metadata_location text,
        new_metadata_location text))
        WITH ORDINALITY AS e(warehouse_id, txn_group, kind, namespace, table_name, table_id,
            table_uuid, table_version, changes, requirements, metadata, details, principal,
            origin_region, previous_metadata_location, new_metadata_location, ord);
END
$$;

-- One commit: per table i, an expected version of 0 creates the row (the staged create's
-- commit); any other swaps the pointer of the row at that version and gives it the next one, or,
-- with no metadata location, only checks that the row is still at it (a table of a multi-table
-- transaction whose requirements were checked but which does not change), holding it until
-- COMMIT. Replicas (source_region set) are never written here.
CREATE FUNCTION floe_commit_tables(
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
            INSERT INTO iceberg_table (table_id, table_uuid, warehouse_id, namespace_id, name,
                metadata_location, version, location)
            VALUES (p_table_ids[i], p_table_uuids[i], p_warehouse_id, p_namespace_ids[i],
                p_names[i], p_metadata_locations[i], 1, p_locations[i])
            ON CONFLICT DO NOTHING;
        ELSIF p_metadata_locations[i] IS NULL THEN
            PERFORM 1 FROM iceberg_table
             WHERE table_id = p_table_ids[i] AND version = p_expected_versions[i]
               AND source_region IS NULL
               FOR SHARE;
        ELSE
            UPDATE iceberg_table
               SET table_uuid = p_table_uuids[i], metadata_location = p_metadata_locations[i],
                   version = p_expected_versions[i] + 1, location = p_locations[i],
                   updated_at = now()
             WHERE table_id = p_table_ids[i] AND version = p_expected_versions[i]
               AND source_region IS NULL;
        END IF;
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed <> 1 THEN
            RAISE EXCEPTION 'table % changed since floe read it', p_names[i]
                USING ERRCODE = 'serialization_failure';
        END IF;
    END LOOP;
    PERFORM floe_log_append_entries(p_entries);
END
$$;
