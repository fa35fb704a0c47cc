-- Deferred work as durable jobs: a drop with purge records its purge here in the drop's own
-- transaction, and workers lease jobs (as they lease streams) and delete the files. A crash
-- mid-purge leaves the job; its lease expires and the purge resumes; the drop's answer does not
-- wait for the files.
CREATE TABLE purge_job (
    job_id            uuid PRIMARY KEY,
    warehouse_id      uuid NOT NULL REFERENCES warehouse (warehouse_id),
    -- For logs: the table's name when it was dropped.
    table_name        text NOT NULL,
    -- The dropped table's last metadata file: what the purge reads to find its files.
    metadata_location text NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_owner       uuid,
    lease_expires_at  timestamptz,
    lease_token       bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX purge_job_due ON purge_job (next_attempt_at);
