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
    /// What the proxy knows of the called tool from the server's listing, when it has seen one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolFacts>,
    /// For a request that names a task (`request.taskId`): the `tools/call` that created it, as
    /// the proxy recorded it when the server answered with the task; absent when the proxy saw
    /// no such task created on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskFacts>,
    /// The proxy holds leases of allowed calls and gives back what it does not use
    /// (docs/policy.md, "Leases"): without it, the sidecar grants none (a proxy that would drop a
    /// lease would leave its calls spent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holds_leases: bool,
    /// What the proxy's content scanners found in the request's arguments (docs/dlp.md): policy
    /// input `findings`. Never the values, only keyed hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<ContentFinding>,
    /// What reached this call from the agent's recent answers (docs/injection.md, "Cross-server
    /// flow"): findings whose values another server returned, answers flagged for prompt
    /// injection. Policy input `flow`.
    #[serde(default, skip_serializing_if = "crate::flow::FlowFacts::is_empty")]
    pub flow: crate::flow::FlowFacts,
    /// The server is blocked for a poisoned tool (docs/poisoning.md): policy input
    /// `serverPoisoning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_poisoning: Option<ServerPoisoning>,
}

/// A sensitive value a content scanner found (docs/dlp.md): which detector, how bad, where (an
/// RFC 6901 pointer), and a keyed hash of the value, never the value itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentFinding {
    /// Detector id (`payment_card`, `github_token`, a custom detector's id, …).
    pub detector: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: crate::dlp::Severity,
    /// RFC 6901 pointer of the string that holds it: into the request's `arguments` for a
    /// request's findings, into the JSON-RPC message for what the server sent.
    pub pointer: String,
    /// `hmac-sha256:` and 32 hex digits ([`crate::dlp::FindingKey::hash`]).
    pub hash: String,
}

/// The call that created a task (MCP 2025-11-25 basic/utilities/tasks: a task-augmented
/// `tools/call` answered with `CreateTaskResult`), recorded by the proxy: tasks are bound to
/// the agent whose call created them ("Task Isolation and Access Control").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskFacts {
    /// The agent whose `tools/call` created the task.
    pub agent: String,
    /// The delegation chain of that call (current actor first; empty when the agent acted for
    /// itself): a task is bound to the whole authorization context, not to the agent alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation: Vec<String>,
    /// The tool that call named.
    pub tool: String,
}

impl TaskFacts {
    /// A record that binds the task to no one (a server that handed out its id twice).
    pub fn unbound(tool: &str) -> TaskFacts {
        TaskFacts {
            agent: String::new(),
            delegation: Vec::new(),
            tool: tool.to_owned(),
        }
    }

    /// Whether the task belongs to `agent` acting through `delegation`.
    pub fn belongs_to(&self, agent: &str, delegation: &[String]) -> bool {
        !self.agent.is_empty() && self.agent == agent && self.delegation == delegation
    }
}

/// Facts about the tool a `tools/call` names, as the server described it in `tools/list`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolFacts {
    /// The tool's `annotations` (MCP `ToolAnnotations`: `readOnlyHint`, `destructiveHint`, ...),
    /// hints from the server that policy may only use to restrict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
    /// What the proxy's poisoning scanner made of the listed definition (docs/poisoning.md);
    /// absent when nothing fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poisoning: Option<PoisoningFacts>,
    /// The listed definition's hash and pin status (docs/pins.md); absent when the proxy had no
    /// pin set when the tool was listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<crate::pins::PinFacts>,
    /// Other servers behind this proxy that list a tool of the same name (docs/poisoning.md,
    /// "Name collisions"), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collides_with: Vec<String>,
}

/// A tool definition's poisoning verdict as policy sees it: `input.tool.poisoning`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoisoningFacts {
    /// 0–100.
    pub score: u32,
    /// The ids of the rules that fired, sorted.
    pub rules: Vec<String>,
}

/// The `poisoning` obligation of an allowed `tools/list`: tools whose definitions score at least
/// `hideFrom` are removed from the answer (the proxy scans each definition).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoisoningHiding {
    /// The lowest score that hides a tool (1–100).
    pub hide_from: u32,
    /// The lowest score of one tool that blocks its whole server: every tool of the listing is
    /// hidden, and the server is marked poisoned for the calls that follow (`serverPoisoning`)
    /// until a listing of it has no tool at that score (docs/poisoning.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_server_from: Option<u32>,
}

/// A server whose listing had a tool scoring at or above the `blockServerFrom` of the listing's
/// decision: policy input `serverPoisoning`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerPoisoning {
    /// The tool with the highest score.
    pub tool: String,
    /// Its score.
    pub score: u32,
}

