-- Leases are fenced per lease, not per instance: each lease of a stream takes the next token, and
-- every progress update names the token it was leased with. Pause and resync take a new token, so
-- a task still working under the old one is refused at its next step and stops.
ALTER TABLE replication_stream ADD COLUMN lease_token bigint NOT NULL DEFAULT 0;
