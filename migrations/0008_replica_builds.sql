-- A replica's next generation (its first, a resync, a restart) is built here, beside the replica
-- that readers see, and swapped in by one transaction when it is complete: readers only ever see
-- a complete state, and the replica they see never loses what it holds while a build runs.
CREATE TABLE replica_build (
    warehouse_id      uuid NOT NULL REFERENCES warehouse (warehouse_id),
    source_region     text NOT NULL,
    source_table_id   uuid NOT NULL,
    generation        bigint NOT NULL,
    -- The source position the build has reached: (version, step), as a replica's.
    version           bigint NOT NULL,
    step              integer NOT NULL,
    -- The build's metadata so far (a file under the replica's location nothing serves).
    metadata_location text NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (warehouse_id, source_region, source_table_id)
);
