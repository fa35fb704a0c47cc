-- Multi-table transactions applied atomically at a destination (issue 14, item 5).
--
-- A source logs a transaction's entries with one `txn_group` and, when it changed several tables,
-- a `group-size` detail (log::GROUP_SIZE_DETAIL). Its streams find how many of a group's entries
-- go to one destination warehouse by this partial index: only such entries are in it, so single
-- commits pay nothing for it.
CREATE INDEX commit_log_transaction_groups ON commit_log (txn_group)
    WHERE details ? 'group-size';

-- The updates of a group that reached this destination before the rest of it: each is held here,
-- applied to nothing, until the group's last update arrives and applies all of them in one
-- transaction (catalog::replica_group). `request` is the update as its source sent it (the newest
-- send, with its newest lease token); `parked_at` is when it first arrived, from which a group
-- that never completes is given up on and its members applied apart.
CREATE TABLE replica_group_member (
    group_id        uuid NOT NULL,
    warehouse_id    uuid NOT NULL REFERENCES warehouse (warehouse_id),
    source_region   text NOT NULL,
    source_table_id uuid NOT NULL,
    request         jsonb NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, source_region, source_table_id)
);

-- A replica's parked updates, to clear its older groups' when a newer one parks.
CREATE INDEX replica_group_member_by_table
    ON replica_group_member (source_region, source_table_id);
