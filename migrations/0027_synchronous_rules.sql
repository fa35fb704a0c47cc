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

-- What each stream's destination made of synchronous commits, for the table's status: the
-- commits it applied for them, and those it could not take in time (refused, unreachable, behind
-- past the timeout), with the last one's time and reason. Written without waiting for the WAL
-- flush (db::ASYNCHRONOUS_COMMIT): figures for operators, not records anything rests on.
ALTER TABLE replication_stream
    ADD COLUMN sync_confirmed      bigint NOT NULL DEFAULT 0,
    ADD COLUMN sync_missed         bigint NOT NULL DEFAULT 0,
    ADD COLUMN sync_last_missed_at timestamptz,
    ADD COLUMN sync_last_missed    text;
