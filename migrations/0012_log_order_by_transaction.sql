-- The update log without a lock held through COMMIT. Until now every append took one advisory
-- lock, held until COMMIT, so that `seq` order was commit order; commits to different tables
-- queued on it across their WAL flushes.
--
-- Now an entry's `seq` is its transaction's id times 2^20, plus its place among the
-- transaction's entries: `seq` order is transaction-id order, with no lock. Readers take only
-- entries below their snapshot's horizon, `pg_snapshot_xmin(pg_current_snapshot())` times 2^20
-- (`floe_log_horizon()`): every transaction with a smaller id has ended, so no entry below the
-- horizon can appear later, and every entry that becomes visible later belongs to a transaction
-- whose id is at or above the horizon, so its `seq` is larger than any a reader has been given.
-- A reader paging with `after=` therefore never skips an entry, whatever order transactions
-- commit in. An entry becomes readable once every transaction older than its own has ended.
--
-- Transaction ids (xid8) never wrap; 2^20 entries per transaction and ids below 2^43 fit a bigint.
-- The old entries' `seq`s (from the sequence) are far below the new ones.
DO $$
BEGIN
    IF (SELECT coalesce(max(seq), 0) FROM commit_log)
       >= pg_current_xact_id()::text::bigint * 1048576 THEN
        RAISE EXCEPTION 'commit_log seq values are above the transaction-id range';
    END IF;
END
$$;

CREATE FUNCTION floe_log_horizon() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint * 1048576
$$;

CREATE OR REPLACE FUNCTION floe_log_append(
    p_warehouse_id uuid, p_txn_group uuid, p_kind text, p_namespace text[], p_table_name text,
    p_table_id uuid, p_table_uuid uuid, p_table_version bigint, p_changes jsonb,
    p_requirements jsonb, p_metadata jsonb, p_details jsonb, p_principal text,
    p_origin_region text, p_previous_metadata_location text, p_new_metadata_location text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    -- This transaction's entries so far (a transaction-local setting).
    place bigint := coalesce(nullif(current_setting('floe.log_entries', true), ''), '0')::bigint;
    new_seq bigint;
BEGIN
    IF place >= 1048576 THEN
        RAISE EXCEPTION 'one transaction may append at most 1048576 log entries';
    END IF;
    PERFORM set_config('floe.log_entries', (place + 1)::text, true);
    new_seq := pg_current_xact_id()::text::bigint * 1048576 + place;
    INSERT INTO commit_log (seq, warehouse_id, txn_group, kind, namespace, table_name, table_id,
        table_uuid, table_version, changes, requirements, metadata, details, principal,
        origin_region, previous_metadata_location, new_metadata_location)
    VALUES (new_seq, p_warehouse_id, p_txn_group, p_kind, p_namespace, p_table_name, p_table_id,
        p_table_uuid, p_table_version, p_changes, p_requirements, p_metadata, p_details,
        p_principal, p_origin_region, p_previous_metadata_location, p_new_metadata_location);
    RETURN new_seq;
END
$$;
