//! The sidecar's HTTP surface: routes, shared state, and the one place where errors become HTTP
//! statuses and JSON bodies.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | liveness: 200 `{"status": "ok", "policy": {digest, lastError, reloadedAt}}` |
//! | `GET /.well-known/jwks.json` | the token signing key as a JWK Set (RFC 7517 §5) |
//! | `POST /v1/decide` | a [`DecisionRequest`] in, a [`DecisionResponse`] out |
//! | `POST /v1/usage` | response bytes of allowed calls, for the `bytes` budgets (NDJSON of [`UsageReport`]) |
//! | `GET /v1/policy/table` | the bundle's decision table and digest, polled by the filter |
//! | `GET /v1/revocations` | the [`behavry_core::wire::RevocationList`] the filter enforces ([`crate::revocation`]) |
//! | `POST /v1/credentials` | the filter's upstream credential for one agent ([`crate::credentials`]) |
//! | `POST /oauth/token` | client credentials + `private_key_jwt` → access token ([`crate::oauth`]) |
//! | `GET /.well-known/oauth-authorization-server` | RFC 8414 metadata ([`crate::oauth`]) |
//! | `/admin/v1/agents...`, `/admin/v1/revocations`, `/admin/v1/approvals...` | the admin API ([`crate::admin`], [`crate::approvals`]) |
//! | `GET /approvals/{id}` | the status page an approval URL points at ([`crate::approvals`]) |

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use behavry_core::decision_table::POLICY_TABLE_PATH;
use behavry_core::wire::{
    BudgetConsumption, DECIDE_PATH, DecisionRequest, DecisionResponse, Lease, REVOCATIONS_PATH,
    USAGE_PATH, UsageReport,
};
use serde::Serialize;

use crate::approvals::Approvals;
use crate::blast_radius::{BlastRadius, unix_ms};
use crate::budget::BudgetError;
use crate::config::AdminCredential;
use crate::credentials::CredentialService;
use crate::directory::AgentDirectory;
use crate::oauth::AuthorizationServer;
use crate::policy::{Counters, PolicyError, PolicyInput};
use crate::revocation::RevocationStore;
use crate::signing_key::JwkSet;

/// Path of the JWK Set (RFC 8414 §3 / OpenID Connect discovery use the same well-known prefix).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Path of the liveness probe.
pub const HEALTH_PATH: &str = "/healthz";
/// Largest accepted decision request body. Tool arguments travel inside it; anything larger is
/// refused (413) rather than buffered.
pub const MAX_DECIDE_BODY_BYTES: usize = 1024 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The registry and its in-memory snapshot (enabled agents, policy bundle).
    pub directory: Arc<AgentDirectory>,
    /// The revocation list the filter polls, and its store.
    pub revocations: Arc<RevocationStore>,
    /// The public signing key, served as is.
    pub jwks: Arc<JwkSet>,
    /// The token endpoint's settings, signing key and replay cache.
    pub authorization_server: Arc<AuthorizationServer>,
    /// The admin API's credential; `None` disables the admin API.
    pub admin_credential: Option<Arc<AdminCredential>>,
    /// `POST /v1/credentials`: proxy credential, upstreams, secret store.
    pub credentials: Arc<CredentialService>,
    /// Blast-radius counters read before each governed decision and fed after an allow.
    pub blast_radius: Arc<BlastRadius>,
    /// Held calls and their human approvals.
    pub approvals: Arc<Approvals>,
    /// Pinned tool definitions (docs/pins.md).
    pub pins: Arc<crate::pins::PinStore>,
    /// The proxy credential the filter shows on `/v1/decide` and `/v1/policy/table`; `None`
    /// leaves them open to anyone who can reach the sidecar (logged at start).
    pub proxy_credential: Option<Arc<AdminCredential>>,
}

