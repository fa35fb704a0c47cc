-- Synchronous replication (issue 14, item 4). A rule with `sync_min_acks` set is synchronous: a
-- commit to a table it governs is acknowledged only once at least that many of its destinations
-- have applied it, and fails, committed nowhere, when they cannot say they will within
-- `sync_timeout_ms` (replication::sync says how). Both are NULL for an asynchronous rule.
ALTER TABLE replication_rule
    ADD COLUMN sync_min_acks   integer CHECK (sync_min_acks >= 1),
    ADD COLUMN sync_timeout_ms integer CHECK (sync_timeout_ms BETWEEN 1 AND 600000),
    ADD CHECK ((sync_min_acks IS NULL) = (sync_timeout_ms IS NULL));

-- A commit asks whether a synchronous rule may govern its table by the rules of its warehouse
-- (db::catalog::get_table): few rows, found by this index rather than the scope index.
CREATE INDEX replication_rule_synchronous ON replication_rule (warehouse_id)
    WHERE sync_min_acks IS NOT NULL;
