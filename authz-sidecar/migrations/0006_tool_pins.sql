-- Pinned tool definitions (docs/pins.md). Portable SQL like 0001: the same text runs on SQLite
-- and PostgreSQL. Times are seconds since the Unix epoch. Hashes are `sha256:` and the hex SHA-256
-- of the definition's RFC 8785 canonical form; definitions are stored in that form.
--
-- The definition each tool is pinned to. `source`: `first_use` (trusted on first use),
-- `approved` (an administrator approved a changed or unpinned definition), `manifest` (from a
-- signed manifest).
CREATE TABLE authz_tool_pins (
    server      TEXT   NOT NULL,
    tool        TEXT   NOT NULL,
    hash        TEXT   NOT NULL,
    definition  TEXT   NOT NULL,
    source      TEXT   NOT NULL CHECK (source IN ('first_use', 'approved', 'manifest')),
    pinned_at   BIGINT NOT NULL,
    pinned_by   TEXT,
    PRIMARY KEY (server, tool)
);

-- Definitions a server listed that are not the pinned one, held for a decision: `pending` until
-- approved (the row then becomes the pin and is removed) or `rejected`.
CREATE TABLE authz_pin_candidates (
    server      TEXT   NOT NULL,
    tool        TEXT   NOT NULL,
    hash        TEXT   NOT NULL,
    definition  TEXT   NOT NULL,
    status      TEXT   NOT NULL CHECK (status IN ('pending', 'rejected')),
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    decided_at  BIGINT,
    decided_by  TEXT,
    PRIMARY KEY (server, tool, hash)
);

-- The version of the pin set the proxies poll: raised in the same transaction as every change to
-- a pin or a rejection, so replicas sharing the database agree on it and it never goes back.
CREATE TABLE authz_pin_version (
    id       BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    version  BIGINT NOT NULL
);
INSERT INTO authz_pin_version (id, version) VALUES (1, 1);
