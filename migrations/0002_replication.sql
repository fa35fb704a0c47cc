-- Cross-region replication: peers, rules, per-(table, destination) streams, and the marks that make
-- a table or namespace a read-only replica.

-- Other regions this floe pushes to.
CREATE TABLE peer (
    region     text PRIMARY KEY,
    -- The peer floe's base URL (its /internal/v1 endpoint is called).
    base_url   text NOT NULL,
    -- Bearer token floe presents to the peer. Never returned by the API, never logged.
    credential text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- For each warehouse of a peer: where floe writes replica files (the root as the peer sees it).
CREATE TABLE peer_warehouse (
    region       text NOT NULL REFERENCES peer (region) ON DELETE CASCADE,
    warehouse    text NOT NULL,
    storage_root text NOT NULL,
    PRIMARY KEY (region, warehouse)
);

-- Scope: a warehouse (namespace and table NULL), a namespace and its children (table NULL), or one
-- table. The most specific rule that matches a table decides its destinations.
CREATE TABLE replication_rule (
    rule_id        uuid PRIMARY KEY,
    warehouse_id   uuid NOT NULL REFERENCES warehouse (warehouse_id),
    namespace      text[],
    table_name     text,
    -- keep-all (default: the source's snapshot expiry is not applied), follow-source, keep-days,
    -- keep-snapshots.
    retention_mode text NOT NULL DEFAULT 'keep-all'
                   CHECK (retention_mode IN ('keep-all', 'follow-source', 'keep-days', 'keep-snapshots')),
    retention_value integer CHECK (retention_value IS NULL OR retention_value > 0),
    -- Whether a drop at the source drops the replica (otherwise the replica is marked orphaned).
    replicate_drops boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (table_name IS NULL OR namespace IS NOT NULL)
);

CREATE UNIQUE INDEX replication_rule_scope
    ON replication_rule (warehouse_id, coalesce(namespace, '{}'), coalesce(table_name, ''));

CREATE TABLE replication_destination (
    rule_id          uuid NOT NULL REFERENCES replication_rule (rule_id) ON DELETE CASCADE,
    peer_region      text NOT NULL REFERENCES peer (region),
    warehouse        text NOT NULL,
    -- Levels put in front of the source namespace at the destination (aggregation without clashes).
    namespace_prefix text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (rule_id, peer_region, warehouse)
);

-- One table replicated to one destination. It outlives the table's row so a drop can be replicated.
CREATE TABLE replication_stream (
    stream_id        uuid PRIMARY KEY,
    table_id         uuid NOT NULL,
    warehouse_id     uuid NOT NULL REFERENCES warehouse (warehouse_id),
    rule_id          uuid REFERENCES replication_rule (rule_id) ON DELETE SET NULL,
    peer_region      text NOT NULL REFERENCES peer (region),
    dest_warehouse   text NOT NULL,
    namespace_prefix text[] NOT NULL DEFAULT '{}',
    -- Bumped by resync: the destination replaces a replica made by an older generation.
    generation       bigint NOT NULL DEFAULT 1,
    -- The source table version the destination has applied (0: nothing yet).
    applied_version  bigint NOT NULL DEFAULT 0,
    -- While backfilling: the source version being copied and the steps done of it.
    backfill_version bigint,
    backfill_location text,
    backfill_step    integer NOT NULL DEFAULT 0,
    -- The replica's table location, fixed when the backfill starts.
    dest_location    text,
    paused           boolean NOT NULL DEFAULT false,
    -- Set when the stream cannot progress without an operator (destination refuses, diverged).
    failed_reason    text,
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      uuid,
    lease_expires_at timestamptz,
    last_applied_at  timestamptz,
    last_applied_location text,
    -- The destination's name for the table (for status), as of the last apply.
    dest_namespace   text[],
    dest_table       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (table_id, peer_region, dest_warehouse)
);

CREATE INDEX replication_stream_due ON replication_stream (next_attempt_at)
    WHERE NOT paused AND failed_reason IS NULL;

-- Replica marks. A replica table is written only by replication; `source_table_id` is the table's
-- id in the region that pushes it (unique per source), `origin_region` where clients must write.
ALTER TABLE iceberg_table
    ADD COLUMN source_region     text,
    ADD COLUMN source_table_id   uuid,
    ADD COLUMN origin_region     text,
    ADD COLUMN origin_url        text,
    ADD COLUMN replica_generation bigint,
    -- The source position applied: (version, step); step > 0 only inside a backfill.
    ADD COLUMN replica_version   bigint,
    ADD COLUMN replica_step      integer,
    ADD COLUMN orphaned          boolean NOT NULL DEFAULT false,
    ADD CHECK ((source_region IS NULL) = (source_table_id IS NULL));

CREATE UNIQUE INDEX iceberg_table_replica
    ON iceberg_table (warehouse_id, source_region, source_table_id)
    WHERE source_region IS NOT NULL;

-- A namespace created by replication is read-only for clients.
ALTER TABLE namespace ADD COLUMN origin_region text;

ALTER TABLE commit_log DROP CONSTRAINT commit_log_kind_check;
ALTER TABLE commit_log ADD CONSTRAINT commit_log_kind_check CHECK (kind IN (
    'create-table', 'commit-table', 'drop-table', 'rename-table', 'register-table',
    'create-namespace', 'drop-namespace', 'update-namespace-properties', 'orphan-table'));
