//! HTTP API of the audit-sink (axum). Errors become statuses and JSON bodies in one place:
//! [`ApiError::into_response`].
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/events` (NDJSON) | 200 [`IngestAck`] after commit; 400 bad line; 413 too large; 503 storage |
//! | `GET /v1/traces/{traceId}` | 200 [`TraceResponse`]; 400 bad trace id; 404 unknown trace |
//! | `GET /v1/log/head` | 200 [`LogHead`] |
//! | `GET /v1/log/proof/inclusion?seq=&size=` | 200 [`InclusionProof`] (RFC 9162 §2.1.3); 400 bad query; 404 beyond the log |
//! | `GET /v1/log/proof/consistency?from=&to=` | 200 [`ConsistencyProof`] (RFC 9162 §2.1.4); 400; 404 |
//! | `GET /v1/log/checkpoint` | 200 the newest signed checkpoint (C2SP signed note); 404 none yet |
//! | `GET /healthz` | 200 `ok` |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use behavry_core::wire::{AuditEvent, EVENTS_PATH, IngestAck, TRACES_PATH};
use serde::{Deserialize, Serialize};

use crate::checkpoint::unverified_checkpoint;
use crate::export::{Inclusion, hex_hashes};
use crate::ingest::{self, IngestError};
use crate::store::{AuditStore, StoreError, TraceQuery};

/// Largest accepted batch body: 16 MiB. Larger bodies get 413 and are not read.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Path of the log head endpoint.
pub const LOG_HEAD_PATH: &str = "/v1/log/head";

/// Path of the inclusion proofs (RFC 9162 §2.1.3).
pub const INCLUSION_PROOF_PATH: &str = "/v1/log/proof/inclusion";

/// Path of the consistency proofs (RFC 9162 §2.1.4).
pub const CONSISTENCY_PROOF_PATH: &str = "/v1/log/proof/consistency";

/// Path of the newest signed checkpoint (a C2SP signed note, `text/plain`).
pub const CHECKPOINT_PATH: &str = "/v1/log/checkpoint";

/// Path of the log's export (NDJSON, docs/audit.md "Export").
pub const EXPORT_PATH: &str = "/v1/log/export";

/// Path of the liveness endpoint.
pub const HEALTH_PATH: &str = "/healthz";

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The log.
    pub store: AuditStore,
    /// Exports running at once (each holds a pooled connection for as long as it streams).
    pub exports: Arc<tokio::sync::Semaphore>,
}

/// Exports that may stream at once: the pool keeps connections for appends.
pub const MAX_EXPORTS: usize = 2;

impl AppState {
    /// The state of a sink on `store`.
    pub fn new(store: AuditStore) -> AppState {
        AppState {
            store,
            exports: Arc::new(tokio::sync::Semaphore::new(MAX_EXPORTS)),
        }
    }
}

/// The sink's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(EVENTS_PATH, post(ingest_events))
        .route(TRACES_PATH, get(search_traces))
        .route(&format!("{TRACES_PATH}/{{trace_id}}"), get(trace))
        .route(LOG_HEAD_PATH, get(log_head))
        .route(INCLUSION_PROOF_PATH, get(inclusion_proof))
        .route(CONSISTENCY_PROOF_PATH, get(consistency_proof))
        .route(CHECKPOINT_PATH, get(checkpoint))
        .route(EXPORT_PATH, get(export))
        .route(HEALTH_PATH, get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES))
        .with_state(state)
}

/// Answer of `GET /v1/traces/{traceId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceResponse {
    /// The trace asked for.
    pub trace_id: String,
    /// Its events in log order.
    pub events: Vec<TraceEntry>,
    /// With `?proofs=true`: the newest signed checkpoint, which each event's `inclusion` leads
    /// to (events after it have none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// Query of `GET /v1/traces/{traceId}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceParams {
    /// Give each event its inclusion proof in the newest checkpoint.
    #[serde(default)]
    proofs: bool,
}

/// Query of `GET /v1/traces`: every filter given must hold for one record of a trace.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    agent: Option<String>,
    server: Option<String>,
    /// The tool, prompt name or resource URI.
    tool: Option<String>,
    session: Option<String>,
    /// `allow` or `deny`.
    decision: Option<String>,
    /// Milliseconds since the epoch, inclusive.
    since: Option<i64>,
    /// Milliseconds since the epoch, exclusive.
    until: Option<i64>,
    /// The `next` of the previous page.
    before: Option<i64>,
    /// 1 to [`MAX_SEARCH_LIMIT`]; [`DEFAULT_SEARCH_LIMIT`] when absent.
    limit: Option<u32>,
}