/// Errors a request can end in.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The body could not be read (too large, connection lost).
    #[error("cannot read request body: {0}")]
    Body(#[from] BytesRejection),
    /// The body is not a valid decision request.
    #[error("invalid decision request: {0}")]
    BadRequest(#[from] serde_json::Error),
    /// Policy evaluation failed; the caller must fail closed.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// An allowed call's budget consumption could not be recorded; the caller must fail closed
    /// (an uncounted call would escape the blast-radius limits).
    #[error("cannot record the call's budget: {0}")]
    Budget(#[from] BudgetError),
    /// The approval store could not be read or written; the caller must fail closed.
    #[error("approval store unavailable: {0}")]
    Approvals(#[from] crate::registry::RegistryError),
}

/// JSON body of every error answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub error: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl IntoResponse for AppError {
    // The one mapping from errors to HTTP statuses.
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AppError::Body(rejection) => (rejection.status(), "unreadable_body"),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            AppError::Policy(_) => (StatusCode::INTERNAL_SERVER_ERROR, "policy_error"),
            AppError::Budget(_) => (StatusCode::SERVICE_UNAVAILABLE, "budget_unavailable"),
            AppError::Approvals(_) => (StatusCode::SERVICE_UNAVAILABLE, "approvals_unavailable"),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "decision failed");
        } else {
            tracing::warn!(error = %self, "request refused");
        }
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

/// The router, with `state` attached. Tests drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(HEALTH_PATH, get(health))
        .route(JWKS_PATH, get(jwks))
        .route(
            DECIDE_PATH,
            post(decide).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_proxy,
            )),
        )
        .route(REVOCATIONS_PATH, get(crate::revocation::revocation_list))
        .route(
            USAGE_PATH,
            post(usage).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_proxy,
            )),
        )
        .route(
            behavry_core::pins::PINS_PATH,
            get(crate::pins::pin_set).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_proxy,
            )),
        )
        .route(
            behavry_core::pins::PIN_OBSERVATIONS_PATH,
            post(crate::pins::observations).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_proxy,
            )),
        )
        .route(
            POLICY_TABLE_PATH,
            get(policy_table).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_proxy,
            )),
        )
        .route(
            &format!("{}/{{id}}", crate::approvals::APPROVAL_PAGE_PATH),
            get(crate::approvals::page),
        )
        .layer(DefaultBodyLimit::max(MAX_DECIDE_BODY_BYTES))
        .merge(crate::oauth::routes())
        .merge(crate::credentials::routes())
        .merge(crate::admin::routes(state.clone()))
        .merge(crate::approvals::routes(state.clone()))
        .with_state(state)
}

/// The body of `GET /healthz`.
#[derive(Debug, Serialize)]
struct HealthBody {
    status: &'static str,
    /// The bundle in force and the outcome of the last reload.
    policy: crate::directory::PolicyStatus,
}

/// Liveness, plus the policy bundle in force: a refused reload shows in `policy.lastError`
/// while the service keeps answering with the previous bundle (still 200).
async fn health(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(HealthBody {
            status: "ok",
            policy: state.directory.policy_status(),
        }),
    )
        .into_response()
}

async fn jwks(State(state): State<AppState>) -> Response {
    // Verifiers may cache the key set for a short while; key rotation is not automatic yet.
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.jwks.as_ref().clone()),
    )
        .into_response()
}

/// Answer of `POST /v1/usage`.
#[derive(Debug, Serialize)]
struct UsageAck {
    recorded: usize,
}

/// `POST /v1/usage`: response bytes of allowed calls (NDJSON of [`UsageReport`]), added to the
/// agents' and chains' `bytes` counters, and the unused calls of leases, given back to their
/// `calls` counters. A bad line refuses the whole batch (400) before anything
/// is recorded.
async fn usage(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UsageAck>, AppError> {
    let body = body?;
    let mut reports = Vec::new();
    for line in body.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        reports.push(serde_json::from_slice::<UsageReport>(line)?);
    }
    let now = SystemTime::now();
    for report in &reports {
        if report.bytes > 0 {
            let consumption = BudgetConsumption {
                bytes: report.bytes,
                ..BudgetConsumption::default()
            };
            state
                .blast_radius
                .consume(&report.agent, &consumption, now)
                .await?;
        }
        if let (calls @ 1.., Some(reserved_at)) = (
            report.unused_calls,
            report
                .reserved_at_ms
                .and_then(|ms| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))),
        ) {
            state
                .blast_radius
                .release_calls(&report.agent, calls, reserved_at, now)
                .await?;
        }
    }
    Ok(Json(UsageAck {
        recorded: reports.len(),
    }))
}

