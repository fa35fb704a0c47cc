-- Upstream warehouses: what floe knows of each table an upstream catalog serves, and the commits
-- floe forwards to it (see src/upstream/commit.rs for the protocol).

-- A table of an upstream warehouse, as floe last logged it: the identity its log entries carry
-- (`table_id`, versions counted from 1 at the first entry) and the metadata its last entry names.
CREATE TABLE upstream_table (
    table_id          uuid PRIMARY KEY,
    warehouse_id      uuid NOT NULL REFERENCES warehouse (warehouse_id),
    namespace         text[] NOT NULL CHECK (cardinality(namespace) > 0),
    name              text NOT NULL,
    table_uuid        uuid NOT NULL,
    version           bigint NOT NULL CHECK (version > 0),
    metadata_location text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (warehouse_id, namespace, name)
);

-- A commit floe forwarded (or is about to): recorded, and committed, before the request leaves, so
-- that a crash or a lost answer leaves a trace. `pending` until floe knows the upstream's answer;
-- then `done` (its entries are in the log, appended in the transaction that set `done`) or
-- `failed` (the upstream refused it, or it is settled as never applied).
CREATE TABLE upstream_commit_intent (
    intent_id    uuid PRIMARY KEY,
    warehouse_id uuid NOT NULL REFERENCES warehouse (warehouse_id),
    txn_group    uuid NOT NULL,
    -- [{"namespace": [...], "name": "...", "previous": "<metadata location>" | null,
    --   "requirements": [...], "updates": [...]}], one per table, in the request's order.
    tables       jsonb NOT NULL,
    principal    text NOT NULL,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    settled_at   timestamptz,
    -- Why it was settled as it was, for operators.
    outcome      text
);

CREATE INDEX upstream_commit_intent_pending ON upstream_commit_intent (warehouse_id, created_at)
    WHERE state = 'pending';

-- `observe-table`: a state of an upstream table that floe learned by reading the upstream (a table
-- it had not seen, or commits made there past floe), with the whole metadata, as a register.
ALTER TABLE commit_log DROP CONSTRAINT commit_log_kind_check;
ALTER TABLE commit_log ADD CONSTRAINT commit_log_kind_check CHECK (kind IN (
    'create-table', 'commit-table', 'drop-table', 'rename-table', 'register-table',
    'create-namespace', 'drop-namespace', 'update-namespace-properties', 'orphan-table',
    'observe-table'));
