-- The audit trail: every management action and every refused request (401, 403), with who made it,
-- what it was, on what, and how it ended. Catalog writes are in the update log with their principal.
CREATE TABLE audit_event (
    seq       bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    principal text NOT NULL,
    -- The route's audit name (e.g. `peer.put`, `table.commit`).
    action    text NOT NULL,
    -- The request's method and path.
    target    text NOT NULL,
    -- `succeeded`, `failed` or `refused`.
    outcome   text NOT NULL,
    status    integer NOT NULL,
    -- Why it failed or was refused (the answer's message); never a credential.
    detail    text
);
