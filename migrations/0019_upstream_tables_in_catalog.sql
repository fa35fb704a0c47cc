-- The tables of upstream warehouses are rows of `iceberg_table`, like builtin ones (in namespace
-- rows of their warehouse, made as their tables are first logged): one table of tables, so
-- that replication's rules, streams, backfill and status, which read `iceberg_table`, serve
-- upstream warehouses as they serve builtin ones. Such a row is what floe last logged of the
-- upstream's table, never what it serves: an upstream warehouse's requests go to the upstream.
INSERT INTO namespace (namespace_id, warehouse_id, levels)
SELECT gen_random_uuid(), warehouse_id, namespace
  FROM (SELECT DISTINCT warehouse_id, namespace FROM upstream_table) AS logged
    ON CONFLICT (warehouse_id, levels) DO NOTHING;

-- `location` stays NULL until the table's next entry (as for rows older than migration 0004).
INSERT INTO iceberg_table (table_id, table_uuid, warehouse_id, namespace_id, name,
                           metadata_location, version, updated_at)
SELECT u.table_id, u.table_uuid, u.warehouse_id, n.namespace_id, u.name, u.metadata_location,
       u.version, u.updated_at
  FROM upstream_table u
  JOIN namespace n ON n.warehouse_id = u.warehouse_id AND n.levels = u.namespace;

DROP TABLE upstream_table;