impl ToolFacts {
    /// Whether the annotations say destructive: `destructiveHint: true` and not
    /// `readOnlyHint: true` (MCP `ToolAnnotations`; the default bundle reads them the same way).
    pub fn is_destructive(&self) -> bool {
        let hint = |name: &str| {
            self.annotations
                .as_ref()
                .and_then(|a| a.get(name))
                .and_then(Value::as_bool)
        };
        hint("destructiveHint") == Some(true) && hint("readOnlyHint") != Some(true)
    }
}

/// The verified identity of the calling agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentIdentity {
    /// The token's `sub` claim: the agent id (for a delegated token, the party acted for).
    pub id: String,
    /// Who acts for `id` (RFC 8693 §4.1 `act`), current actor first, then the actors before
    /// it. Empty when the agent acts for itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation: Vec<String>,
    /// The token's scopes (RFC 9068 §2.2.3 `scope`, split on spaces).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Whether the request's client fingerprint matches a client the agent is enrolled to use.
    /// Set by the authz-sidecar from its registry before policy runs (a value sent by the
    /// filter is replaced); absent when the request has no fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_matches: Option<bool>,
}

/// Path of the authz-sidecar's upstream credential endpoint, called by the filter only (it
/// authenticates with the proxy credential as a bearer token).
pub const CREDENTIALS_PATH: &str = "/v1/credentials";

/// `POST /v1/credentials`: the filter asks for the credential that replaces the agent's
/// `Authorization` header on the way to one upstream MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialRequest {
    /// Logical name of the upstream MCP server (the filter route's `server`).
    pub server: String,
    /// The verified agent (and its delegation chain) the request is made for.
    pub agent: AgentIdentity,
    /// The agent token's `exp` (seconds since the epoch): an exchanged token never outlives it.
    pub subject_expires_at: u64,
}

/// What kind of upstream credential a [`CredentialResponse`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CredentialKind {
    /// An access token minted for the upstream by token exchange (RFC 8693).
    Exchanged,
    /// A static key read from the secret store.
    Secret,
}

/// Answer of `POST /v1/credentials`. `value` is a secret: never logged, never audited.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialResponse {
    /// How the credential was obtained.
    pub kind: CredentialKind,
    /// Lowercase name of the request header to set (`authorization`, `x-api-key`...).
    pub header: String,
    /// The full header value (`Bearer <token>`, or the key with its configured prefix).
    pub value: String,
    /// Seconds the filter may reuse it for (per agent, delegation chain and server).
    pub expires_in_secs: u64,
    /// Where it came from, safe to audit: the exchanged token's `jti`, or the secret reference.
    pub reference: String,
}

impl std::fmt::Debug for CredentialResponse {
    // The value is a credential: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialResponse")
            .field("kind", &self.kind)
            .field("header", &self.header)
            .field("value", &"[REDACTED]")
            .field("expires_in_secs", &self.expires_in_secs)
            .field("reference", &self.reference)
            .finish()
    }
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
    /// The size of `arguments` as compact JSON (serde_json), in bytes: one measure of it for the
    /// policy's size limit and for the proxy that keeps a lease's `maxArgumentBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments_bytes: Option<u64>,
    /// `params.taskId` of `tasks/get`, `tasks/result`, `tasks/cancel` and `tasks/update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// `Mcp-Session-Id` header, when the revision has sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Negotiated or declared MCP protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// `clientInfo` as the client declared it (`initialize` or `_meta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_info: Option<Value>,
    /// The client's fingerprint: from this request's `clientInfo`, or from the `initialize` of
    /// its session, plus `User-Agent` and header shape (docs/fingerprints.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<crate::fingerprint::ClientFingerprint>,
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
    /// What the proxy must do with the decision (docs/policy.md, "Obligations").
    #[serde(default, skip_serializing_if = "Obligations::is_empty")]
    pub obligations: Obligations,
    /// Whether the client fingerprint matched the agent's enrolled clients (see
    /// [`AgentIdentity::client_matches`]); the filter audits a mismatch with the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_matches: Option<bool>,
    /// The human approval this allowed call used up, audited with the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalGrant>,
}

