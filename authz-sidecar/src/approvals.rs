//! Human approval of held calls (docs/policy.md, "Human approval").
//!
//! A decision that denies with a `requireApproval` obligation holds the call: the sidecar stores
//! a pending approval for exactly that request (agent, delegation chain, server, method, target,
//! arguments — its *request key*) and tells the proxy its id and URL, which the agent gets in the
//! MCP answer of its protocol version. An operator approves or rejects it (`behavry approvals`,
//! or the admin API `/admin/v1/approvals`); the approver's name is stored. When the agent retries
//! the same call, policy sees `input.approval = {"granted": true, "id", "approvedBy"}` and the
//! approval is used up by the one call it lets through (also when retries race). Pending requests
//! expire unanswered after `approval_ttl_secs`, approvals expire unused after the same time, and a
//! rejection stands for that time (retries are told so instead of asking again).
//!
//! Approvals live in the registry database, so they survive restarts and are shared by sidecars
//! on one PostgreSQL registry.
//!
//! Who decides: with named approvers configured (`[[approvers]]`: a name and the SHA-256 of that
//! person's own bearer credential), only they can approve or reject, and the name recorded is
//! the one their credential proves; the admin credential can still list. Without approvers, the
//! admin credential decides and the name it gives is recorded as given.

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use behavry_core::wire::{ApprovalGrant, ApprovalRequirement, DecisionRequest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bearer::{self, Refusal};
use crate::config::AdminCredential;
use crate::http::AppState;
use crate::registry::{AgentRegistry, ApprovalRecord, RegistryError};

/// Path of the admin API's approvals.
pub const ADMIN_APPROVALS_PATH: &str = "/admin/v1/approvals";
/// Path of the page an approval URL points at (read-only status, no arguments shown).
pub const APPROVAL_PAGE_PATH: &str = "/approvals";
/// Default lifetime of a pending request, of an approval, and of a rejection.
pub const DEFAULT_APPROVAL_TTL_SECS: u64 = 900;
/// Most approvals one list answer holds.
const LIST_LIMIT: i64 = 500;
/// `decided_with` of a decision made with an approver's own credential.
const DECIDED_BY_APPROVER: &str = "approver";
/// `decided_with` of a decision made with the admin credential (the name as it gave it).
const DECIDED_BY_ADMIN: &str = "admin";
/// Longest approver name stored.
const MAX_APPROVER_CHARS: usize = 128;
/// Domain separation of the request key.
const KEY_DOMAIN: &[u8] = b"behavry-approval-request-v1\n";

/// What policy sees of an approval that applies to this call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalFacts {
    /// Always true: only approved approvals are shown to policy.
    pub granted: bool,
    /// The approval's id.
    pub id: String,
    /// Who approved it.
    pub approved_by: String,
}

/// One `[[approvers]]` entry of the sidecar config, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverEntry {
    /// The name recorded with what this person decides.
    pub name: String,
    /// Lowercase hex SHA-256 of their bearer credential (`behavry approvals new-approver` makes
    /// both); the credential itself is never in the config.
    pub token_sha256: String,
}

/// A named approver: who they are and the digest of their credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    name: String,
    token_digest: [u8; 32],
}

impl Approver {
    /// Check an entry: a valid name, and a digest of 64 hex digits.
    pub fn from_entry(entry: &ApproverEntry) -> Result<Approver, String> {
        let name = approver_name(&entry.name)?.to_owned();
        let digest = entry.token_sha256.trim();
        let mut token_digest = [0_u8; 32];
        hex::decode_to_slice(digest, &mut token_digest).map_err(|_| {
            format!("`token_sha256` of approver `{name}` must be 64 hexadecimal digits")
        })?;
        if token_digest == bearer::presented_digest("") {
            return Err(format!(
                "`token_sha256` of approver `{name}` is the digest of an empty credential"
            ));
        }
        Ok(Approver { name, token_digest })
    }

    /// The approver's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `digest` is this approver's credential's.
    pub fn holds(&self, digest: &[u8; 32]) -> bool {
        bearer::matches_digest(digest, &self.token_digest)
    }

    /// Whether two approvers have the same credential.
    pub fn same_credential(&self, other: &Approver) -> bool {
        self.holds(&other.token_digest)
    }
}

