-- The agent registry (docs/identity.md). Portable SQL: the same migration runs on SQLite and
-- PostgreSQL. Times are seconds since the Unix epoch; list-valued fields are JSON text written
-- and read only by behavry-authz (src/registry.rs).
CREATE TABLE authz_agents (
    id          TEXT   PRIMARY KEY NOT NULL,
    owner       TEXT,
    roles       TEXT   NOT NULL,
    scopes      TEXT   NOT NULL,
    servers     TEXT   NOT NULL,
    enabled     BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Public keys an agent signs its client assertions with (RFC 7523 §2.2). `kid` is unique per
-- agent; the JWK is stored as submitted after validation (public members only).
CREATE TABLE authz_agent_keys (
    agent_id    TEXT   NOT NULL REFERENCES authz_agents (id) ON DELETE CASCADE,
    kid         TEXT   NOT NULL,
    jwk         TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (agent_id, kid)
);