/// Traces a search answers when no `limit` is given.
pub const DEFAULT_SEARCH_LIMIT: u32 = 50;

/// The largest `limit` of a search.
pub const MAX_SEARCH_LIMIT: u32 = 500;

/// Answer of `GET /v1/traces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchResponse {
    /// Newest first.
    pub traces: Vec<TraceSummary>,
    /// `before` for the next page, when this one is full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// One trace a search found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceSummary {
    pub trace_id: String,
    /// Its first record matching the search.
    pub first_seq: u64,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Records in the trace.
    pub events: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// `deny` when a call of it was denied, `allow` when allowed, absent without a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

/// One event of a trace with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceEntry {
    /// Position in the log (1-based).
    pub seq: u64,
    /// Hex of the record's hash.
    pub hash: String,
    /// Hex of the previous record's hash.
    pub prev_hash: String,
    /// The event as stored.
    pub event: AuditEvent,
    /// With `?proofs=true`: its inclusion proof in the response's checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion: Option<Inclusion>,
}

/// Answer of `GET /v1/log/head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogHead {
    /// Number of records.
    pub size: u64,
    /// Hex of the last record's hash (64 zeros for an empty log).
    pub head_hash: String,
    /// Hex of the Merkle tree head of the `size` records (RFC 9162 §2.1.1; SHA-256 of nothing
    /// for an empty log).
    pub root_hash: String,
}

/// Query of `GET /v1/log/proof/inclusion`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The record (1-based).
    seq: u64,
    /// The tree size the proof is for; the log's size when absent.
    #[serde(default)]
    size: Option<u64>,
}

/// Answer of `GET /v1/log/proof/inclusion`: record `seq` is leaf `seq - 1` of the tree of `size`
/// records, whose head is `rootHash`. Hashes in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InclusionProof {
    pub seq: u64,
    pub size: u64,
    /// `seq - 1`, the leaf index RFC 9162 verifiers take.
    pub leaf_index: u64,
    /// SHA-256(0x00 || the record's stored body).
    pub leaf_hash: String,
    pub root_hash: String,
    /// The audit path, from the leaf up.
    pub proof: Vec<String>,
}

/// Query of `GET /v1/log/proof/consistency`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    /// The log's size when absent.
    #[serde(default)]
    to: Option<u64>,
}

/// Query of `GET /v1/log/export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// The first record; 1 when absent.
    #[serde(default)]
    from: Option<u64>,
    /// The last record; the log's last when absent.
    #[serde(default)]
    to: Option<u64>,
    /// Whether each record carries its inclusion proof.
    #[serde(default)]
    proofs: bool,
}

/// Answer of `GET /v1/log/proof/consistency`: the tree of `to` records extends the tree of
/// `from`. Hashes in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub from_root: String,
    pub to_root: String,
    pub proof: Vec<String>,
}

/// JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
    /// For `badLine`: the 1-based line number of the first bad line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// Errors of the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The batch has a bad line; nothing was stored.
    #[error(transparent)]
    BadBatch(#[from] IngestError),
    /// The body is over [`MAX_BATCH_BYTES`].
    #[error("batch body exceeds {MAX_BATCH_BYTES} bytes; send smaller batches")]
    BatchTooLarge,
    /// The body could not be read.
    #[error("cannot read request body: {0}")]
    UnreadableBody(String),
    /// The trace id in the path is malformed.
    #[error("trace id must be 32 lowercase hex digits, not all zero")]
    InvalidTraceId,
    /// No event has this trace id.
    #[error("no events for trace {0}")]
    TraceNotFound(String),
    /// A proof's query is malformed.
    #[error("{0}")]
    BadQuery(String),
    /// A proof asked for records or sizes the log does not have.
    #[error("{0}")]
    BeyondLog(String),
    /// As many exports as may run at once are streaming.
    #[error("{MAX_EXPORTS} exports are streaming already; try again when one ends")]
    ExportBusy,
    /// No checkpoint was signed yet (or the sink has no signing key).
    #[error("no signed checkpoint yet")]
    NoCheckpoint,
    /// Storage failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, line) = match &self {
            ApiError::BadBatch(IngestError::BadLine { line, .. })
            | ApiError::BadBatch(IngestError::Canonical { line, .. }) => {
                (StatusCode::BAD_REQUEST, "badLine", Some(*line))
            }
            ApiError::BatchTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "batchTooLarge", None),
            ApiError::UnreadableBody(_) => (StatusCode::BAD_REQUEST, "unreadableBody", None),
            ApiError::InvalidTraceId => (StatusCode::BAD_REQUEST, "invalidTraceId", None),
            ApiError::TraceNotFound(_) => (StatusCode::NOT_FOUND, "traceNotFound", None),
            ApiError::BadQuery(_) => (StatusCode::BAD_REQUEST, "badQuery", None),
            ApiError::BeyondLog(_) => (StatusCode::NOT_FOUND, "beyondLog", None),
            // The sender keeps the batch and retries: the database may be locked or the disk full.
            ApiError::Store(
                StoreError::Database(_)
                | StoreError::Open { .. }
                | StoreError::Migrate(_)
                | StoreError::Missing(_),
            ) => (StatusCode::SERVICE_UNAVAILABLE, "storeUnavailable", None),
            ApiError::Store(StoreError::BadRange(_)) => (StatusCode::BAD_REQUEST, "badQuery", None),
            ApiError::Store(StoreError::Corrupt { .. }) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "corruptRecord", None)
            }
            ApiError::Store(StoreError::Forked { .. } | StoreError::Signing(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "checkpointRefused", None)
            }
            ApiError::NoCheckpoint => (StatusCode::NOT_FOUND, "noCheckpoint", None),
            ApiError::ExportBusy => (StatusCode::SERVICE_UNAVAILABLE, "exportBusy", None),
        };
        let message = self.to_string();
        if status.is_server_error() {
            tracing::error!(error = code, "{message}");
        } else {
            tracing::warn!(error = code, "{message}");
        }
        let body = ErrorBody {
            error: code.to_owned(),
            message,
            line,
        };
        (status, Json(body)).into_response()
    }
}