/// What a decision obliges the proxy (or the sidecar) to do. An obligation the enforcing side does
/// not know is an error, never ignored: every member is listed here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Obligations {
    /// Denial: answer as if the target did not exist (a tool the agent may not see is reported
    /// as unknown, not as forbidden).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conceal: bool,
    /// Denial for want of this scope: the filter answers HTTP 403 with an RFC 6750 §3.1
    /// `insufficient_scope` challenge naming it (MCP authorization, step-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_scope: Option<String>,
    /// Denial that a human approval would lift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<ApprovalRequirement>,
    /// The proxy may reuse this decision for the same agent, delegation chain, scopes, server,
    /// method and target for this many seconds (dropped when the bundle digest changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_seconds: Option<u32>,
    /// Allow: what the call consumes of the blast-radius budgets (recorded by the sidecar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConsumption>,
    /// Allow: JSON pointers (RFC 6901) into the call's `result` to replace with `[REDACTED]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
    /// Allow of a listing (`tools/list`, ...): which entries the agent may see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible: Option<Visibility>,
    /// Allow of a call: the proxy may allow this many more calls like it by itself (docs/policy.md,
    /// "Leases"); the sidecar reserves their budget with this call's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Allow of a `tools/list`: hide the tools whose definitions the proxy's poisoning scanner
    /// scores at or above `hideFrom` (docs/poisoning.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poisoning: Option<PoisoningHiding>,
    /// Allow: what the proxy does with what its content scanners find in what the server sends
    /// for this call (docs/dlp.md). Findings no list names are only recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp: Option<DlpActions>,
    /// Allow of a `tools/list`: hide the tools whose listed definitions have one of these pin
    /// statuses (docs/pins.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins: Option<crate::pins::PinQuarantine>,
    /// Allow of a call: what the proxy does with prompt injection its scanner finds in the
    /// answer (docs/injection.md). Without it a verdict is only recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection: Option<InjectionActions>,
}

/// The `injection` obligation: from which score of the prompt-injection verdict on a call's
/// answer the proxy wraps the flagged text in data delimiters, redacts its spans, or withholds
/// the answer. A threshold that is absent is never reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectionActions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrap_from: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact_from: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_from: Option<u32>,
}

impl InjectionActions {
    /// What happens to an answer whose verdict scores `score` (above 0): block wins over
    /// redact, redact over wrap; none reached means flag (record only).
    pub fn action_for(&self, score: u32) -> InjectionAction {
        let reached = |from: Option<u32>| from.is_some_and(|from| score >= from.max(1));
        if reached(self.block_from) {
            InjectionAction::Block
        } else if reached(self.redact_from) {
            InjectionAction::Redact
        } else if reached(self.wrap_from) {
            InjectionAction::Wrap
        } else {
            InjectionAction::Flag
        }
    }
}

/// What the proxy does with an answer the prompt-injection scanner flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectionAction {
    /// Record the verdict and deliver the answer unchanged.
    Flag,
    /// Put each flagged string between data delimiters with a notice to the model.
    Wrap,
    /// Replace each flagged span with `[REDACTED:prompt_injection]`.
    Redact,
    /// Withhold the answer.
    Block,
}

impl InjectionAction {
    /// The name used in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            InjectionAction::Flag => "flag",
            InjectionAction::Wrap => "wrap",
            InjectionAction::Redact => "redact",
            InjectionAction::Block => "block",
        }
    }
}

/// The `dlp` obligation: detector ids (or `*` for every detector) whose findings in what the
/// server sends for the call are redacted, or make the proxy withhold the answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DlpActions {
    /// Each finding's span is replaced by `[REDACTED:<detector>]` before the agent gets it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
    /// A message holding such a finding is not delivered: the agent gets a JSON-RPC error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block: Vec<String>,
}

impl DlpActions {
    /// What happens to a finding of `detector`: block wins over redact; neither means record.
    pub fn action_for(&self, detector: &str) -> DlpAction {
        let names = |list: &[String]| list.iter().any(|d| d == "*" || d == detector);
        if names(&self.block) {
            DlpAction::Block
        } else if names(&self.redact) {
            DlpAction::Redact
        } else {
            DlpAction::Log
        }
    }
}

/// What the proxy does with one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlpAction {
    /// Record it (detector, pointer, keyed hash) and deliver the content unchanged.
    Log,
    /// Replace its span with `[REDACTED:<detector>]`.
    Redact,
    /// Withhold the whole message.
    Block,
}

impl DlpAction {
    /// The name used in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            DlpAction::Log => "log",
            DlpAction::Redact => "redact",
            DlpAction::Block => "block",
        }
    }
}

/// A lease of allowed calls (docs/policy.md, "Leases"): the proxy may answer up to `calls` more
/// requests with the same decision key and tool facts as the leased one, within `seconds`,
/// without asking the sidecar. The sidecar reserved their budget when it granted the lease; the
/// proxy reports what it did not use ([`UsageReport::unused_calls`]), which is given back.
/// The same idea as Envoy's rate-limit quota service, where the server hands each proxy a quota
/// assignment and the proxies report their usage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lease {
    /// Calls the proxy may allow by itself, the leased one not included.
    pub calls: u32,
    /// How long the lease holds, from when the proxy received it.
    pub seconds: u32,
    /// A leased call's arguments are at most this many bytes (`argumentsBytes`: the policy's
    /// argument-size limit, kept by the proxy); no limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_argument_bytes: Option<u64>,
    /// Argument name → most characters: a leased call that sends one of these arguments sends
    /// it as a string of at most that many characters (Unicode scalar values, as Rego's
    /// `count`), else it is asked of the sidecar (the policy's `max_length` argument rules).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub max_argument_chars: std::collections::BTreeMap<String, u64>,
    /// The lease ends once the answers of its calls (the leased one's included) reach this many
    /// bytes (the policy's share of the `bytes` budgets); no limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
    /// When the sidecar reserved the budget (Unix ms, its clock; set by the sidecar): unused
    /// calls are given back to the counters' buckets of that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_at_ms: Option<u64>,
}

