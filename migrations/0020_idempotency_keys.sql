-- Idempotency-Key (Iceberg REST spec 1.11): the final answer to each keyed request, by the
-- principal that sent it, replayed to a retry with the same key (`http::idempotency`).
CREATE TABLE idempotency_answer (
    principal    text NOT NULL,
    key          uuid NOT NULL,
    -- The method and route template the key was first used on, and a digest of the request
    -- (method, path, query, body): a key reused for another request is refused.
    endpoint     text NOT NULL,
    fingerprint  bytea NOT NULL,
    status       smallint NOT NULL,
    content_type text,
    -- NULL when the answer was too large to keep: a retry is answered from the current state.
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_answer_created_at ON idempotency_answer (created_at);

-- A keyed request's log entries carry its key (`details.idempotency-key`), written in the
-- mutation's own transaction: whether it took effect is known even when its answer was lost.
CREATE INDEX commit_log_idempotency_key ON commit_log ((details->>'idempotency-key'))
    WHERE details ? 'idempotency-key';