async fn ingest_events(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestAck>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BatchTooLarge
        } else {
            ApiError::UnreadableBody(rejection.body_text())
        }
    })?;
    let events = ingest::parse_batch(&body)?;
    let ack = state.store.append_batch(&events).await?;
    tracing::info!(
        appended = ack.appended,
        duplicates = ack.duplicates,
        "batch committed"
    );
    Ok(Json(ack))
}

async fn trace(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    params: Result<Query<TraceParams>, QueryRejection>,
) -> Result<Json<TraceResponse>, ApiError> {
    let TraceParams { proofs } = proof_query(params)?;
    if !ingest::is_trace_id(&trace_id) {
        return Err(ApiError::InvalidTraceId);
    }
    let records = state.store.trace(&trace_id).await?;
    if records.is_empty() {
        return Err(ApiError::TraceNotFound(trace_id));
    }
    let checkpoint = match proofs {
        true => state.store.latest_checkpoint().await?,
        false => None,
    };
    // The sink reads its own note: the client checks the signature.
    let covered = checkpoint
        .as_deref()
        .and_then(|note| unverified_checkpoint(note).ok())
        .map_or(0, |c| c.size);
    let mut events = Vec::with_capacity(records.len());
    for record in records {
        let inclusion = match record.seq <= covered {
            true => state
                .store
                .inclusion_proof(record.seq, covered)
                .await?
                .map(|proof| Inclusion {
                    size: covered,
                    proof: hex_hashes(&proof),
                }),
            false => None,
        };
        events.push(TraceEntry {
            seq: record.seq,
            hash: hex::encode(record.hash),
            prev_hash: hex::encode(record.prev_hash),
            event: record.event,
            inclusion,
        });
    }
    Ok(Json(TraceResponse {
        trace_id,
        events,
        checkpoint,
    }))
}

async fn search_traces(
    State(state): State<AppState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let params = proof_query(params)?;
    if let Some(decision) = params.decision.as_deref()
        && decision != "allow"
        && decision != "deny"
    {
        return Err(ApiError::BadQuery(format!(
            "decision must be allow or deny, not {decision:?}"
        )));
    }
    let limit = params.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
    if limit == 0 || limit > MAX_SEARCH_LIMIT {
        return Err(ApiError::BadQuery(format!(
            "limit must be 1 to {MAX_SEARCH_LIMIT}"
        )));
    }
    let query = TraceQuery {
        agent: params.agent,
        server: params.server,
        tool: params.tool,
        session: params.session,
        decision: params.decision,
        since_ms: params.since,
        until_ms: params.until,
        before_seq: params.before,
        limit,
    };
    let found = state.store.search_traces(&query).await?;
    let next = (found.len() == limit as usize)
        .then(|| found.last().map(|m| m.first_seq))
        .flatten();
    let traces = found
        .into_iter()
        .map(|m| TraceSummary {
            trace_id: m.trace_id,
            first_seq: m.first_seq,
            start_ms: m.start_ms,
            end_ms: m.end_ms,
            events: m.events,
            agent: m.agent,
            server: m.server,
            method: m.method,
            tool: m.tool,
            session_id: m.session_id,
            decision: m.decision,
        })
        .collect();
    Ok(Json(SearchResponse { traces, next }))
}