impl Obligations {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self == &Obligations::default()
    }
}

/// Why a human approval is needed (from policy), and the held request (from the sidecar).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalRequirement {
    /// Shown to the approver and the agent.
    pub reason: String,
    /// The approval's id (set by the sidecar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Where a person can see it (set by the sidecar): the URL of a URL-mode elicitation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `pending` or `rejected` (set by the sidecar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// An approval that let this call through, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalGrant {
    /// The approval's id.
    pub id: String,
    /// Who approved it.
    pub approved_by: String,
}

/// Path of the authz-sidecar's usage endpoint: the filter reports the response bytes of calls
/// that consumed budget (NDJSON of [`UsageReport`], proxy credential).
pub const USAGE_PATH: &str = "/v1/usage";

/// The response size of one allowed call, for the `bytes` blast-radius counters, or the unused
/// calls of a lease.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageReport {
    /// Who the call was for, with its delegation chain.
    pub agent: AgentIdentity,
    /// Bytes of the upstream's answer.
    #[serde(default)]
    pub bytes: u64,
    /// Calls of a lease the proxy did not use (it expired or was dropped): given back to the
    /// `calls` counters at [`Lease::reserved_at_ms`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unused_calls: u64,
    /// The lease's [`Lease::reserved_at_ms`], with `unused_calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_at_ms: Option<u64>,
}

/// What one allowed call adds to the blast-radius counters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetConsumption {
    /// Calls.
    #[serde(default)]
    pub calls: u64,
    /// Destructive operations.
    #[serde(default)]
    pub destructive: u64,
    /// Targets touched (counted distinct).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Response bytes (reported by the filter once the answer is through, [`UsageReport`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
}

impl BudgetConsumption {
    /// Whether it adds nothing to any counter.
    pub fn is_nothing(&self) -> bool {
        self.calls == 0 && self.destructive == 0 && self.resources.is_empty() && self.bytes == 0
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Which entries of a listing the agent may see, by name (tools, prompts) or URI (resources).
/// A pattern is an exact name, `*` (every name) or `prefix*`; `deny` wins over `allow`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Visibility {
    /// Patterns of visible entries.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Patterns of hidden entries.
    #[serde(default)]
    pub deny: Vec<String>,
}

impl Visibility {
    /// Whether the entry called `name` may be shown.
    pub fn shows(&self, name: &str) -> bool {
        pattern_list_matches(&self.allow, name) && !pattern_list_matches(&self.deny, name)
    }
}

#[cfg(test)]
mod tool_facts_tests {
    use super::*;

    #[test]
    fn destructive_is_an_explicit_hint_not_overridden_by_read_only() {
        let facts = |v: Value| ToolFacts {
            annotations: Some(v),
            ..ToolFacts::default()
        };
        assert!(facts(serde_json::json!({"destructiveHint": true})).is_destructive());
        assert!(
            !facts(serde_json::json!({"destructiveHint": true, "readOnlyHint": true}))
                .is_destructive()
        );
        assert!(!facts(serde_json::json!({"readOnlyHint": false})).is_destructive());
        assert!(!ToolFacts::default().is_destructive());
    }
}

/// Whether `name` matches one of `patterns`: exactly, by `*`, or by `prefix*`. The same rule as
/// the default bundle's `matches` (policies/authz.rego).
pub fn pattern_list_matches(patterns: &[String], name: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => pattern == name,
        })
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
    /// A policy bundle put in force, or refused, by an authz-sidecar (not part of a call).
    Policy,
}

impl AuditKind {
    /// The lowercase name used in event ids and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Intent => "intent",
            AuditKind::Decision => "decision",
            AuditKind::Outcome => "outcome",
            AuditKind::Policy => "policy",
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
    /// The span the call belongs under: the client's, from its W3C `traceparent` (parent-id,
    /// W3C Trace Context §3.2.2.4), when the call joined the client's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// Stage of the call.
    pub kind: AuditKind,
    /// Milliseconds since the Unix epoch, from Envoy's clock.
    pub time_ms: u64,
    /// Agent id (token `sub`), when authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Who acts for the agent (RFC 8693 §4.1 `act`), current actor first; empty when the agent
    /// acts for itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation: Vec<String>,
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
