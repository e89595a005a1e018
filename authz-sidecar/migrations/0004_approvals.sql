-- Human approvals of calls the policy holds (docs/policy.md, "Human approval"). Portable SQL like
-- 0001: the same text runs on SQLite and PostgreSQL. Times are seconds since the Unix epoch.
--
-- One row per held request. `request_key` is the SHA-256 of what the approval is for (agent,
-- delegation chain, server, method, target, arguments): a retry of the same call finds it.
-- `status` moves pending -> approved | rejected, and approved -> used (an approval lets exactly
-- one call through). A row past `expires_at` counts for nothing: a pending request expires
-- unanswered, an approval expires unused.
CREATE TABLE authz_approvals (
    id           TEXT   PRIMARY KEY NOT NULL,
    request_key  TEXT   NOT NULL,
    agent_id     TEXT   NOT NULL,
    delegation   TEXT   NOT NULL,
    server       TEXT   NOT NULL,
    method       TEXT   NOT NULL,
    target       TEXT   NOT NULL,
    arguments    TEXT   NOT NULL,
    reason       TEXT   NOT NULL,
    trace_id     TEXT   NOT NULL,
    status       TEXT   NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'used')),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    decided_at   BIGINT,
    decided_by   TEXT,
    used_at      BIGINT
);
CREATE INDEX authz_approvals_by_key ON authz_approvals (request_key, created_at);
CREATE INDEX authz_approvals_by_status ON authz_approvals (status, created_at);