async fn log_head(State(state): State<AppState>) -> Result<Json<LogHead>, ApiError> {
    let head = state.store.head().await?;
    let root = tree_head(&state, head.size).await?;
    Ok(Json(LogHead {
        size: head.size,
        head_hash: head.head_hash_hex(),
        root_hash: hex::encode(root),
    }))
}

/// The tree head of `size` records, or 404.
async fn tree_head(state: &AppState, size: u64) -> Result<behavry_core::merkle::Hash, ApiError> {
    state
        .store
        .tree_head(size)
        .await?
        .ok_or_else(|| ApiError::BeyondLog(format!("the log has fewer than {size} records")))
}

/// A query string the proof routes take, or `badQuery` naming the problem.
fn proof_query<T: serde::de::DeserializeOwned>(
    query: Result<Query<T>, QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::BadQuery(rejection.body_text()))
}

async fn checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    let note = state
        .store
        .latest_checkpoint()
        .await?
        .ok_or(ApiError::NoCheckpoint)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        note,
    )
        .into_response())
}

/// Export lines on their way to the client.
struct ExportStream(tokio::sync::mpsc::Receiver<String>);

impl futures_core::Stream for ExportStream {
    type Item = Result<String, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|line| line.map(Ok))
    }
}

/// `GET /v1/log/export`: streamed from one read snapshot; a range outside the log is refused
/// before the first byte. A failure after that ends the stream early, which the verifier
/// reports as a range cut short.
async fn export(
    State(state): State<AppState>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let ExportQuery { from, to, proofs } = proof_query(query)?;
    let from = from.unwrap_or(1);
    let size = state.store.head().await?.size;
    if from == 0 || to.unwrap_or(size).saturating_add(1) < from {
        return Err(ApiError::BadQuery(
            "from must be at least 1 and at most to + 1".into(),
        ));
    }
    if let Some(to) = to.filter(|to| *to > size) {
        return Err(ApiError::BeyondLog(format!(
            "the log has {size} records, not {to}"
        )));
    }
    let to = to.unwrap_or(size);
    let Ok(permit) = Arc::clone(&state.exports).try_acquire_owned() else {
        return Err(ApiError::ExportBusy);
    };
    let (lines, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(err) = state.store.export(from, Some(to), proofs, &lines).await {
            tracing::error!(error = %err, "export ended early");
        }
        drop(permit);
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(ExportStream(receiver)),
    )
        .into_response())
}

