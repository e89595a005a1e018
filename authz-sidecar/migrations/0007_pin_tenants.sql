-- Pins per tenant (docs/pins.md, "Tenants"): the same server name may be trusted differently by
-- each tenant, so the tenant joins every key. Rows written before this migration belong to the
-- tenant `default`. Portable SQL: both databases rebuild the tables (SQLite cannot change a
-- primary key in place), copy the rows and take the old names back.
CREATE TABLE authz_tool_pins_by_tenant (
    tenant      TEXT   NOT NULL,
    server      TEXT   NOT NULL,
    tool        TEXT   NOT NULL,
    hash        TEXT   NOT NULL,
    definition  TEXT   NOT NULL,
    source      TEXT   NOT NULL CHECK (source IN ('first_use', 'approved', 'manifest')),
    pinned_at   BIGINT NOT NULL,
    pinned_by   TEXT,
    PRIMARY KEY (tenant, server, tool)
);
INSERT INTO authz_tool_pins_by_tenant
    (tenant, server, tool, hash, definition, source, pinned_at, pinned_by)
    SELECT 'default', server, tool, hash, definition, source, pinned_at, pinned_by
    FROM authz_tool_pins;
DROP TABLE authz_tool_pins;
ALTER TABLE authz_tool_pins_by_tenant RENAME TO authz_tool_pins;

CREATE TABLE authz_pin_candidates_by_tenant (
    tenant      TEXT   NOT NULL,
    server      TEXT   NOT NULL,
    tool        TEXT   NOT NULL,
    hash        TEXT   NOT NULL,
    definition  TEXT   NOT NULL,
    status      TEXT   NOT NULL CHECK (status IN ('pending', 'rejected')),
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    decided_at  BIGINT,
    decided_by  TEXT,
    PRIMARY KEY (tenant, server, tool, hash)
);
INSERT INTO authz_pin_candidates_by_tenant
    (tenant, server, tool, hash, definition, status, first_seen, last_seen, decided_at, decided_by)
    SELECT 'default', server, tool, hash, definition, status, first_seen, last_seen, decided_at,
           decided_by
    FROM authz_pin_candidates;
DROP TABLE authz_pin_candidates;
ALTER TABLE authz_pin_candidates_by_tenant RENAME TO authz_pin_candidates;