/// A name as recorded for a decision: trimmed, 1 to [`MAX_APPROVER_CHARS`] characters, no
/// control characters.
pub fn approver_name(name: &str) -> Result<&str, String> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_APPROVER_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(format!(
            "an approver's name must be 1 to {MAX_APPROVER_CHARS} printable characters"
        ));
    }
    Ok(name)
}

/// A new approver credential (32 random bytes, hex) and the `[[approvers]]` entry for `name`
/// that holds its digest.
pub fn new_approver(name: &str) -> Result<(String, ApproverEntry), String> {
    let name = approver_name(name)?.to_owned();
    let mut bytes = [0_u8; 32];
    rsa::rand_core::RngCore::fill_bytes(&mut rsa::rand_core::OsRng, &mut bytes);
    let token = hex::encode(bytes);
    let token_sha256 = hex::encode(bearer::presented_digest(&token));
    Ok((token, ApproverEntry { name, token_sha256 }))
}

/// Who sent a request to the approval routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin credential.
    Admin,
    /// A named approver, by their own credential.
    Approver(String),
}

/// The approval store and its settings.
#[derive(Debug, Clone)]
pub struct Approvals {
    registry: AgentRegistry,
    ttl_secs: i64,
    page_base: String,
    approvers: Vec<Approver>,
}

impl Approvals {
    /// Approvals in `registry`, lasting `ttl_secs`, with pages under `public_url`, decided by
    /// `approvers` (none: by the admin credential).
    pub fn new(
        registry: AgentRegistry,
        ttl_secs: u64,
        public_url: &str,
        approvers: Vec<Approver>,
    ) -> Approvals {
        Approvals {
            registry,
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
            page_base: format!("{}{APPROVAL_PAGE_PATH}/", public_url.trim_end_matches('/')),
            approvers,
        }
    }

    /// Who the `Authorization: Bearer` credential of `headers` is (RFC 6750 §2.1): an approver,
    /// or the admin. Every approver's digest is compared (constant time each), so which one
    /// matched does not show in the timing.
    pub fn caller(
        &self,
        admin: Option<&AdminCredential>,
        headers: &HeaderMap,
    ) -> Result<Caller, Refusal> {
        if admin.is_none() && self.approvers.is_empty() {
            return Err(Refusal::Disabled);
        }
        let presented = bearer::presented(headers).ok_or(Refusal::Missing)?;
        let digest = bearer::presented_digest(presented);
        let mut found = None;
        for approver in &self.approvers {
            if approver.holds(&digest) {
                found = Some(approver.name.clone());
            }
        }
        if let Some(name) = found {
            return Ok(Caller::Approver(name));
        }
        match admin {
            Some(admin) if bearer::matches_digest(&digest, &admin.digest()) => Ok(Caller::Admin),
            _ => Err(Refusal::Wrong),
        }
    }

    /// Whether an approved `record` lets its call through: always without named approvers; with
    /// them, only when one of them, still configured, approved it with their own credential (not
    /// an approval the admin credential gave before approvers were named, nor one of an approver
    /// since removed).
    fn honoured(&self, record: &ApprovalRecord) -> bool {
        self.approvers.is_empty()
            || (record.decided_with.as_deref() == Some(DECIDED_BY_APPROVER)
                && self
                    .approvers
                    .iter()
                    .any(|a| Some(a.name()) == record.decided_by.as_deref()))
    }

    /// The name to record for a decision by `caller`, who says `claimed` (if anything), or why
    /// `caller` may not decide.
    fn decider(
        &self,
        caller: &Caller,
        claimed: Option<&str>,
    ) -> Result<String, (StatusCode, &'static str, String)> {
        let claimed = claimed
            .map(approver_name)
            .transpose()
            .map_err(|why| (StatusCode::BAD_REQUEST, "invalid_request", why))?;
        match caller {
            Caller::Approver(name) => match claimed {
                Some(other) if other != name => Err((
                    StatusCode::FORBIDDEN,
                    "approver_mismatch",
                    format!("this credential is approver `{name}`'s, not `{other}`'s"),
                )),
                _ => Ok(name.clone()),
            },
            Caller::Admin if !self.approvers.is_empty() => Err((
                StatusCode::FORBIDDEN,
                "approver_required",
                "approvals are decided by the named approvers (`[[approvers]]`), each with their \
                 own credential, not with the admin credential"
                    .to_owned(),
            )),
            Caller::Admin => claimed.map(str::to_owned).ok_or((
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "who decides? send `approver` with the admin credential".to_owned(),
            )),
        }
    }