async fn inclusion_proof(
    State(state): State<AppState>,
    query: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<InclusionProof>, ApiError> {
    let query = proof_query(query)?;
    let size = match query.size {
        Some(size) => size,
        None => state.store.head().await?.size,
    };
    if query.seq == 0 || query.seq > size {
        return Err(ApiError::BadQuery(format!(
            "seq must be from 1 to the size ({size}), not {}",
            query.seq
        )));
    }
    let root = tree_head(&state, size).await?;
    let proof = state
        .store
        .inclusion_proof(query.seq, size)
        .await?
        .ok_or_else(|| ApiError::BeyondLog(format!("the log has fewer than {size} records")))?;
    let leaf =
        state.store.leaf_hash(query.seq).await?.ok_or_else(|| {
            ApiError::BeyondLog(format!("record {} is not in the log", query.seq))
        })?;
    Ok(Json(InclusionProof {
        seq: query.seq,
        size,
        leaf_index: query.seq - 1,
        leaf_hash: hex::encode(leaf),
        root_hash: hex::encode(root),
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

async fn consistency_proof(
    State(state): State<AppState>,
    query: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let query = proof_query(query)?;
    let to = match query.to {
        Some(to) => to,
        None => state.store.head().await?.size,
    };
    if query.from == 0 || query.from > to {
        return Err(ApiError::BadQuery(format!(
            "from must be from 1 to `to` ({to}), not {}",
            query.from
        )));
    }
    let proof = state
        .store
        .consistency_proof(query.from, to)
        .await?
        .ok_or_else(|| ApiError::BeyondLog(format!("the log has fewer than {to} records")))?;
    Ok(Json(ConsistencyProof {
        from: query.from,
        to,
        from_root: hex::encode(tree_head(&state, query.from).await?),
        to_root: hex::encode(tree_head(&state, to).await?),
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::sample_event;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use behavry_core::merkle;
    use behavry_core::wire::AuditKind;
    use sqlx::Connection;
    use tower::ServiceExt;

    async fn test_app() -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        (dir, app(AppState::new(store)))
    }

    async fn send(app: &Router, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/x-ndjson")
            .body(Body::from(body))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    fn ndjson(events: &[AuditEvent]) -> Vec<u8> {
        events
            .iter()
            .flat_map(|e| {
                let mut line = serde_json::to_vec(e).unwrap();
                line.push(b'\n');
                line
            })
            .collect()
    }

    async fn head(app: &Router) -> LogHead {
        let (status, body) = send(app, Method::GET, LOG_HEAD_PATH, Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn batch_is_acked_and_resend_is_all_duplicates() {
        let (_dir, app) = test_app().await;
        let events: Vec<_> = [AuditKind::Intent, AuditKind::Decision, AuditKind::Outcome]
            .into_iter()
            .map(|kind| sample_event(1, kind))
            .collect();
        let (status, body) = send(&app, Method::POST, EVENTS_PATH, ndjson(&events)).await;
        assert_eq!(status, StatusCode::OK);
        let ack: IngestAck = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            ack,
            IngestAck {
                appended: 3,
                duplicates: 0
            }
        );
        let first_head = head(&app).await;
        assert_eq!(first_head.size, 3);

        let (status, body) = send(&app, Method::POST, EVENTS_PATH, ndjson(&events)).await;
        assert_eq!(status, StatusCode::OK);
        let ack: IngestAck = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            ack,
            IngestAck {
                appended: 0,
                duplicates: 3
            }
        );
        assert_eq!(head(&app).await, first_head);
    }

    #[tokio::test]
    async fn bad_line_rejects_whole_batch_naming_the_line() {
        let (_dir, app) = test_app().await;
        let mut body = ndjson(&[sample_event(1, AuditKind::Intent)]);
        body.extend_from_slice(b"\n{\"eventId\": 5}\n");
        body.extend(ndjson(&[sample_event(2, AuditKind::Intent)]));
        let (status, answer) = send(&app, Method::POST, EVENTS_PATH, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let error: ErrorBody = serde_json::from_slice(&answer).unwrap();
        assert_eq!(error.error, "badLine");
        assert_eq!(error.line, Some(3));
        assert!(
            error.message.starts_with("line 3: invalid type"),
            "{}",
            error.message
        );
        assert_eq!(head(&app).await.size, 0);
    }

    #[tokio::test]
    async fn oversized_batch_is_413() {
        let (_dir, app) = test_app().await;
        let body = vec![b' '; MAX_BATCH_BYTES + 1];
        let (status, answer) = send(&app, Method::POST, EVENTS_PATH, body).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let error: ErrorBody = serde_json::from_slice(&answer).unwrap();
        assert_eq!(error.error, "batchTooLarge");
    }

    #[tokio::test]
    async fn trace_lookup_returns_events_in_order_with_chain_links() {
        let (_dir, app) = test_app().await;
        let intent = sample_event(1, AuditKind::Intent);
        let decision = sample_event(1, AuditKind::Decision);
        let unrelated = sample_event(2, AuditKind::Intent);
        let outcome = sample_event(1, AuditKind::Outcome);
        send(
            &app,
            Method::POST,
            EVENTS_PATH,
            ndjson(&[intent.clone(), unrelated, decision.clone()]),
        )
        .await;
        send(
            &app,
            Method::POST,
            EVENTS_PATH,
            ndjson(std::slice::from_ref(&outcome)),
        )
        .await;

        let uri = format!("{TRACES_PATH}/{}", intent.trace_id);
        let (status, body) = send(&app, Method::GET, &uri, Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        let trace: TraceResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(trace.trace_id, intent.trace_id);
        let seqs: Vec<u64> = trace.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 3, 4]);
        let events: Vec<AuditEvent> = trace.events.iter().map(|e| e.event.clone()).collect();
        assert_eq!(events, [intent, decision, outcome]);
        assert_eq!(trace.events[0].prev_hash, "0".repeat(64));
        assert_eq!(trace.events[2].hash, head(&app).await.head_hash);
    }

    #[tokio::test]
    async fn trace_lookup_errors() {
        let (_dir, app) = test_app().await;
        let uri = format!("{TRACES_PATH}/{}", "ab".repeat(16));
        let (status, body) = send(&app, Method::GET, &uri, Vec::new()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let error: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(error.error, "traceNotFound");

        let uri = format!("{TRACES_PATH}/{}", "AB".repeat(16));
        let (status, body) = send(&app, Method::GET, &uri, Vec::new()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let error: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(error.error, "invalidTraceId");
    }

    #[tokio::test]
    async fn proofs_over_http_verify_as_rfc_9162_says() {
        use behavry_core::merkle::{verify_consistency, verify_inclusion};
        let (_dir, app) = test_app().await;
        let events: Vec<AuditEvent> = (1..=7)
            .map(|t| sample_event(t, AuditKind::Intent))
            .collect();
        send(&app, Method::POST, EVENTS_PATH, ndjson(&events[..3])).await;
        let old = head(&app).await;
        send(&app, Method::POST, EVENTS_PATH, ndjson(&events[3..])).await;
        let new = head(&app).await;
        assert_eq!((old.size, new.size), (3, 7));
        let hash =
            |hex_text: &str| -> [u8; 32] { hex::decode(hex_text).unwrap().try_into().unwrap() };
        let hashes = |list: &[String]| list.iter().map(|h| hash(h)).collect::<Vec<_>>();

        let get = |uri: String| {
            let app = app.clone();
            async move { send(&app, Method::GET, &uri, Vec::new()).await }
        };
        for seq in 1..=7u64 {
            let (status, body) = get(format!("{INCLUSION_PROOF_PATH}?seq={seq}")).await;
            assert_eq!(status, StatusCode::OK);
            let proof: InclusionProof = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                (proof.size, proof.leaf_index, &proof.root_hash),
                (7, seq - 1, &new.root_hash)
            );
            assert!(verify_inclusion(
                &hash(&proof.leaf_hash),
                proof.leaf_index,
                proof.size,
                &hashes(&proof.proof),
                &hash(&new.root_hash)
            ));
        }
        let (status, body) = get(format!("{CONSISTENCY_PROOF_PATH}?from=3")).await;
        assert_eq!(status, StatusCode::OK);
        let proof: ConsistencyProof = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (&proof.from_root, &proof.to_root),
            (&old.root_hash, &new.root_hash)
        );
        assert!(verify_consistency(
            3,
            7,
            &hash(&old.root_hash),
            &hash(&new.root_hash),
            &hashes(&proof.proof)
        ));
        // No checkpoint is signed without a key.
        let (status, body) = get(CHECKPOINT_PATH.to_string()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let error: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(error.error, "noCheckpoint");
        // Bad and out-of-range queries get their errors.
        for (uri, status, code) in [
            (
                format!("{INCLUSION_PROOF_PATH}?seq=0"),
                StatusCode::BAD_REQUEST,
                "badQuery",
            ),
            (
                format!("{INCLUSION_PROOF_PATH}?seq=x"),
                StatusCode::BAD_REQUEST,
                "badQuery",
            ),
            (
                INCLUSION_PROOF_PATH.to_string(),
                StatusCode::BAD_REQUEST,
                "badQuery",
            ),
            (
                format!("{INCLUSION_PROOF_PATH}?seq=8"),
                StatusCode::BAD_REQUEST,
                "badQuery",
            ),
            (
                format!("{INCLUSION_PROOF_PATH}?seq=2&size=9"),
                StatusCode::NOT_FOUND,
                "beyondLog",
            ),
            (
                format!("{CONSISTENCY_PROOF_PATH}?from=4&to=3"),
                StatusCode::BAD_REQUEST,
                "badQuery",
            ),
            (
                format!("{CONSISTENCY_PROOF_PATH}?from=3&to=8"),
                StatusCode::NOT_FOUND,
                "beyondLog",
            ),
        ] {
            let (got, body) = get(uri.clone()).await;
            assert_eq!(got, status, "{uri}");
            let error: ErrorBody = serde_json::from_slice(&body).unwrap();
            assert_eq!(error.error, code, "{uri}");
        }
    }

    /// A call's three events: agent, server, tool, session and decision as given.
    fn call(n: u8, agent: &str, tool: &str, session: &str, allow: bool) -> Vec<AuditEvent> {
        [AuditKind::Intent, AuditKind::Decision, AuditKind::Outcome]
            .into_iter()
            .map(|kind| {
                let mut event = sample_event(n, kind);
                event.agent = Some(agent.to_owned());
                event.request.tool = Some(tool.to_owned());
                event.request.session_id = Some(session.to_owned());
                event.detail = match kind {
                    AuditKind::Decision => serde_json::json!({"allow": allow}),
                    _ => serde_json::Value::Null,
                };
                event
            })
            .collect()
    }

    async fn search(app: &Router, query: &str) -> SearchResponse {
        let (status, body) = send(
            app,
            Method::GET,
            &format!("{TRACES_PATH}?{query}"),
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    fn ids(found: &SearchResponse) -> Vec<String> {
        found
            .traces
            .iter()
            .map(|t| t.trace_id[30..].to_owned())
            .collect()
    }

    /// Every search row as (seq, kind, agent, target, session, decision) as text, then `then`.
    async fn search_rows(path: &std::path::Path, then: Option<&str>) -> Vec<String> {
        let mut conn =
            sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT json_array(seq, kind, agent, target, session_id, decision) \
             FROM audit_search ORDER BY seq",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if let Some(statement) = then {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
        rows
    }

    #[tokio::test]
    async fn traces_are_found_by_agent_tool_session_decision_and_time() {
        let (dir, app) = test_app().await;
        let mut events = Vec::new();
        events.extend(call(1, "agent-a", "read_file", "s1", true));
        events.extend(call(2, "agent-b", "delete_file", "s2", false));
        events.extend(call(3, "agent-a", "delete_file", "s1", false));
        events.extend(call(4, "agent-a", "read_file", "s3", true));
        // An outcome with no call decided before it (a GET stream's findings): searched itself.
        let mut stream = sample_event(5, AuditKind::Outcome);
        stream.agent = Some("agent-c".to_owned());
        events.push(stream);
        let (status, _) = send(&app, Method::POST, EVENTS_PATH, ndjson(&events)).await;
        assert_eq!(status, StatusCode::OK);

        assert_eq!(ids(&search(&app, "").await), ["05", "04", "03", "02", "01"]);
        assert_eq!(ids(&search(&app, "agent=agent-c").await), ["05"]);
        assert_eq!(
            ids(&search(&app, "agent=agent-a").await),
            ["04", "03", "01"]
        );
        assert_eq!(ids(&search(&app, "decision=deny").await), ["03", "02"]);
        assert_eq!(
            ids(&search(&app, "agent=agent-a&decision=deny").await),
            ["03"]
        );
        assert_eq!(
            ids(&search(&app, "tool=read_file&session=s1").await),
            ["01"]
        );
        assert_eq!(
            ids(&search(&app, "server=files&tool=delete_file").await),
            ["03", "02"]
        );
        assert!(search(&app, "agent=nobody").await.traces.is_empty());
        // sample_event(n) is at 1_760_000_000_000 + n ms.
        assert_eq!(
            ids(&search(&app, "since=1760000000002&until=1760000000004").await),
            ["03", "02"]
        );
        // What a found trace says of itself.
        let found = search(&app, "decision=deny&agent=agent-b").await;
        let trace = &found.traces[0];
        assert_eq!(trace.events, 3);
        assert_eq!(trace.decision.as_deref(), Some("deny"));
        assert_eq!(trace.tool.as_deref(), Some("delete_file"));
        assert_eq!(trace.session_id.as_deref(), Some("s2"));
        // Its first matching record is its decision; its first record, its intent.
        assert_eq!((trace.first_seq, trace.start_ms), (5, 1_760_000_000_002));

        // Pages.
        let first = search(&app, "limit=3").await;
        assert_eq!(ids(&first), ["05", "04", "03"]);
        let next = first.next.unwrap();
        let second = search(&app, &format!("limit=3&before={next}")).await;
        assert_eq!(ids(&second), ["02", "01"]);
        assert_eq!(second.next, None);

        for bad in [
            "decision=maybe",
            "limit=0",
            "limit=501",
            "since=soon",
            "color=red",
        ] {
            let (status, body) = send(
                &app,
                Method::GET,
                &format!("{TRACES_PATH}?{bad}"),
                Vec::new(),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            let error: ErrorBody = serde_json::from_slice(&body).unwrap();
            assert_eq!(error.error, "badQuery");
        }

        // A log from before search gets its rows from the bodies when the sink opens it, the
        // same rows the append path wrote.
        let path = dir.path().join("audit.db");
        let written = search_rows(&path, Some("DELETE FROM audit_search WHERE seq > 4")).await;
        let store = AuditStore::open(&path).await.unwrap();
        let filled = search_rows(&path, None).await;
        assert_eq!(filled, written);
        // One row per call, its decision, and the lone outcome.
        assert_eq!(filled.len(), 5);
        let app = super::app(AppState::new(store));
        assert_eq!(ids(&search(&app, "decision=deny").await), ["03", "02"]);
    }

    #[tokio::test]
    async fn a_trace_with_proofs_leads_each_event_to_the_newest_checkpoint() {
        use crate::checkpoint::{NoteSigner, NoteVerifier};
        let (dir, app) = test_app().await;
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        let events = call(7, "agent-a", "read_file", "s1", true);
        let (status, _) = send(&app, Method::POST, EVENTS_PATH, ndjson(&events[..2])).await;
        assert_eq!(status, StatusCode::OK);
        let signer = NoteSigner::new(
            "behavry.test/audit",
            ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        )
        .unwrap();
        store
            .sign_checkpoint(&signer, "behavry.test/audit")
            .await
            .unwrap()
            .unwrap();
        // The outcome comes after the checkpoint: no proof for it yet.
        let (status, _) = send(&app, Method::POST, EVENTS_PATH, ndjson(&events[2..])).await;
        assert_eq!(status, StatusCode::OK);
        let trace_id = &events[0].trace_id;
        let (status, body) = send(
            &app,
            Method::GET,
            &format!("{TRACES_PATH}/{trace_id}?proofs=true"),
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let trace: TraceResponse = serde_json::from_slice(&body).unwrap();
        let verifier = NoteVerifier::parse(&signer.verifier_key()).unwrap();
        let checkpoint = verifier
            .open_checkpoint(trace.checkpoint.as_deref().unwrap())
            .unwrap();
        assert_eq!(checkpoint.size, 2);
        for entry in &trace.events[..2] {
            let inclusion = entry.inclusion.as_ref().unwrap();
            let proof: Vec<merkle::Hash> = inclusion
                .proof
                .iter()
                .map(|h| hex::decode(h).unwrap().try_into().unwrap())
                .collect();
            // The leaf is recomputed from the event as served: its canonical bytes.
            let leaf = merkle::leaf_hash(&crate::chain::canonical_bytes(&entry.event).unwrap());
            assert!(merkle::verify_inclusion(
                &leaf,
                entry.seq - 1,
                inclusion.size,
                &proof,
                &checkpoint.root
            ));
        }
        assert_eq!(trace.events[2].inclusion, None);
        // Without proofs: nothing of them.
        let (_, body) = send(
            &app,
            Method::GET,
            &format!("{TRACES_PATH}/{trace_id}"),
            Vec::new(),
        )
        .await;
        let plain: TraceResponse = serde_json::from_slice(&body).unwrap();
        assert!(plain.checkpoint.is_none() && plain.events.iter().all(|e| e.inclusion.is_none()));
    }

    #[tokio::test]
    async fn exports_beyond_the_limit_are_503_not_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        let state = AppState::new(store);
        let _running = Arc::clone(&state.exports)
            .try_acquire_many_owned(MAX_EXPORTS as u32)
            .unwrap();
        let app = app(state);
        let (status, body) = send(&app, Method::GET, EXPORT_PATH, Vec::new()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let error: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(error.error, "exportBusy");
    }

    #[tokio::test]
    async fn empty_log_head_and_health() {
        let (_dir, app) = test_app().await;
        assert_eq!(
            head(&app).await,
            LogHead {
                size: 0,
                head_hash: "0".repeat(64),
                root_hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                    .into(),
            }
        );
        let (status, body) = send(&app, Method::GET, HEALTH_PATH, Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"ok");
    }

    #[tokio::test]
    async fn storage_failure_is_503_and_not_acked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = AuditStore::open(&path).await.unwrap();
        let app = app(AppState::new(store));
        // Take the table away under the running sink, as a broken disk or a wrong file would.
        let mut conn = sqlx::sqlite::SqliteConnection::connect(path.to_str().unwrap())
            .await
            .unwrap();
        sqlx::query("DROP TABLE audit_records")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();

        let body = ndjson(&[sample_event(1, AuditKind::Intent)]);
        let (status, answer) = send(&app, Method::POST, EVENTS_PATH, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let error: ErrorBody = serde_json::from_slice(&answer).unwrap();
        assert_eq!(error.error, "storeUnavailable");
        assert!(error.message.contains("no such table"), "{}", error.message);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_posts_get_gapless_seqs() {
        let (_dir, app) = test_app().await;
        let posts: Vec<_> = (0..4_u8)
            .map(|part| {
                let app = app.clone();
                let events: Vec<_> = (1..=10)
                    .map(|n| sample_event(part * 10 + n, AuditKind::Intent))
                    .collect();
                tokio::spawn(
                    async move { send(&app, Method::POST, EVENTS_PATH, ndjson(&events)).await },
                )
            })
            .collect();
        for post in posts {
            assert_eq!(post.await.unwrap().0, StatusCode::OK);
        }
        let store_head = head(&app).await;
        assert_eq!(store_head.size, 40);
        let mut seqs = Vec::new();
        for trace in 1..=40_u8 {
            let uri = format!("{TRACES_PATH}/{trace:032x}");
            let (_, body) = send(&app, Method::GET, &uri, Vec::new()).await;
            let found: TraceResponse = serde_json::from_slice(&body).unwrap();
            seqs.extend(found.events.iter().map(|e| e.seq));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
    }
}
