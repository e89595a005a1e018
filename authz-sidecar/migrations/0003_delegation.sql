-- Delegation and workload identity fields of an enrollment (docs/identity.md). Portable SQL like
-- 0001: one ADD COLUMN per statement runs the same on SQLite and PostgreSQL. JSON arrays of
-- strings, written and read only by behavry-authz (src/registry.rs); existing agents get none.

-- Agents that may act for this one through token exchange (RFC 8693 §4.4 `may_act`).
ALTER TABLE authz_agents ADD COLUMN may_act TEXT NOT NULL DEFAULT '[]';
-- Kubernetes service accounts (`system:serviceaccount:<ns>:<name>`) mapped to this agent.
ALTER TABLE authz_agents ADD COLUMN service_accounts TEXT NOT NULL DEFAULT '[]';
-- MCP clients the agent is enrolled to use (e.g. `claude-code`).
ALTER TABLE authz_agents ADD COLUMN clients TEXT NOT NULL DEFAULT '[]';
