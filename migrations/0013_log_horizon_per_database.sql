-- The log's horizon counts only transactions that may belong to this database. Transaction ids are
-- cluster-wide, so `pg_snapshot_xmin` also waits for a long transaction in any other database of
-- the cluster (another application's, a report's), and floe's readers with it. A transaction still
-- running at the snapshot (in its `xip` list) is left out only when a backend of another database
-- is positively seen holding that id; one that cannot be placed (it just ended, or its backend is
-- not visible to this role) still counts. Leaving out only other databases' transactions keeps
-- the argument of migrations/0012: no entry of this database's log can appear below the horizon.
CREATE OR REPLACE FUNCTION floe_log_horizon() RETURNS bigint LANGUAGE sql STABLE AS $$
    WITH snap AS (SELECT pg_current_snapshot() AS s),
    ours AS (
        SELECT x FROM snap, pg_snapshot_xip(snap.s) AS x
        WHERE NOT EXISTS (
            SELECT 1 FROM pg_stat_activity a
            WHERE a.datname IS DISTINCT FROM current_database()
              AND a.backend_xid IS NOT NULL
              AND a.backend_xid::text::bigint = x::text::bigint % 4294967296)
    )
    SELECT coalesce((SELECT min(x)::text::bigint FROM ours),
                    (SELECT pg_snapshot_xmax(s)::text::bigint FROM snap)) * 1048576
$$;
