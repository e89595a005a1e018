//! Wire types shared by the filter and the services.
//!
//! Every type uses one serde convention: camelCase field names, unknown fields rejected on
//! requests we accept, so a version skew between filter and service is an error and not a silent
//! misreading. Paths are versioned (`/v1/...`); see `docs/contracts.md` for examples.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Path of the authz-sidecar's decision endpoint.
pub const DECIDE_PATH: &str = "/v1/decide";
/// Path of the audit-sink's batch ingestion endpoint (NDJSON body, one [`AuditEvent`] a line).
pub const EVENTS_PATH: &str = "/v1/events";
/// Prefix of the audit-sink's trace lookup endpoint: `GET /v1/traces/{trace_id}`.
pub const TRACES_PATH: &str = "/v1/traces";
/// The authz-sidecar's revocation list, polled by the filter: `GET /v1/revocations`.
pub const REVOCATIONS_PATH: &str = "/v1/revocations";

/// Answer of `GET /v1/revocations`: what the proxy must refuse although the token verifies.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevocationList {
    /// Grows with every change, so a poller can tell a new list from the one it holds.
    pub version: u64,
    /// Revoked token ids (`jti`), kept until the token would have expired anyway.
    #[serde(default)]
    pub token_ids: Vec<String>,
    /// Agents (`sub`) whose every token is revoked (disabled or deleted agents).
    #[serde(default)]
    pub agents: Vec<String>,
}

/// `POST /v1/decide`: the filter asks whether one governed MCP request may proceed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionRequest {
    /// W3C trace id (32 lowercase hex digits) of the call.
    pub trace_id: String,
    /// The authenticated agent, as verified by Envoy's `jwt_authn`.
    pub agent: AgentIdentity,
    /// What the agent asks for.
    pub request: RequestFacts,
}

/// The verified identity of the calling agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentIdentity {
    /// The token's `sub` claim: the agent id.
    pub id: String,
}

/// Facts about one MCP request that policy decides on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestFacts {
    /// Logical name of the upstream MCP server (from the filter's route table).
    pub server: String,
    /// JSON-RPC method, e.g. `tools/call`.
    pub method: String,
    /// `params.name` of a `tools/call`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// `params.uri` of a `resources/read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
    /// `params.name` of a `prompts/get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_name: Option<String>,
    /// `params.arguments` of a `tools/call` or `prompts/get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// `Mcp-Session-Id` header, when the revision has sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Negotiated or declared MCP protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// `clientInfo` as the client declared it (`initialize` or `_meta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_info: Option<Value>,
}

/// Answer of `POST /v1/decide`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionResponse {
    /// Whether the request may proceed.
    pub allow: bool,
    /// Human-readable reasons (for a denial: why; shown to the agent in the JSON-RPC error).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Identifiers of the policy rules that produced the decision.
    #[serde(default)]
    pub rule_ids: Vec<String>,
    /// `sha256:<hex>` digest of the policy bundle that decided.
    #[serde(default)]
    pub bundle_digest: String,
}

/// The three stages of a Decision Trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuditKind {
    /// What the agent asked for, recorded before any decision.
    Intent,
    /// What policy decided, and why.
    Decision,
    /// What happened upstream, recorded when the response ends.
    Outcome,
}

impl AuditKind {
    /// The lowercase name used in event ids and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Intent => "intent",
            AuditKind::Decision => "decision",
            AuditKind::Outcome => "outcome",
        }
    }
}

/// One audit event, as shipped by the filter to `POST /v1/events` (one JSON object a line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEvent {
    /// Globally unique and stable across retries: `{traceId}-{spanId}-{kind}`. The sink ignores a
    /// second event with the same id (at-least-once delivery, exactly-once storage).
    pub event_id: String,
    /// W3C trace id (32 lowercase hex) shared by all events of one call.
    pub trace_id: String,
    /// Span id (16 lowercase hex) of the call inside the trace.
    pub span_id: String,
    /// Stage of the call.
    pub kind: AuditKind,
    /// Milliseconds since the Unix epoch, from Envoy's clock.
    pub time_ms: u64,
    /// Agent id (token `sub`), when authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What was asked.
    pub request: RequestFacts,
    /// Stage-specific details (decision: allow, reasons, bundle digest; outcome: status, error).
    #[serde(default)]
    pub detail: Value,
}

/// Answer of `POST /v1/events` once the batch is durably committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestAck {
    /// Events newly appended by this batch.
    pub appended: u64,
    /// Events already present (same `eventId`), ignored.
    pub duplicates: u64,
}
