-- The catalog (warehouses, namespaces, table pointers) and the sequenced update log.

CREATE TABLE warehouse (
    warehouse_id uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    storage_root text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE namespace (
    namespace_id uuid PRIMARY KEY,
    warehouse_id uuid NOT NULL REFERENCES warehouse (warehouse_id),
    -- The namespace's levels; a child's levels start with its parent's.
    levels       text[] NOT NULL CHECK (cardinality(levels) > 0),
    properties   jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (warehouse_id, levels)
);

CREATE TABLE iceberg_table (
    -- floe's own id for this catalog entry; the log's per-table versions count against it.
    table_id          uuid PRIMARY KEY,
    -- The Iceberg table UUID from the metadata.
    table_uuid        uuid NOT NULL,
    warehouse_id      uuid NOT NULL REFERENCES warehouse (warehouse_id),
    namespace_id      uuid NOT NULL REFERENCES namespace (namespace_id),
    name              text NOT NULL,
    -- The current metadata file. Metadata files are immutable, so floe caches their parsed content
    -- by location and the row need not carry it.
    metadata_location text NOT NULL,
    -- The table version of the newest log entry for this table (1 = created).
    version           bigint NOT NULL CHECK (version > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace_id, name),
    UNIQUE (warehouse_id, table_uuid)
);

-- The update log. Rows are appended inside the transaction that makes the change, after a
-- transaction-scoped advisory lock that is held until COMMIT, so `seq` order is commit order and a
-- reader paging with `after=` never skips a row that commits later with a smaller seq.
CREATE SEQUENCE commit_log_seq AS bigint;

CREATE TABLE commit_log (
    seq                        bigint PRIMARY KEY DEFAULT nextval('commit_log_seq'),
    warehouse_id               uuid NOT NULL REFERENCES warehouse (warehouse_id),
    -- All entries of one multi-table transaction share a group.
    txn_group                  uuid NOT NULL,
    kind                       text NOT NULL CHECK (kind IN (
                                   'create-table', 'commit-table', 'drop-table', 'rename-table',
                                   'register-table', 'create-namespace', 'drop-namespace',
                                   'update-namespace-properties')),
    namespace                  text[] NOT NULL,
    table_name                 text,
    table_id                   uuid,
    table_uuid                 uuid,
    table_version              bigint,
    -- Canonical TableUpdates (TableMetadataBuilder's build().changes) and the checked requirements.
    changes                    jsonb NOT NULL DEFAULT '[]'::jsonb,
    requirements               jsonb NOT NULL DEFAULT '[]'::jsonb,
    -- The whole resulting metadata, for entries that establish a table (create, register).
    metadata                   jsonb,
    -- Kind-specific facts: rename target, purge flag, namespace properties.
    details                    jsonb NOT NULL DEFAULT '{}'::jsonb,
    principal                  text NOT NULL,
    origin_region              text NOT NULL,
    committed_at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    previous_metadata_location text,
    new_metadata_location      text,
    UNIQUE (table_id, table_version),
    CHECK ((table_id IS NULL) = (table_version IS NULL))
);

ALTER SEQUENCE commit_log_seq OWNED BY commit_log.seq;

-- Appends one entry in one round trip: takes the ordering lock (transaction-scoped, so held until
-- COMMIT), draws `seq`, inserts, and NOTIFYs `floe_log` with the new seq.
CREATE FUNCTION floe_log_append(
    p_warehouse_id uuid, p_txn_group uuid, p_kind text, p_namespace text[], p_table_name text,
    p_table_id uuid, p_table_uuid uuid, p_table_version bigint, p_changes jsonb,
    p_requirements jsonb, p_metadata jsonb, p_details jsonb, p_principal text,
    p_origin_region text, p_previous_metadata_location text, p_new_metadata_location text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_seq bigint;
BEGIN
    -- 7380396369697861479 is "floe-log" in ASCII: the one lock that orders all appends.
    PERFORM pg_advisory_xact_lock(7380396369697861479);
    INSERT INTO commit_log (warehouse_id, txn_group, kind, namespace, table_name, table_id,
        table_uuid, table_version, changes, requirements, metadata, details, principal,
        origin_region, previous_metadata_location, new_metadata_location)
    VALUES (p_warehouse_id, p_txn_group, p_kind, p_namespace, p_table_name, p_table_id,
        p_table_uuid, p_table_version, p_changes, p_requirements, p_metadata, p_details,
        p_principal, p_origin_region, p_previous_metadata_location, p_new_metadata_location)
    RETURNING seq INTO new_seq;
    PERFORM pg_notify('floe_log', new_seq::text);
    RETURN new_seq;
END
$$;