    /// The approval that lets this call through, if one is approved and unused.
    pub async fn granted(
        &self,
        request: &DecisionRequest,
        now: i64,
    ) -> Result<Option<ApprovalFacts>, RegistryError> {
        let Some(current) = self
            .registry
            .current_approval(&request_key(request), now)
            .await?
        else {
            return Ok(None);
        };
        Ok(
            (current.status == "approved" && self.honoured(&current)).then(|| ApprovalFacts {
                granted: true,
                id: current.id,
                approved_by: current.decided_by.unwrap_or_default(),
            }),
        )
    }

    /// Use up `grant` for the call it let through: `Some` with what to audit, `None` when another
    /// call used it first (then this one must not pass).
    pub async fn use_grant(
        &self,
        grant: &ApprovalFacts,
        now: i64,
    ) -> Result<Option<ApprovalGrant>, RegistryError> {
        Ok(self
            .registry
            .use_approval(&grant.id, now)
            .await?
            .then(|| ApprovalGrant {
                id: grant.id.clone(),
                approved_by: grant.approved_by.clone(),
            }))
    }

    /// Hold `request`: the pending (or standing rejected) approval for it, created when there is
    /// none. Fills the requirement's `id`, `url` and `status`.
    pub async fn hold(
        &self,
        request: &DecisionRequest,
        requirement: &mut ApprovalRequirement,
        now: i64,
    ) -> Result<(), RegistryError> {
        let key = request_key(request);
        let current = self
            .registry
            .current_approval(&key, now)
            .await?
            // An approval that no longer counts (see `honoured`) is asked for again.
            .filter(|existing| existing.status != "approved" || self.honoured(existing));
        let record = match current {
            Some(existing) => existing,
            None => {
                let record = ApprovalRecord {
                    id: new_id(),
                    request_key: key,
                    agent_id: request.agent.id.clone(),
                    delegation: serde_json::to_string(&request.agent.delegation)
                        .unwrap_or_default(),
                    server: request.request.server.clone(),
                    method: request.request.method.clone(),
                    target: target_of(request).to_owned(),
                    arguments: request
                        .request
                        .arguments
                        .as_ref()
                        .map(serde_json::Value::to_string)
                        .unwrap_or_else(|| "{}".to_owned()),
                    reason: requirement.reason.clone(),
                    trace_id: request.trace_id.clone(),
                    status: "pending".to_owned(),
                    created_at: now,
                    expires_at: now.saturating_add(self.ttl_secs),
                    decided_at: None,
                    decided_by: None,
                    used_at: None,
                    decided_with: None,
                };
                self.registry.insert_approval(&record).await?;
                tracing::info!(
                    approval = %record.id, agent = %record.agent_id, server = %record.server,
                    target = %record.target, "call held for approval"
                );
                record
            }
        };
        requirement.url = Some(format!("{}{}", self.page_base, record.id));
        requirement.id = Some(record.id);
        requirement.status = Some(record.status);
        Ok(())
    }

    /// Approve or reject a pending approval, by `by` known as `caller`. An approval then counts
    /// for the TTL.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        (by, caller): (&str, &Caller),
        now: i64,
    ) -> Result<Decided, RegistryError> {
        let status = if approve { "approved" } else { "rejected" };
        let expires_at = now.saturating_add(self.ttl_secs);
        let with = match caller {
            Caller::Approver(_) => DECIDED_BY_APPROVER,
            Caller::Admin => DECIDED_BY_ADMIN,
        };
        if self
            .registry
            .decide_approval(id, status, (by, with), now, expires_at)
            .await?
        {
            tracing::info!(approval = %id, status, by, with, "approval decided");
            return Ok(Decided::Done);
        }
        Ok(match self.registry.approval(id).await? {
            None => Decided::NotFound,
            Some(record) if record.expires_at <= now => Decided::Expired,
            Some(record) => Decided::AlreadyDecided(record.status),
        })
    }
}

/// How long expired and used approvals are kept before they are deleted (for `list` and the
/// approval page of a call that just went through).
const KEEP_SECS: i64 = 24 * 3600;
/// How often expired approvals are deleted.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Delete approvals expired or used more than a day ago, every few minutes, for as long as the
/// sidecar runs.
pub async fn purge_periodically(approvals: std::sync::Arc<Approvals>) {
    let mut ticker = tokio::time::interval(PURGE_EVERY);
    loop {
        ticker.tick().await;
        match approvals
            .registry
            .purge_approvals(unix_now().saturating_sub(KEEP_SECS))
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged old approvals"),
            Err(err) => tracing::warn!(error = %err, "cannot purge old approvals"),
        }
    }
}

