-- Revocations the proxy enforces although the token still verifies (docs/identity.md,
-- "Revocation"). Portable SQL like 0001: the same text runs on SQLite and PostgreSQL. Times are
-- seconds since the Unix epoch.

-- Revoked access tokens by `jti` (RFC 7519 §4.1.7). `expires_at` is the token's `exp`: after it
-- (plus Envoy's clock-skew allowance) the token no longer verifies, so the row is purged.
CREATE TABLE authz_revoked_tokens (
    token_id    TEXT   PRIMARY KEY NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT NOT NULL
);

-- Agents whose every token is refused. Disabled agents are not stored here: they are read from
-- authz_agents.enabled. `reason` is `revoked` (through the admin API) or `deleted` (a tombstone:
-- the deleted agent's tokens still verify until they expire). Purged after `expires_at`.
CREATE TABLE authz_revoked_agents (
    agent_id    TEXT   PRIMARY KEY NOT NULL,
    reason      TEXT   NOT NULL CHECK (reason IN ('revoked', 'deleted')),
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT NOT NULL
);

-- The version of the revocation list: raised in the same transaction as every change, so it
-- never goes backwards across restarts and replicas sharing the database agree on it. It starts
-- at 1 because the filter treats 0 as "no list yet".
CREATE TABLE authz_revocation_version (
    id       BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    version  BIGINT NOT NULL
);
INSERT INTO authz_revocation_version (id, version) VALUES (1, 1);