/// Realm of the proxy credential's challenge on the filter's routes.
const FILTER_REALM: &str = "behavry-filter";

/// The proxy credential in front of the filter's routes (decisions have side effects: budgets,
/// held approvals; the table lists every agent's grants), when one is configured.
async fn require_proxy(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(expected) = state.proxy_credential.as_deref() else {
        return next.run(request).await;
    };
    match crate::bearer::check(Some(expected), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => crate::bearer::error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route takes the proxy credential (proxy_token_file)".to_owned(),
            "filter route",
            Some((refusal, FILTER_REALM)),
        ),
    }
}

/// `GET /v1/policy/table`: the decision table of the bundle in force, with its digest (the
/// filter applies its denials without a callout and drops cached decisions when the digest
/// changes). From the snapshot, never recomputed per poll.
async fn policy_table(State(state): State<AppState>) -> Response {
    let table = state.directory.snapshot().bundle.published_table();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        table.as_ref().clone(),
    )
        .into_response()
}

/// The body is parsed from raw bytes so a caller that forgets `Content-Type` still gets a
/// decision, and every malformed body gets the same 400 JSON answer.
async fn decide(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DecisionResponse>, AppError> {
    let mut request: DecisionRequest = serde_json::from_slice(&body?)?;
    // The snapshot in memory, never the database: disabled and deleted agents are absent from
    // its policy data, so their decisions deny.
    let snapshot = state.directory.snapshot();
    // Whether the client is one the agent is enrolled to use: decided here, from the registry,
    // whatever the caller sent (docs/fingerprints.md). No fingerprint, no answer.
    request.agent.client_matches = request.request.client.as_ref().map(|client| {
        let enrolled = snapshot
            .agent(&request.agent.id)
            .map(|agent| agent.enrollment.clients.as_slice())
            .unwrap_or_default();
        behavry_core::fingerprint::matches_enrolled(client, enrolled)
    });
    let enrollment = snapshot
        .agent(&request.agent.id)
        .map(|agent| &agent.enrollment);
    // One decision at a time per agent (in this sidecar, and with Redis counters in every
    // sidecar sharing them), from reading its usage to recording what the decision consumes
    // (leases included).
    let budget_turn = if is_budgeted(&request.request.method) {
        Some(
            state
                .blast_radius
                .take_turn(&request.agent, request.holds_leases)
                .await,
        )
    } else {
        None
    };
    let now = SystemTime::now();
    // Usage before the call, for the methods that consume budget. Unreadable counters leave the
    // input without them, and the policy refuses a call whose budget it cannot check.
    let counters = if is_budgeted(&request.request.method) {
        state
            .blast_radius
            .usage(&request.agent, now)
            .await
            .unwrap_or_else(|err| {
                tracing::error!(error = %err, "cannot read blast-radius counters");
                Counters::new()
            })
    } else {
        Counters::new()
    };
    let unix = unix_seconds(now);
    let input = PolicyInput::new(&request, enrollment, &counters, now);
    let mut response = snapshot.bundle.decide(&input)?;
    // Only a call the policy holds for a human can be let through by an approval: the approval
    // store is read then, and the call decided again with the approval in its input (so the
    // common path never touches the database).
    let mut approval = None;
    if !response.allow
        && response.obligations.require_approval.is_some()
        && is_budgeted(&request.request.method)
        && let Some(grant) = state.approvals.granted(&request, unix).await?
    {
        let mut approved = input.clone();
        approved.approval = Some(&grant);
        let decided = snapshot.bundle.decide(&approved)?;
        if decided.allow {
            response = decided;
            approval = Some(grant);
        }
    }
    response.client_matches = request.agent.client_matches;
    if response.allow
        && let Some(grant) = &approval
    {
        // One approval, one call: a retry that lost the race to another is refused.
        match state.approvals.use_grant(grant, unix).await? {
            Some(used) => response.approval = Some(used),
            None => {
                response.allow = false;
                response.reasons = vec![format!(
                    "approval `{}` was already used by another call",
                    grant.id
                )];
                response.rule_ids = vec!["behavry.approval.used".to_owned()];
                response.obligations = Default::default();
            }
        }
    }
    let lease = response.obligations.lease.take().filter(|lease| {
        request.holds_leases
            && budget_turn.as_ref().is_some_and(|turn| turn.exclusive())
            && leasable(&response, &request.request.method)
            && lease.calls > 0
            && lease.seconds > 0
    });
    if response.allow
        && let Some(consumption) = &response.obligations.budget
        && !consumption.is_nothing()
    {
        // A lease reserves its calls with this one (docs/policy.md, "Leases").
        let mut reserved = consumption.clone();
        if let Some(lease) = &lease {
            reserved.calls = reserved.calls.saturating_mul(u64::from(lease.calls) + 1);
        }
        state
            .blast_radius
            .consume(&request.agent, &reserved, now)
            .await?;
    }
    response.obligations.lease = lease.map(|lease| {
        let reserved_at_ms = unix_ms(now);
        state.blast_radius.lease_granted(
            &request.agent,
            u64::from(lease.calls),
            reserved_at_ms,
            lease.seconds,
        );
        Lease {
            reserved_at_ms: Some(reserved_at_ms),
            ..lease
        }
    });
    // The counters are written: the agent's next decision may go on.
    if let Some(turn) = budget_turn {
        turn.end().await;
    }
    if let Some(requirement) = &mut response.obligations.require_approval {
        state.approvals.hold(&request, requirement, unix).await?;
    }
    // Debug level: every decision is already recorded by the audit-sink through the filter.
    tracing::debug!(
        trace_id = %request.trace_id,
        agent = %request.agent.id,
        server = %request.request.server,
        method = %request.request.method,
        allow = response.allow,
        rule_ids = ?response.rule_ids,
        "decision"
    );
    Ok(Json(response))
}

/// Whether a decision's lease may be granted (to a proxy that holds leases): an allowed call,
/// not let through by an approval
/// (one approval, one call), whose budget adds exactly one call and nothing destructive — so
/// the unused calls of the lease are all there is to give back.
fn leasable(response: &DecisionResponse, method: &str) -> bool {
    response.allow
        && response.approval.is_none()
        && is_budgeted(method)
        && response
            .obligations
            .budget
            .as_ref()
            .is_some_and(|budget| budget.calls == 1 && budget.destructive == 0)
}

fn unix_seconds(now: SystemTime) -> i64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The methods decided as calls, against the blast-radius budgets (listings are not): policy
/// sees their usage, may hold them for approval, and says what they consume (a task request
/// consumes no call of its own, but the bytes of a task's result count).
fn is_budgeted(method: &str) -> bool {
    behavry_core::mcp::kind_of(method) == behavry_core::mcp::CallKind::Governed
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::policy::PolicySource;
    use crate::policy::tests::{demo_agents, shipped_policy_dir};
    use crate::registry::tests::sqlite_registry;
    use crate::signing_key::tests::test_key;

    /// The admin credential of [`test_app`].
    pub(crate) const ADMIN_TOKEN: &str = "test-admin-credential-0123456789abcdef";

    /// A sidecar over a SQLite registry in `dir`, seeded with the demo agent; the admin API is
    /// enabled with [`ADMIN_TOKEN`] when `admin` is true.
    pub(crate) async fn test_state(dir: &Path, admin: bool) -> AppState {
        let config =
            Config::from_toml_str("", &dir.join("authz.toml"), dir, &HashMap::new()).unwrap();
        let registry = sqlite_registry(dir).await;
        registry.seed(&demo_agents()).await.unwrap();
        let policy = PolicySource::load(&shipped_policy_dir(), Duration::from_secs(1)).unwrap();
        let revocations = RevocationStore::open(registry.clone()).await.unwrap();
        let pins = crate::pins::PinStore::open(registry.clone(), config.pins.clone())
            .await
            .unwrap();
        let directory = AgentDirectory::open(registry, policy).await.unwrap();
        AppState {
            pins: Arc::new(pins),
            revocations: Arc::new(revocations),
            jwks: Arc::new(test_key().jwks()),
            authorization_server: Arc::new(AuthorizationServer::new(&config, test_key())),
            admin_credential: admin.then(|| Arc::new(AdminCredential::new(ADMIN_TOKEN).unwrap())),
            credentials: Arc::new(
                CredentialService::new(&config, behavry_secrets::SecretResolver::default())
                    .unwrap(),
            ),
            blast_radius: Arc::new(BlastRadius::open(&config.blast_radius).await.unwrap()),
            approvals: Arc::new(Approvals::new(
                directory.registry().clone(),
                config.approval_ttl_secs,
                &config.public_url,
                config.approvers.clone(),
            )),
            directory: Arc::new(directory),
            proxy_credential: None,
        }
    }

    /// Send one request; answers status, headers and the body as JSON (`Null` when not JSON).
    pub(crate) async fn call(
        state: &AppState,
        request: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = app(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, json)
    }

    async fn send(request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), false).await;
        let (status, _, json) = call(&state, request).await;
        (status, json)
    }

    fn decide_request(body: impl Into<Body>) -> Request<Body> {
        Request::post(DECIDE_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap()
    }

    /// `POST /v1/usage` with an NDJSON body.
    fn usage_request(body: &str) -> Request<Body> {
        Request::post(USAGE_PATH)
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    fn tool_call(agent: &str, tool: &str) -> String {
        serde_json::json!({
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
            "agent": {"id": agent},
            "request": {"server": "everything", "method": "tools/call", "tool": tool,
                        "arguments": {"message": "hi"}},
        })
        .to_string()
    }

    #[tokio::test]
    async fn health_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let response = app(test_state(dir.path(), false).await)
            .oneshot(Request::get(HEALTH_PATH).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let (status, body) = send(Request::get(HEALTH_PATH).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ok");
        let digest = body["policy"]["digest"].as_str().unwrap();
        assert!(digest.starts_with("sha256:"), "{body}");
        assert!(body["policy"]["lastError"].is_null(), "{body}");
        assert!(body["policy"]["reloadedAt"].is_null(), "{body}");
    }

    #[tokio::test]
    async fn jwks_is_served() {
        let (status, body) = send(Request::get(JWKS_PATH).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["keys"][0]["kid"], test_key().kid());
        assert_eq!(body["keys"][0]["alg"], "RS256");
        assert_eq!(body["keys"][0]["kty"], "RSA");
        assert_eq!(body["keys"][0]["use"], "sig");
    }

    #[tokio::test]
    async fn granted_tool_is_allowed() {
        let (status, body) = send(decide_request(tool_call("demo-agent", "echo"))).await;
        assert_eq!(status, StatusCode::OK);
        let response: DecisionResponse = serde_json::from_value(body).unwrap();
        assert!(response.allow);
        assert_eq!(response.rule_ids, ["behavry.tools.granted"]);
        assert!(response.bundle_digest.starts_with("sha256:"));
    }

    #[tokio::test]
    async fn ungranted_tool_and_unknown_agent_are_denied() {
        let (status, body) = send(decide_request(tool_call("demo-agent", "printEnv"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["allow"], false);
        assert_eq!(
            body["reasons"][0],
            "agent 'demo-agent' may not use tool 'printEnv' on server 'everything'"
        );
        assert_eq!(body["ruleIds"][0], "behavry.tools.not_granted");

        let (status, body) = send(decide_request(tool_call("intruder", "echo"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["allow"], false);
        assert_eq!(body["reasons"][0], "agent 'intruder' is not enrolled");
    }

    #[tokio::test]
    async fn the_filter_routes_take_the_proxy_credential_when_one_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = test_state(dir.path(), false).await;
        let body = tool_call("demo-agent", "echo");
        let (status, _, _) = call(&state, decide_request(body.clone())).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "open without a configured credential"
        );

        let secret = "proxy-credential-0123456789abcdefghij";
        state.proxy_credential = Some(Arc::new(AdminCredential::new(secret).unwrap()));
        let (status, headers, _) = call(&state, decide_request(body.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let mut wrong = decide_request(body.clone());
        wrong
            .headers_mut()
            .insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert_eq!(call(&state, wrong).await.0, StatusCode::UNAUTHORIZED);
        let mut right = decide_request(body);
        right.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {secret}").parse().unwrap(),
        );
        assert_eq!(call(&state, right).await.0, StatusCode::OK);

        let table = |auth: Option<&str>| {
            let mut request = Request::get(POLICY_TABLE_PATH);
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            request.body(Body::empty()).unwrap()
        };
        assert_eq!(call(&state, table(None)).await.0, StatusCode::UNAUTHORIZED);
        let (status, _, published) = call(&state, table(Some(&format!("Bearer {secret}")))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            published["bundleDigest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
    }

    #[tokio::test]
    async fn usage_reports_feed_the_bytes_counters() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), false).await;
        let lines = "{\"agent\":{\"id\":\"demo-agent\"},\"bytes\":700}\n\n\
                     {\"agent\":{\"id\":\"demo-agent\",\"delegation\":[\"h\"]},\"bytes\":300}\n";
        let (status, _, ack) = call(&state, usage_request(lines)).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["recorded"], 2);
        let identity = behavry_core::wire::AgentIdentity {
            id: "demo-agent".into(),
            ..Default::default()
        };
        let bytes = || async {
            let usage = state.blast_radius.usage(&identity, SystemTime::now()).await;
            usage.unwrap()["agent"]["1h"]["bytes"]
        };
        assert_eq!(bytes().await, 1000);

        // A bad line refuses the batch before anything is recorded.
        let (status, _, _) = call(
            &state,
            usage_request("{\"agent\":{\"id\":\"demo-agent\"},\"bytes\":5}\nnope\n"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(bytes().await, 1000);
    }

    #[tokio::test]
    async fn a_lease_reserves_its_calls_and_unused_ones_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), false).await;
        let identity = behavry_core::wire::AgentIdentity {
            id: "demo-agent".into(),
            ..Default::default()
        };
        let calls = || async {
            let usage = state.blast_radius.usage(&identity, SystemTime::now()).await;
            usage.unwrap()["agent"]["1m"]["calls"]
        };
        // A proxy that does not say it holds leases gets none, and only its call is counted.
        let (_, _, body) = call(&state, decide_request(tool_call("demo-agent", "echo"))).await;
        assert!(body["obligations"].get("lease").is_none(), "{body}");
        assert_eq!(calls().await, 1);

        let before = unix_ms(SystemTime::now());
        let mut holding: serde_json::Value =
            serde_json::from_str(&tool_call("demo-agent", "echo")).unwrap();
        holding["holdsLeases"] = true.into();
        let (status, _, body) = call(&state, decide_request(holding.to_string())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let decision: DecisionResponse = serde_json::from_value(body).unwrap();
        assert!(decision.allow);
        let lease = decision
            .obligations
            .lease
            .expect("the default bundle leases echo");
        assert!(lease.calls > 0 && lease.seconds > 0, "{lease:?}");
        let reserved_at_ms = lease.reserved_at_ms.expect("set by the sidecar");
        assert!(reserved_at_ms >= before);
        // The call and its lease are counted now.
        assert_eq!(calls().await, u64::from(lease.calls) + 2);

        // The proxy used two of them and gives the rest back.
        let unused = u64::from(lease.calls) - 2;
        let report = serde_json::json!({"agent": {"id": "demo-agent"}, "unusedCalls": unused,
                                        "reservedAtMs": reserved_at_ms});
        let request = usage_request(&report.to_string());
        let (status, _, ack) = call(&state, request).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(calls().await, 4);

        // A report cannot give back what was not reserved: of 1000 calls, the two the lease
        // still had out come back; another reservation, or the same one again, gives nothing.
        for (report, left) in [
            (
                serde_json::json!({"agent": {"id": "demo-agent"}, "unusedCalls": 1000,
                                   "reservedAtMs": reserved_at_ms}),
                2,
            ),
            (
                serde_json::json!({"agent": {"id": "demo-agent"}, "unusedCalls": 3,
                                   "reservedAtMs": reserved_at_ms - 1}),
                2,
            ),
            (
                serde_json::json!({"agent": {"id": "demo-agent"}, "unusedCalls": 1,
                                   "reservedAtMs": reserved_at_ms}),
                2,
            ),
        ] {
            let request = usage_request(&report.to_string());
            let (status, _, _) = call(&state, request).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(calls().await, left);
        }
    }

    /// `count` sidecars on one set of Redis counters (a fresh prefix): each with its own
    /// counters' client, local locks and lease ledger (the registry and bundle are shared, as
    /// they would be on one registry database).
    async fn sidecars_sharing_redis(dir: &Path, count: usize) -> Vec<AppState> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let config = crate::blast_radius::BlastRadiusConfig {
            store: crate::budget::BudgetBackendConfig::Redis {
                url: "redis://127.0.0.1:6379/".to_owned(),
                prefix: format!("behavry:http-test:{}:{nanos}:", std::process::id()),
                buckets: crate::budget::DEFAULT_BUCKETS,
                connect_timeout_ms: crate::budget::DEFAULT_CONNECT_TIMEOUT_MS,
                response_timeout_ms: crate::budget::DEFAULT_RESPONSE_TIMEOUT_MS,
            },
            ..Default::default()
        };
        let base = test_state(dir, false).await;
        let mut states = Vec::new();
        for _ in 0..count {
            let mut state = base.clone();
            state.blast_radius = Arc::new(BlastRadius::open(&config).await.unwrap());
            states.push(state);
        }
        states
    }

    fn leasing_echo() -> String {
        let mut holding: serde_json::Value =
            serde_json::from_str(&tool_call("demo-agent", "echo")).unwrap();
        holding["holdsLeases"] = true.into();
        holding.to_string()
    }

    /// With Redis counters, an agent's decision turn is fleet-wide: while one sidecar holds it,
    /// another decides the agent's call (counted) but reserves no lease on top of usage the first
    /// may be changing.
    #[tokio::test]
    async fn sidecars_sharing_redis_take_turns_before_they_lease() {
        let dir = tempfile::tempdir().unwrap();
        let sidecars = sidecars_sharing_redis(dir.path(), 2).await;
        let (first, second) = (&sidecars[0], &sidecars[1]);
        let identity = behavry_core::wire::AgentIdentity {
            id: "demo-agent".into(),
            ..Default::default()
        };
        let held = first.blast_radius.take_turn(&identity, true).await;
        assert!(held.exclusive());
        let (status, _, body) = call(second, decide_request(leasing_echo())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["allow"], true);
        assert!(body["obligations"].get("lease").is_none(), "{body}");
        let usage = first.blast_radius.usage(&identity, SystemTime::now()).await;
        assert_eq!(usage.unwrap()["agent"]["1m"]["calls"], 1);

        held.end().await;
        let (_, _, body) = call(second, decide_request(leasing_echo())).await;
        assert!(
            body["obligations"]["lease"]["calls"].as_u64() > Some(0),
            "{body}"
        );
    }

    /// 40 concurrent first calls of one agent, spread over `sidecars`: each sees the others'
    /// reservations, so together they never reserve more than the agent's budget (1200 calls a
    /// minute in the default bundle), and what they were told they hold is what is counted.
    async fn concurrent_first_calls_stay_within_the_budget(sidecars: &[AppState]) {
        let tasks: Vec<_> = (0..40)
            .map(|n| {
                let state = sidecars[n % sidecars.len()].clone();
                tokio::spawn(async move { call(&state, decide_request(leasing_echo())).await })
            })
            .collect();
        let mut reserved = 0_u64;
        for task in tasks {
            let (status, _, body) = task.await.unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
            let decision: DecisionResponse = serde_json::from_value(body).unwrap();
            assert!(decision.allow);
            reserved += 1 + decision.obligations.lease.map_or(0, |l| u64::from(l.calls));
        }
        let identity = behavry_core::wire::AgentIdentity {
            id: "demo-agent".into(),
            ..Default::default()
        };
        let usage = sidecars[0]
            .blast_radius
            .usage(&identity, SystemTime::now())
            .await;
        let used = usage.unwrap()["agent"]["1m"]["calls"];
        assert_eq!(used, reserved);
        assert!(
            used <= 1200,
            "{used} calls reserved against a budget of 1200"
        );
    }

    /// Within one sidecar (fails without the per-agent lock).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_leases_stay_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        concurrent_first_calls_stay_within_the_budget(&[test_state(dir.path(), false).await]).await;
    }

    /// Through ten sidecars sharing Redis (without the fleet-wide turn, ten leases computed from
    /// the same usage reserve more than what is left).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_leases_through_ten_sidecars_stay_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        concurrent_first_calls_stay_within_the_budget(
            &sidecars_sharing_redis(dir.path(), 10).await,
        )
        .await;
    }

    #[tokio::test]
    async fn a_policy_cannot_set_the_reservation_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("authz.rego"),
            "package behavry.authz\nimport rego.v1\ndecision := {\"allow\": true, \"obligations\": \
             {\"lease\": {\"calls\": 5, \"seconds\": 5, \"reservedAtMs\": 1}}}\n",
        )
        .unwrap();
        // Refused when the bundle is loaded (its decision is checked then).
        let err =
            crate::policy::PolicyBundle::load(dir.path(), &[], Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("lease.reservedAtMs"), "{err}");
    }

    #[tokio::test]
    async fn decide_without_content_type_still_decides() {
        let request = Request::post(DECIDE_PATH)
            .body(Body::from(tool_call("demo-agent", "echo")))
            .unwrap();
        let (status, body) = send(request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["allow"], true);
    }

    #[tokio::test]
    async fn the_client_fingerprint_is_checked_against_the_enrolled_clients() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), false).await;
        let mut pinned = demo_agents().remove(0);
        pinned.id = "pinned-agent".to_owned();
        pinned.clients = vec!["claude-code".to_owned()];
        state.directory.registry().seed(&[pinned]).await.unwrap();
        state.directory.refresh().await.unwrap();
        let python_sdk = serde_json::json!({
            "id": "0123456789abcdef", "clientName": "mcp", "clientVersion": "0.1.0",
            "protocolVersion": "2025-11-25", "capabilities": [], "userAgent": "python-httpx/0.28",
            "headerShape": ["accept", "content-type", "user-agent"],
            "known": "python-mcp", "product": "MCP Python SDK"
        });
        let decide_with = |agent: &str, client: Option<&serde_json::Value>| {
            let mut body = serde_json::json!({
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                // A value sent by the caller is replaced by the sidecar's own finding.
                "agent": {"id": agent, "clientMatches": true},
                "request": {"server": "everything", "method": "tools/call", "tool": "echo"},
            });
            if let Some(client) = client {
                body["request"]["client"] = client.clone();
            }
            decide_request(body.to_string())
        };
        let (_, _, mismatch) = call(&state, decide_with("pinned-agent", Some(&python_sdk))).await;
        assert_eq!(mismatch["allow"], true);
        assert_eq!(mismatch["clientMatches"], false);
        let (_, _, any) = call(&state, decide_with("demo-agent", Some(&python_sdk))).await;
        assert_eq!(any["clientMatches"], true);
        let (_, _, none) = call(&state, decide_with("pinned-agent", None)).await;
        assert!(none.get("clientMatches").is_none(), "{none}");
    }

    #[tokio::test]
    async fn bad_bodies_get_400_json() {
        for body in [
            "not json".to_owned(),
            "{}".to_owned(),
            r#"{"traceId": "t", "agent": {"id": 7}, "request": {"server": "s", "method": "m"}}"#
                .to_owned(),
            // Unknown fields are refused: a version skew must not be silently misread.
            r#"{"traceId": "t", "agent": {"id": "a"}, "request": {"server": "s", "method": "m"}, "extra": 1}"#
                .to_owned(),
        ] {
            let (status, json) = send(decide_request(body.clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(json["error"], "invalid_request", "{body}");
            assert!(json["message"].as_str().unwrap().contains("invalid decision request"));
        }
    }

    #[tokio::test]
    async fn oversized_body_is_refused() {
        let big = "x".repeat(MAX_DECIDE_BODY_BYTES + 1);
        let (status, json) = send(decide_request(big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json["error"], "unreadable_body");
    }
}