/// What became of an approve or reject request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// It is approved or rejected now.
    Done,
    /// No such approval.
    NotFound,
    /// It expired before anyone decided.
    Expired,
    /// It was decided before (its status).
    AlreadyDecided(String),
}

/// The request key: SHA-256 over who asks (agent and delegation chain) for exactly what (server,
/// method, target, arguments), hex. Arguments are compared as serde_json writes them (object
/// members sorted), so a retry that sends the same arguments in another order matches.
pub fn request_key(request: &DecisionRequest) -> String {
    let subject = serde_json::json!([
        request.agent.id,
        request.agent.delegation,
        request.request.server,
        request.request.method,
        target_of(request),
        request.request.arguments,
    ]);
    let mut hasher = Sha256::new();
    hasher.update(KEY_DOMAIN);
    hasher.update(subject.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

fn target_of(request: &DecisionRequest) -> &str {
    let facts = &request.request;
    facts
        .tool
        .as_deref()
        .or(facts.resource_uri.as_deref())
        .or(facts.prompt_name.as_deref())
        .unwrap_or_default()
}

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rsa::rand_core::RngCore::fill_bytes(&mut rsa::rand_core::OsRng, &mut bytes);
    format!("apr_{}", hex::encode(bytes))
}

/// One approval as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalView {
    /// Id.
    pub id: String,
    /// `pending`, `approved`, `rejected` or `used`.
    pub status: String,
    /// The agent, its delegation chain, and what it asked for.
    pub agent: String,
    /// Delegation chain, current actor first.
    pub delegation: Vec<String>,
    /// Server.
    pub server: String,
    /// Method.
    pub method: String,
    /// Tool, resource or prompt.
    pub target: String,
    /// Arguments of the call.
    pub arguments: serde_json::Value,
    /// Why it needs approval.
    pub reason: String,
    /// Trace of the held call.
    pub trace_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Who decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
    /// How the decider was known: `approver` (their own credential) or `admin` (a name the admin
    /// credential gave, not proven).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_with: Option<String>,
}

impl From<ApprovalRecord> for ApprovalView {
    fn from(record: ApprovalRecord) -> Self {
        ApprovalView {
            id: record.id,
            status: record.status,
            agent: record.agent_id,
            delegation: serde_json::from_str(&record.delegation).unwrap_or_default(),
            server: record.server,
            method: record.method,
            target: record.target,
            arguments: serde_json::from_str(&record.arguments).unwrap_or_default(),
            reason: record.reason,
            trace_id: record.trace_id,
            created_at: record.created_at,
            expires_at: record.expires_at,
            decided_with: record.decided_by.as_ref().map(|_| {
                record
                    .decided_with
                    .unwrap_or_else(|| DECIDED_BY_ADMIN.to_owned())
            }),
            decided_by: record.decided_by,
            decided_at: record.decided_at,
        }
    }
}

/// `GET /admin/v1/approvals?status=pending`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<String>,
}

/// Body of approve and reject.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecideBody {
    /// Who decides (recorded with the approval and in the audit trail of the call): required
    /// with the admin credential; an approver's credential names them, and a name given with it
    /// must be theirs.
    pub approver: Option<String>,
}

/// The approval routes of the admin API, behind [`require_caller`].
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route(ADMIN_APPROVALS_PATH, get(list))
        .route(
            &format!("{ADMIN_APPROVALS_PATH}/{{id}}/{{action}}"),
            post(decide),
        )
        .layer(DefaultBodyLimit::max(crate::admin::MAX_ADMIN_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(state, require_caller))
}

/// The admin credential or an approver's, in front of every approval route; the [`Caller`] goes
/// to the handler.
async fn require_caller(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match state
        .approvals
        .caller(state.admin_credential.as_deref(), request.headers())
    {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => refused(refusal),
    }
}

/// RFC 6750 §3 `realm` of the approval routes' challenges (the admin API's).
const REALM: &str = "behavry-admin";

