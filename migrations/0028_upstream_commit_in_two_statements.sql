-- An intercepted commit (src/upstream/commit.rs) in two statements around the forward, instead of
-- a transaction held open across it (BEGIN, the locks, the rows, the pending intents; the
-- intent's own transaction on another connection; after the answer the entries, the
-- settlement, COMMIT). The tables' change locks are now held at *session* level from the first
-- statement to the second, by the connection that runs both:
--
-- 1. `floe_upstream_open_commit` takes the locks, checks under them that each table is still the
--    row floe read before (same row, same version, not a replica, not handed over; or still no
--    row at all), that no intent naming it is pending, and records the intent. It commits on
--    its own, without waiting for the WAL flush (`db::upstream::open_commit` says why that is
--    safe: the settlement's flush makes it durable before any acknowledgement). Anything not as read
--    records nothing and keeps the locks: floe reads again under them (catching up first if an
--    intent is pending) and calls it again, saying the locks are held.
-- 2. `floe_upstream_settle_commit` appends the entries and moves the rows
--    (`floe_commit_tables`, whose transaction-level locks on the same keys the session already
--    holds), settles the intent, and gives the session-level locks back. Given back inside the
--    transaction, they are still held at transaction level until COMMIT (a session holds a key
--    once per level), so no other commit reads the tables before this one is visible.
--
-- A statement that fails leaves the session's locks held; floe then closes the connection,
-- which gives them back (as does a crash of floe).

-- The change-lock keys of tables by name, in the order they are taken (the key rule of
-- `floe_lock_tables`, migrations/0014, now in one place).
CREATE FUNCTION floe_table_lock_keys(p_warehouse_id uuid, p_names text[]) RETURNS SETOF bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT DISTINCT hashtextextended(p_warehouse_id::text || chr(29) || n, 7380396369697861481) AS k
      FROM unnest(p_names) AS n ORDER BY k
$$;

CREATE OR REPLACE FUNCTION floe_lock_tables(p_warehouse_id uuid, p_names text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count(pg_advisory_xact_lock(k)) FROM floe_table_lock_keys(p_warehouse_id, p_names) k;
END
$$;

-- Step 1. `p_tables` is the intent's table list ({"namespace", "name", ...} per table), and
-- `p_table_ids` and `p_versions` the rows floe read for them, in the same order (NULL: no row);
-- `p_locked`: this session holds the locks already (a call before this one took them).
-- Returns 'recorded', 'moved' (a row is not as read) or 'pending' (an intent names a table);
-- the session holds the locks in every case.
CREATE FUNCTION floe_upstream_open_commit(
    p_warehouse_id uuid, p_lock_names text[], p_locked boolean, p_table_ids uuid[],
    p_versions bigint[], p_intent_id uuid, p_txn_group uuid, p_tables jsonb, p_principal text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    verdict text := 'recorded';
    t jsonb;
    i int := 0;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF NOT p_locked THEN
        PERFORM count(pg_advisory_lock(k))
           FROM floe_table_lock_keys(p_warehouse_id, p_lock_names) k;
    END IF;
    -- Each statement below reads with a snapshot taken after the locks were granted.
    FOR t IN SELECT value FROM jsonb_array_elements(p_tables) LOOP
        i := i + 1;
        IF EXISTS (SELECT 1 FROM upstream_commit_intent
                    WHERE warehouse_id = p_warehouse_id AND state = 'pending'
                      AND tables @> jsonb_build_array(jsonb_build_object(
                          'namespace', t -> 'namespace', 'name', t -> 'name'))) THEN
            verdict := 'pending';
            EXIT;
        END IF;
        IF p_table_ids[i] IS NULL THEN
            IF EXISTS (SELECT 1 FROM iceberg_table it JOIN namespace n USING (namespace_id)
                        WHERE n.warehouse_id = p_warehouse_id
                          AND n.levels = ARRAY(SELECT jsonb_array_elements_text(t -> 'namespace'))
                          AND it.name = t ->> 'name') THEN
                verdict := 'moved';
                EXIT;
            END IF;
        ELSIF NOT EXISTS (SELECT 1 FROM iceberg_table
                           WHERE table_id = p_table_ids[i] AND version = p_versions[i]
                             AND source_region IS NULL
                             AND NOT floe_handed_over(p_table_ids[i])) THEN
            verdict := 'moved';
            EXIT;
        END IF;
    END LOOP;
    IF verdict = 'recorded' THEN
        INSERT INTO upstream_commit_intent (intent_id, warehouse_id, txn_group, tables, principal)
        VALUES (p_intent_id, p_warehouse_id, p_txn_group, p_tables, p_principal);
    END IF;
    RETURN verdict;
END
$$;

-- Step 2: the commit's entries and rows as `floe_commit_tables` takes them (none when the
-- upstream refused it), the intent settled `done` or `failed`, the session's locks given back.
CREATE FUNCTION floe_upstream_settle_commit(
    p_intent_id uuid, p_done boolean, p_outcome text,
    p_warehouse_id uuid, p_lock_names text[], p_table_ids uuid[], p_expected_versions bigint[],
    p_namespace_ids uuid[], p_names text[], p_table_uuids uuid[], p_metadata_locations text[],
    p_locations text[], p_entries jsonb
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM floe_commit_tables(p_warehouse_id, p_lock_names, p_table_ids, p_expected_versions,
        p_namespace_ids, p_names, p_table_uuids, p_metadata_locations, p_locations, p_entries);
    UPDATE upstream_commit_intent
       SET state = CASE WHEN p_done THEN 'done' ELSE 'failed' END, outcome = p_outcome,
           settled_at = clock_timestamp()
     WHERE intent_id = p_intent_id AND state = 'pending';
    PERFORM count(pg_advisory_unlock(k)) FROM floe_table_lock_keys(p_warehouse_id, p_lock_names) k;
END
$$;
