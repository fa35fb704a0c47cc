-- The streams with work of their own (new, backfilling, retrying): the replicator looks for
-- these in every round, and with this index it reads only them, not every caught-up stream of a
-- large catalog. The predicate is the one `lease_streams` uses, word for word in meaning.
CREATE INDEX replication_stream_own_work ON replication_stream (next_attempt_at)
    WHERE NOT paused AND failed_reason IS NULL
      AND (backfill_version IS NOT NULL OR applied_version = 0 OR attempts > 0);
