-- Apply requests are fenced per lease too, at the destination. Lease tokens come from one sequence
-- (not a per-stream counter), so a newer lease of any stream holds a larger token than every older
-- lease, including those of a stream that was deleted and made again for the same table.
CREATE SEQUENCE replication_lease_token;
SELECT setval('replication_lease_token',
              greatest((SELECT max(lease_token) FROM replication_stream), 0) + 1, false);

-- The largest lease token a destination has accepted a change under, per replica (kept after the
-- replica is dropped, so that a revoked task cannot create it again). A change sent under a
-- smaller token comes from a lease that was revoked (pause, resync, expiry) and is refused.
CREATE TABLE replica_fence (
    warehouse_id    uuid NOT NULL REFERENCES warehouse (warehouse_id),
    source_region   text NOT NULL,
    source_table_id uuid NOT NULL,
    lease_token     bigint NOT NULL,
    PRIMARY KEY (warehouse_id, source_region, source_table_id)
);