/// The answer to a credential the approval routes do not take (logged).
fn refused(refusal: Refusal) -> Response {
    let (status, code, message) = match refusal {
        Refusal::Disabled => (
            StatusCode::NOT_FOUND,
            "admin_disabled",
            "no one can list or decide held calls: configure `admin_token_file` or `[[approvers]]` \
             on the authz-sidecar",
        ),
        Refusal::Missing => (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "credential required: send Authorization: Bearer <an approver's or the admin credential>",
        ),
        Refusal::Wrong => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the credential is neither an approver's nor the admin's",
        ),
    };
    bearer::error_response(
        status,
        code,
        message.to_owned(),
        "approval request",
        Some((refusal, REALM)),
    )
}

/// 403 for a valid credential that may not do this: logged, with the RFC 6750 §3.1
/// `insufficient_scope` challenge.
fn forbidden(code: &'static str, message: String) -> Response {
    let mut response = bearer::error_response(
        StatusCode::FORBIDDEN,
        code,
        message,
        "approval decision",
        None,
    );
    let challenge = format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\"");
    if let Ok(value) = axum::http::HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, value);
    }
    response
}

fn error(status: StatusCode, code: &'static str, message: String) -> Response {
    (
        status,
        Json(crate::http::ErrorBody {
            error: code,
            message,
        }),
    )
        .into_response()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// `GET /admin/v1/approvals`: unexpired approvals, newest first.
pub async fn list(State(state): State<AppState>, Query(query): Query<ListQuery>) -> Response {
    if let Some(status) = query.status.as_deref()
        && !matches!(status, "pending" | "approved" | "rejected" | "used")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("unknown status `{status}`: pending, approved, rejected or used"),
        );
    }
    match state
        .approvals
        .registry
        .list_approvals(query.status.as_deref(), unix_now(), LIST_LIMIT)
        .await
    {
        Ok(records) => Json(
            records
                .into_iter()
                .map(ApprovalView::from)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(err) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry_unavailable",
            err.to_string(),
        ),
    }
}

/// `POST /admin/v1/approvals/{id}/approve` and `/reject`.
pub async fn decide(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, verb)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let approve = match verb.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action `{verb}`: approve or reject"),
            );
        }
    };
    // An approver's credential names them: an empty body is `{}`.
    let body: DecideBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecideBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("invalid body: {err}"),
                );
            }
        }
    };
    let approver = match state.approvals.decider(&caller, body.approver.as_deref()) {
        Ok(name) => name,
        Err((StatusCode::FORBIDDEN, code, message)) => return forbidden(code, message),
        Err((status, code, message)) => return error(status, code, message),
    };
    match state
        .approvals
        .decide(&id, approve, (&approver, &caller), unix_now())
        .await
    {
        Ok(Decided::Done) => match state.approvals.registry.approval(&id).await {
            Ok(Some(record)) => Json(ApprovalView::from(record)).into_response(),
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no approval `{id}`"),
            ),
            Err(err) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry_unavailable",
                err.to_string(),
            ),
        },
        Ok(Decided::NotFound) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no approval `{id}`"),
        ),
        Ok(Decided::Expired) => error(
            StatusCode::CONFLICT,
            "expired",
            format!("approval `{id}` expired before it was decided"),
        ),
        Ok(Decided::AlreadyDecided(status)) => error(
            StatusCode::CONFLICT,
            "already_decided",
            format!("approval `{id}` is already {status}"),
        ),
        Err(err) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry_unavailable",
            err.to_string(),
        ),
    }
}

