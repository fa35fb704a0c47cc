-- An intercepted commit's client is answered as soon as the upstream's answer is known, before
-- floe logs the commit (src/upstream/commit.rs): the entry is written after the answer, by the
-- settlement, under the same locks. What makes that safe is the intent, which must therefore be
-- durable before the request leaves: `floe_upstream_open_commit` no longer commits without
-- waiting for the WAL flush (migrations/0028 had it not wait, because the settlement's flush,
-- then before the answer, covered it). Should floe or PostgreSQL stop between the answer and the
-- settlement, the intent is still there, and the table's next commit or the observer's poll
-- settles it from the upstream's state: the commit is logged once, as floe's, with its principal.
--
-- The function as in migrations/0030, without its `set_config('synchronous_commit', 'off')`.

CREATE OR REPLACE FUNCTION floe_upstream_open_commit(
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
