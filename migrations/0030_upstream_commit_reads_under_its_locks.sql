-- An intercepted commit (src/upstream/commit.rs) in two round trips to PostgreSQL instead of three:
-- `floe_upstream_open_commit` now reads the tables' rows itself, under the change locks it takes,
-- instead of checking rows floe read just before (a round trip, and a `get_table` that also looks
-- up replication rules the proxy does not use). Rows read under the locks cannot have moved, so
-- the verdict 'moved' and floe's read-again loop go; a table floe has no row for, a pending
-- intent or a row clients may not write are said as such, with the locks kept, and floe catches
-- up under them or answers 403. A staged create's commit (`assert-create`) is recorded without a
-- catch-up: the upstream refuses it if the table is there already.
--
-- And one rule for "a row a client may write" (not a replica, not handed over), which
-- `floe_commit_tables` (migrations/0025) wrote out in two branches and the intent in a third:
-- `floe_writable_by_clients`, a SQL function with a one-expression body, which PostgreSQL inlines
-- into the statements that call it (no plan per call, unlike `floe_handed_over` as SQL was).

CREATE FUNCTION floe_writable_by_clients(p_source_region text, p_table_id uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_source_region IS NULL AND NOT floe_handed_over(p_table_id)
$$;

-- As migrations/0025, the row rule from `floe_writable_by_clients`.
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
               AND floe_writable_by_clients(source_region, table_id)
               FOR SHARE;
            GET DIAGNOSTICS changed = ROW_COUNT;
        ELSE
            UPDATE iceberg_table
               SET table_uuid = p_table_uuids[i], metadata_location = p_metadata_locations[i],
                   version = p_expected_versions[i] + 1, location = p_locations[i],
                   updated_at = now()
             WHERE table_id = p_table_ids[i] AND version = p_expected_versions[i]
               AND floe_writable_by_clients(source_region, table_id);
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

DROP FUNCTION floe_upstream_open_commit(uuid, text[], boolean, uuid[], bigint[], uuid, uuid, jsonb,
    text);

-- Step 1. `p_tables` is the intent's table list ({"namespace", "name", "previous", ...} per
-- table, in the request's order); `p_locked`: this session holds the locks already (a call
-- before this one took them); `p_missing_ok`: a table with no row is one the commit creates
-- (floe caught up with the upstream under these locks and found none). Takes the locks, then:
-- a table with a pending intent: one row, verdict 'pending'; one with no row, unless
-- `p_missing_ok` or the commit creates it: 'unknown'; one clients may not write: 'refused'.
-- Else the intent is recorded, each table's `previous` the metadata location of its row, and the
-- verdict is 'recorded', with a result row per table in order (its columns NULL for a table with
-- no row). The session holds the locks whatever the verdict.
CREATE FUNCTION floe_upstream_open_commit(
    p_warehouse_id uuid, p_lock_names text[], p_locked boolean, p_missing_ok boolean,
    p_intent_id uuid, p_txn_group uuid, p_tables jsonb, p_principal text
) RETURNS TABLE (verdict text, table_id uuid, table_uuid uuid, version bigint,
                 metadata_location text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t jsonb;
    r record;
    ids uuid[] := '{}';
    uuids uuid[] := '{}';
    versions bigint[] := '{}';
    locations text[] := '{}';
    recorded jsonb := '[]';
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF NOT p_locked THEN
        PERFORM count(pg_advisory_lock(k))
           FROM floe_table_lock_keys(p_warehouse_id, p_lock_names) k;
    END IF;
    -- Each statement below reads with a snapshot taken after the locks were granted.
    FOR t IN SELECT value FROM jsonb_array_elements(p_tables) LOOP
        IF EXISTS (SELECT 1 FROM upstream_commit_intent
                    WHERE warehouse_id = p_warehouse_id AND state = 'pending'
                      AND tables @> jsonb_build_array(jsonb_build_object(
                          'namespace', t -> 'namespace', 'name', t -> 'name'))) THEN
            RETURN QUERY SELECT 'pending', NULL::uuid, NULL::uuid, NULL::bigint, NULL::text;
            RETURN;
        END IF;
        SELECT it.table_id, it.table_uuid, it.version, it.metadata_location,
               floe_writable_by_clients(it.source_region, it.table_id) AS writable
          INTO r
          FROM iceberg_table it JOIN namespace n USING (namespace_id)
         WHERE n.warehouse_id = p_warehouse_id
           AND n.levels = ARRAY(SELECT jsonb_array_elements_text(t -> 'namespace'))
           AND it.name = t ->> 'name';
        -- A commit that creates the table (a staged create's, `assert-create`) needs no row:
        -- were the table at the upstream already, the upstream refuses the commit.
        IF NOT FOUND AND NOT p_missing_ok
           AND NOT coalesce(t -> 'requirements' @> '[{"type": "assert-create"}]', false) THEN
            RETURN QUERY SELECT 'unknown', NULL::uuid, NULL::uuid, NULL::bigint, NULL::text;
            RETURN;
        END IF;
        IF FOUND AND NOT r.writable THEN
            RETURN QUERY SELECT 'refused', NULL::uuid, NULL::uuid, NULL::bigint, NULL::text;
            RETURN;
        END IF;
        recorded := recorded || jsonb_build_array(jsonb_set(t, '{previous}',
            coalesce(to_jsonb(r.metadata_location), 'null'::jsonb)));
        ids := ids || r.table_id;
        uuids := uuids || r.table_uuid;
        versions := versions || r.version;
        locations := locations || r.metadata_location;
    END LOOP;
    INSERT INTO upstream_commit_intent (intent_id, warehouse_id, txn_group, tables, principal)
    VALUES (p_intent_id, p_warehouse_id, p_txn_group, recorded, p_principal);
    RETURN QUERY SELECT 'recorded', u.id, u.uuid, u.version, u.location
                   FROM unnest(ids, uuids, versions, locations) WITH ORDINALITY
                        AS u (id, uuid, version, location, position)
                  ORDER BY u.position;
END
$$;