/// `GET /approvals/{id}`: where an approval URL points. Shows the status and how to decide, not
/// the arguments (the URL travels through the agent).
pub async fn page(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let record = match state.approvals.registry.approval(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such approval\n").into_response(),
        Err(err) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response();
        }
    };
    let status = if record.expires_at <= unix_now() && record.status != "used" {
        "expired".to_owned()
    } else {
        record.status.clone()
    };
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    Html(format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Behavry approval {id}</title>\
         <h1>Approval {id}: {status}</h1>\
         <p>Agent <b>{agent}</b> asks to call <b>{target}</b> ({method}) on server <b>{server}</b>.</p>\
         <p>{reason}</p>\
         <p>An approver decides with <code>behavry approvals approve {id}</code> or \
         <code>behavry approvals reject {id}</code> (with their own credential, \
         <code>--approver-token-file</code>, where approvers are named); then the agent retries \
         the call.</p>",
        id = escape(&record.id),
        status = escape(&status),
        agent = escape(&record.agent_id),
        target = escape(&record.target),
        method = escape(&record.method),
        server = escape(&record.server),
        reason = escape(&record.reason),
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, header};
    use serde_json::{Value, json};

    use super::*;
    use crate::http::tests::{ADMIN_TOKEN, call, test_state};

    /// A destructive `echo` (by annotation) from the demo agent, which has no elevated role.
    fn destructive(message: &str) -> Request<Body> {
        let body = json!({
            "traceId": "0af7651916cd43dd8448eb211c80319c",
            "agent": {"id": "demo-agent", "scopes": ["mcp"]},
            "request": {"server": "everything", "method": "tools/call", "tool": "echo",
                        "arguments": {"message": message}},
            "tool": {"annotations": {"destructiveHint": true}},
        });
        Request::post("/v1/decide")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    fn admin(method: &str, path: &str, body: Option<Value>) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap()
    }

    fn decided(id: &str, verb: &str, approver: &str) -> Request<Body> {
        admin(
            "POST",
            &format!("{ADMIN_APPROVALS_PATH}/{id}/{verb}"),
            Some(json!({"approver": approver})),
        )
    }

    /// Hold a destructive `echo` of `message`: the id of its approval.
    async fn held_id(state: &AppState, message: &str) -> String {
        let (_, _, held) = call(state, destructive(message)).await;
        held["obligations"]["requireApproval"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Alice's own credential, as an approver.
    const ALICE_TOKEN: &str = "alice-approver-credential-0123456789abcdef";

    /// A request to the approval routes with `credential` (none: no Authorization header).
    fn with_credential(
        credential: Option<&str>,
        method: &str,
        path: &str,
        body: Value,
    ) -> Request<Body> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(credential) = credential {
            request = request.header(header::AUTHORIZATION, format!("Bearer {credential}"));
        }
        request.body(Body::from(body.to_string())).unwrap()
    }

    /// Bob's own credential.
    const BOB_TOKEN: &str = "bob-approver-credential-0123456789abcdef00";

    fn approver(name: &str, token: &str) -> Approver {
        Approver::from_entry(&ApproverEntry {
            name: name.to_owned(),
            token_sha256: hex::encode(Sha256::digest(token)),
        })
        .unwrap()
    }

    /// `state` with these approvers (its registry kept): what a restart with another
    /// `[[approvers]]` list gives.
    fn with_approvers(mut state: AppState, approvers: Vec<Approver>) -> AppState {
        state.approvals = std::sync::Arc::new(Approvals::new(
            state.directory.registry().clone(),
            DEFAULT_APPROVAL_TTL_SECS,
            "http://127.0.0.1:9911",
            approvers,
        ));
        state
    }

    /// [`test_state`] whose held calls are decided by the approver `alice`.
    async fn state_with_alice(dir: &std::path::Path) -> AppState {
        with_approvers(
            test_state(dir, true).await,
            vec![approver("alice", ALICE_TOKEN)],
        )
    }

    #[tokio::test]
    async fn only_approvals_of_a_configured_approver_let_calls_through_once_approvers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        // Approved with the admin credential (in alice's name) before approvers were named.
        let before = test_state(dir.path(), true).await;
        let id = held_id(&before, "drop it").await;
        let (status, _, _) = call(&before, decided(&id, "approve", "alice")).await;
        assert_eq!(status, StatusCode::OK);
        // After a restart with approvers, that approval is asked for again.
        let state = with_approvers(before, vec![approver("alice", ALICE_TOKEN)]);
        let (_, _, again) = call(&state, destructive("drop it")).await;
        assert_eq!(again["allow"], false, "{again}");
        let renewed = &again["obligations"]["requireApproval"];
        assert_eq!(renewed["status"], "pending");
        assert_ne!(renewed["id"], id.as_str());
        let renewed = renewed["id"].as_str().unwrap().to_owned();
        let (_, _, listed) = call(&state, admin("GET", ADMIN_APPROVALS_PATH, None)).await;
        let old = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id.as_str())
            .unwrap();
        assert_eq!(old["decidedWith"], "admin");

        // Alice approves with her credential (no body at all); then she is removed.
        let path = format!("{ADMIN_APPROVALS_PATH}/{renewed}/approve");
        let request = Request::post(&path)
            .header(header::AUTHORIZATION, format!("Bearer {ALICE_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let (status, _, approved) = call(&state, request).await;
        assert_eq!(status, StatusCode::OK, "{approved}");
        assert_eq!(approved["decidedWith"], "approver");
        let state = with_approvers(state, vec![approver("bob", BOB_TOKEN)]);
        let (_, _, held) = call(&state, destructive("drop it")).await;
        assert_eq!(held["allow"], false, "{held}");
        assert_eq!(held["obligations"]["requireApproval"]["status"], "pending");
    }

    #[tokio::test]
    async fn approvers_without_an_admin_credential_decide_and_the_admin_api_stays_closed() {
        let dir = tempfile::tempdir().unwrap();
        let state = with_approvers(
            test_state(dir.path(), false).await,
            vec![approver("alice", ALICE_TOKEN)],
        );
        let id = held_id(&state, "drop it").await;
        let approve = format!("{ADMIN_APPROVALS_PATH}/{id}/approve");
        let (status, _, approved) = call(
            &state,
            with_credential(Some(ALICE_TOKEN), "POST", &approve, json!({})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{approved}");
        let (status, _, closed) = call(
            &state,
            with_credential(Some(ALICE_TOKEN), "GET", "/admin/v1/agents", json!(null)),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{closed}");
        assert_eq!(closed["error"], "admin_disabled");
    }

    #[tokio::test]
    async fn with_named_approvers_only_they_decide_and_the_name_recorded_is_proven() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with_alice(dir.path()).await;
        let id = held_id(&state, "drop it").await;
        let approve = format!("{ADMIN_APPROVALS_PATH}/{id}/approve");

        // The admin credential lists, but no longer decides, whatever name it gives.
        let (status, _, listed) = call(&state, admin("GET", ADMIN_APPROVALS_PATH, None)).await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        let (status, headers, refused) = call(&state, decided(&id, "approve", "alice")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
        assert_eq!(refused["error"], "approver_required");
        // RFC 6750 §3.1: a valid credential without the right to do this.
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("error=\"insufficient_scope\"")
        );

        // No credential, or one nobody holds: 401 with the Bearer challenge (RFC 6750 §3.1).
        let (status, headers, _) =
            call(&state, with_credential(None, "POST", &approve, json!({}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        let wrong = "not-alice-credential-0123456789abcdef";
        let (status, headers, _) = call(
            &state,
            with_credential(Some(wrong), "POST", &approve, json!({})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );

        // Alice cannot decide in someone else's name.
        let (status, _, mismatch) = call(
            &state,
            with_credential(
                Some(ALICE_TOKEN),
                "POST",
                &approve,
                json!({"approver": "bob"}),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{mismatch}");
        assert_eq!(mismatch["error"], "approver_mismatch");

        // Her credential names her; the approval and the call's decision carry it.
        let (status, _, approved) = call(
            &state,
            with_credential(Some(ALICE_TOKEN), "POST", &approve, json!({})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{approved}");
        assert_eq!(approved["decidedBy"], "alice");
        let (_, _, allowed) = call(&state, destructive("drop it")).await;
        assert_eq!(allowed["allow"], true, "{allowed}");
        assert_eq!(allowed["approval"]["approvedBy"], "alice");

        // An approver lists too.
        let (status, _, listed) = call(
            &state,
            with_credential(Some(ALICE_TOKEN), "GET", ADMIN_APPROVALS_PATH, json!(null)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        assert_eq!(listed[0]["decidedBy"], "alice");
    }

    #[test]
    fn a_new_approver_holds_the_credential_made_for_them() {
        let (token, entry) = new_approver(" carol ").unwrap();
        assert_eq!(entry.name, "carol");
        assert_eq!(token.len(), 64);
        let approver = Approver::from_entry(&entry).unwrap();
        assert!(approver.holds(&bearer::presented_digest(&token)));
        assert!(!approver.holds(&bearer::presented_digest(&new_approver("carol").unwrap().0)));
        assert!(new_approver("").is_err());
        // An empty credential's digest is refused.
        let empty = ApproverEntry {
            name: "x".to_owned(),
            token_sha256: hex::encode(Sha256::digest("")),
        };
        assert!(Approver::from_entry(&empty).is_err());
    }

    #[tokio::test]
    async fn the_admin_credential_must_say_who_decides_when_there_are_no_approvers() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;
        let id = held_id(&state, "drop it").await;
        let path = format!("{ADMIN_APPROVALS_PATH}/{id}/approve");
        for body in [
            json!({}),
            json!({"approver": " "}),
            json!({"approver": "a\u{7}b"}),
        ] {
            let (status, _, answer) = call(&state, admin("POST", &path, Some(body))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        }
        // Disabled: neither an admin credential nor approvers.
        let dir = tempfile::tempdir().unwrap();
        let closed = test_state(dir.path(), false).await;
        let (status, _, answer) = call(&closed, decided(&id, "approve", "alice")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert_eq!(answer["error"], "admin_disabled");
    }

    #[tokio::test]
    async fn a_held_call_goes_through_once_after_approval() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;

        let (status, _, first) = call(&state, destructive("drop it")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(first["allow"], false);
        let held = &first["obligations"]["requireApproval"];
        assert_eq!(held["status"], "pending");
        let id = held["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("apr_") && id.len() == 4 + 32, "{id}");
        assert_eq!(held["url"], format!("http://127.0.0.1:9911/approvals/{id}"));
        // A retry of the same call is the same request, not a second one.
        let (_, _, again) = call(&state, destructive("drop it")).await;
        assert_eq!(again["obligations"]["requireApproval"]["id"], id.as_str());

        let (status, _, pending) = call(
            &state,
            admin(
                "GET",
                &format!("{ADMIN_APPROVALS_PATH}?status=pending"),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let listed = pending.as_array().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["id"], id.as_str());
        assert_eq!(listed[0]["agent"], "demo-agent");
        assert_eq!(listed[0]["target"], "echo");
        assert_eq!(listed[0]["arguments"], json!({"message": "drop it"}));

        let (status, _, approved) = call(&state, decided(&id, "approve", "alice")).await;
        assert_eq!(status, StatusCode::OK, "{approved}");
        assert_eq!(approved["status"], "approved");
        assert_eq!(approved["decidedBy"], "alice");

        // Other arguments are another request: still held.
        let (_, _, other) = call(&state, destructive("drop something else")).await;
        assert_eq!(other["allow"], false);
        assert_ne!(other["obligations"]["requireApproval"]["id"], id.as_str());

        let (_, _, allowed) = call(&state, destructive("drop it")).await;
        assert_eq!(allowed["allow"], true, "{allowed}");
        assert_eq!(
            allowed["approval"],
            json!({"id": id, "approvedBy": "alice"})
        );

        // Used up: the next identical call is held again, under a new approval.
        let (_, _, next) = call(&state, destructive("drop it")).await;
        assert_eq!(next["allow"], false);
        let next_id = next["obligations"]["requireApproval"]["id"]
            .as_str()
            .unwrap();
        assert_ne!(next_id, id);

        // Deciding twice is refused; a rejection stands for the retries.
        let (status, _, body) = call(&state, decided(&id, "reject", "bob")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, _, _) = call(&state, decided(next_id, "reject", "bob")).await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, rejected) = call(&state, destructive("drop it")).await;
        assert_eq!(rejected["allow"], false);
        assert_eq!(
            rejected["obligations"]["requireApproval"]["status"],
            "rejected"
        );
        assert_eq!(rejected["obligations"]["requireApproval"]["id"], next_id);
    }

    #[tokio::test]
    async fn an_approval_is_used_once_even_when_retries_race() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;
        let id = held_id(&state, "x").await;
        call(&state, decided(&id, "approve", "alice")).await;
        let grant = ApprovalFacts {
            granted: true,
            id: id.clone(),
            approved_by: "alice".to_owned(),
        };
        let now = unix_now();
        let (a, b) = tokio::join!(
            state.approvals.use_grant(&grant, now),
            state.approvals.use_grant(&grant, now)
        );
        let used: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
        assert_eq!(used.len(), 1);
    }

    #[tokio::test]
    async fn bad_admin_requests_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;
        let (status, _, body) = call(&state, decided("apr_nope", "approve", "alice")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _, body) = call(&state, decided("apr_nope", "launch", "alice")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _, body) = call(&state, decided("apr_nope", "approve", " ")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, _, body) = call(
            &state,
            admin("GET", &format!("{ADMIN_APPROVALS_PATH}?status=maybe"), None),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // Without the admin credential: nothing.
        let anonymous = Request::get(ADMIN_APPROVALS_PATH)
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = call(&state, anonymous).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_approval_page_shows_status_not_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), false).await;
        let id = held_id(&state, "secret-ish <b>value</b>").await;
        let page = Request::get(format!("{APPROVAL_PAGE_PATH}/{id}"))
            .body(Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(crate::http::app(state.clone()), page)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let response = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(
            response.contains(&format!("Approval {id}: pending")),
            "{response}"
        );
        assert!(!response.contains("secret-ish"), "{response}");
        assert!(response.contains("behavry approvals approve"), "{response}");
    }
}
