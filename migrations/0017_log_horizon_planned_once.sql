-- The log's horizon (migrations/0013), planned once per session and reading the backends'
-- activity at most once per call. As a SQL function with a CTE it was planned again at every
-- call (PostgreSQL keeps a SQL function's plan only for the statement calling it), and it asked
-- pg_stat_activity, a view that copies every backend's status and joins two catalogs, once for
-- each transaction of the snapshot's `xip` list. Measured with pgbench, one client, fourteen
-- transactions running: 1.16 ms a call, against 0.22 ms now (`select 1`: 0.11 ms); the
-- replicator computes one for every round, about one per replicated commit. PL/pgSQL keeps its
-- plans for the session, and the hash anti-join reads the activity once, and not at all when
-- no transaction is running below the snapshot's xmax.
--
-- Same rule as before: a transaction in `xip` is left out only when a backend not of this
-- database (`datid` distinct from this database's oid, as `datname IS DISTINCT FROM
-- current_database()` was through the view's join) is positively seen holding that id; one that
-- cannot be placed still counts, so no entry of this database's log can appear below the
-- horizon (migrations/0012).
CREATE OR REPLACE FUNCTION floe_log_horizon() RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    snap pg_snapshot := pg_current_snapshot();
    oldest bigint;
BEGIN
    SELECT min(r.xid) INTO oldest
      FROM (SELECT x::text::bigint AS xid FROM pg_snapshot_xip(snap) AS x) r
     WHERE NOT EXISTS (
           SELECT 1 FROM pg_stat_get_activity(NULL) AS a
            WHERE a.backend_xid IS NOT NULL
              AND a.datid IS DISTINCT FROM
                  (SELECT oid FROM pg_database WHERE datname = current_database())
              AND a.backend_xid::text::bigint = r.xid % 4294967296);
    RETURN coalesce(oldest, pg_snapshot_xmax(snap)::text::bigint) * 1048576;
END
$$;
