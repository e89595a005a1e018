//! A stand-in for the HashiCorp Vault KV secrets engine, version 2 (HTTP API), for tests.
//!
//! **This is not Vault.** No Vault (or OpenBao) server can be installed on the machines this
//! project is built and tested on, so `behavry-secrets`' Vault backend is tested against this
//! small server instead. It follows the documented KV v2 API
//! (<https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2>) closely enough for a client
//! to be tested against it, and no further:
//!
//! - every request needs the `X-Vault-Token` header with the configured token; otherwise
//!   `403 {"errors":["permission denied"]}`, as Vault answers;
//! - `POST`/`PUT /v1/<mount>/data/<path>` with `{"data": {...}, "options": {"cas": n}}` writes a
//!   new version (check-and-set honoured when given);
//! - `GET /v1/<mount>/data/<path>[?version=N]` reads the latest or a given version; unknown
//!   secret or version: `404 {"errors":[]}`; a deleted or destroyed version: `404` with the read
//!   envelope, `data.data: null` and `data.metadata.deletion_time` / `destroyed` set, as Vault does;
//! - `DELETE /v1/<mount>/data/<path>` soft-deletes the latest version;
//!   `POST /v1/<mount>/delete/<path>` and `/undelete/<path>` with `{"versions":[n,...]}`
//!   soft-delete and restore versions; `POST /v1/<mount>/destroy/<path>` destroys them.
//!
//! Any mount name is accepted (Vault would need the engine enabled first). Nothing is persisted,
//! there are no policies beyond the single token, no metadata endpoints, no leases, no
//! `max_versions`. Secrets are held in plain memory: test data only.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The header Vault reads the client token from.
pub const TOKEN_HEADER: &str = "x-vault-token";

/// What the stand-in answers when a request cannot be served. Turned into HTTP in exactly one
/// place, `IntoResponse` below, with the bodies Vault uses.
#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    /// Missing or wrong `X-Vault-Token`: Vault answers 403 `{"errors":["permission denied"]}`.
    #[error("permission denied")]
    PermissionDenied,
    /// No such secret, version or route: Vault answers 404 `{"errors":[]}`.
    #[error("not found")]
    NotFound,
    /// The version exists but was deleted or destroyed: Vault answers 404 with the read envelope,
    /// `data.data: null` and the version's metadata.
    #[error("version {} is deleted or destroyed", .0.version)]
    VersionGone(VersionMetadata),
    /// Malformed request (body, query, check-and-set mismatch): 400 `{"errors":[reason]}`.
    #[error("{0}")]
    BadRequest(String),
}

impl IntoResponse for StandinError {
    fn into_response(self) -> Response {
        match self {
            StandinError::PermissionDenied => (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"errors": ["permission denied"]})),
            )
                .into_response(),
            StandinError::NotFound => {
                (StatusCode::NOT_FOUND, axum::Json(json!({"errors": []}))).into_response()
            }
            StandinError::VersionGone(metadata) => (
                StatusCode::NOT_FOUND,
                axum::Json(envelope(
                    String::new(),
                    json!({"data": null, "metadata": metadata.to_json()}),
                )),
            )
                .into_response(),
            StandinError::BadRequest(reason) => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"errors": [reason]})),
            )
                .into_response(),
        }
    }
}

/// Per-version metadata, as in the `metadata` object of a KV v2 read.
#[derive(Debug, Clone)]
pub struct VersionMetadata {
    /// 1-based version number.
    pub version: u64,
    /// RFC 3339 time of the write.
    pub created_time: String,
    /// RFC 3339 time of the soft delete; empty when not deleted (Vault's convention).
    pub deletion_time: String,
    /// Destroyed versions have lost their data for good.
    pub destroyed: bool,
}

impl VersionMetadata {
    fn to_json(&self) -> Value {
        json!({
            "created_time": self.created_time,
            "custom_metadata": null,
            "deletion_time": self.deletion_time,
            "destroyed": self.destroyed,
            "version": self.version,
        })
    }

    fn is_readable(&self) -> bool {
        self.deletion_time.is_empty() && !self.destroyed
    }
}

#[derive(Debug)]
struct StoredVersion {
    metadata: VersionMetadata,
    /// `None` once destroyed.
    data: Option<Map<String, Value>>,
}

/// The shared state of one stand-in server: the accepted token and all secrets, by
/// (mount, path), each a list of versions (index 0 is version 1).
#[derive(Debug)]
pub struct StandinState {
    token: String,
    secrets: Mutex<HashMap<(String, String), Vec<StoredVersion>>>,
    request_counter: AtomicU64,
}

impl StandinState {
    /// A server with no secrets that accepts exactly `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            secrets: Mutex::new(HashMap::new()),
            request_counter: AtomicU64::new(0),
        }
    }

    fn with_secrets<T>(
        &self,
        f: impl FnOnce(&mut HashMap<(String, String), Vec<StoredVersion>>) -> T,
    ) -> T {
        // A poisoned lock only means another handler panicked mid-update; the map itself is
        // still a valid map, and a test server should keep answering.
        let mut guard = self.secrets.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

/// The stand-in's routes, ready to serve or to drive with `tower::ServiceExt::oneshot`.
pub fn app(state: Arc<StandinState>) -> Router {
    Router::new()
        .route(
            "/v1/{mount}/data/{*path}",
            get(read_secret)
                .post(write_secret)
                .put(write_secret)
                .delete(delete_latest),
        )
        .route("/v1/{mount}/delete/{*path}", post(delete_versions))
        .route("/v1/{mount}/undelete/{*path}", post(undelete_versions))
        .route("/v1/{mount}/destroy/{*path}", post(destroy_versions))
        .fallback(|| async { StandinError::NotFound })
        // Vault checks the token before routing: a bad token gets 403 even on unknown paths.
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<StandinState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn require_token(
    State(state): State<Arc<StandinState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|value| value.to_str().ok());
    if presented != Some(state.token.as_str()) {
        return StandinError::PermissionDenied.into_response();
    }
    next.run(request).await
}

/// The envelope Vault wraps every logical response in.
fn envelope(request_id: String, data: Value) -> Value {
    json!({
        "request_id": request_id,
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
        "mount_type": "kv",
    })
}

fn envelope_with_id(state: &StandinState, data: Value) -> Value {
    let id = state.request_counter.fetch_add(1, Ordering::Relaxed);
    envelope(format!("vault-standin-{id}"), data)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn read_secret(
    State(state): State<Arc<StandinState>>,
    Path((mount, path)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<axum::Json<Value>, StandinError> {
    // `version=0` or no version means the latest, as in Vault.
    let requested = match query.get("version") {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| StandinError::BadRequest(format!("invalid version {text:?}")))?,
    };
    state.with_secrets(|secrets| {
        let versions = secrets.get(&(mount, path)).ok_or(StandinError::NotFound)?;
        let number = if requested == 0 {
            u64::try_from(versions.len()).map_err(|_| StandinError::NotFound)?
        } else {
            requested
        };
        let stored = usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|index| versions.get(index))
            .ok_or(StandinError::NotFound)?;
        match (&stored.data, stored.metadata.is_readable()) {
            (Some(data), true) => Ok(axum::Json(envelope_with_id(
                &state,
                json!({"data": data, "metadata": stored.metadata.to_json()}),
            ))),
            _ => Err(StandinError::VersionGone(stored.metadata.clone())),
        }
    })
}

#[derive(Debug, Deserialize)]
struct WriteBody {
    data: Option<Map<String, Value>>,
    #[serde(default)]
    options: WriteOptions,
}

#[derive(Debug, Default, Deserialize)]
struct WriteOptions {
    cas: Option<u64>,
}

async fn write_secret(
    State(state): State<Arc<StandinState>>,
    Path((mount, path)): Path<(String, String)>,
    body: Bytes,
) -> Result<axum::Json<Value>, StandinError> {
    let body: WriteBody = serde_json::from_slice(&body)
        .map_err(|err| StandinError::BadRequest(format!("failed to parse JSON input: {err}")))?;
    let data = body
        .data
        .ok_or_else(|| StandinError::BadRequest("no data provided".to_owned()))?;
    state.with_secrets(|secrets| {
        let versions = match secrets.entry((mount, path)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Vec::new()),
        };
        let current = u64::try_from(versions.len()).unwrap_or(u64::MAX);
        if let Some(cas) = body.options.cas
            && cas != current
        {
            return Err(StandinError::BadRequest(
                "check-and-set parameter did not match the current version".to_owned(),
            ));
        }
        let metadata = VersionMetadata {
            version: current.saturating_add(1),
            created_time: now_rfc3339(),
            deletion_time: String::new(),
            destroyed: false,
        };
        let answer = json!({
            "created_time": metadata.created_time,
            "custom_metadata": null,
            "deletion_time": "",
            "destroyed": false,
            "version": metadata.version,
        });
        versions.push(StoredVersion {
            metadata,
            data: Some(data),
        });
        Ok(axum::Json(envelope_with_id(&state, answer)))
    })
}

#[derive(Debug, Deserialize)]
struct VersionsBody {
    #[serde(default)]
    versions: Vec<u64>,
}

fn parse_versions(body: &Bytes) -> Result<Vec<u64>, StandinError> {
    let body: VersionsBody = serde_json::from_slice(body)
        .map_err(|err| StandinError::BadRequest(format!("failed to parse JSON input: {err}")))?;
    if body.versions.is_empty() {
        return Err(StandinError::BadRequest(
            "no version number provided".to_owned(),
        ));
    }
    Ok(body.versions)
}

/// Applies `change` to each named version that exists; unknown versions are skipped, as Vault
/// does. Answers 204 No Content like Vault.
fn change_versions(
    state: &StandinState,
    key: (String, String),
    numbers: &[u64],
    change: impl Fn(&mut StoredVersion),
) -> StatusCode {
    state.with_secrets(|secrets| {
        if let Some(versions) = secrets.get_mut(&key) {
            for number in numbers {
                let slot = usize::try_from(*number)
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|index| versions.get_mut(index));
                if let Some(stored) = slot {
                    change(stored);
                }
            }
        }
    });
    StatusCode::NO_CONTENT
}

fn soft_delete(stored: &mut StoredVersion) {
    if stored.metadata.deletion_time.is_empty() {
        stored.metadata.deletion_time = now_rfc3339();
    }
}

async fn delete_latest(
    State(state): State<Arc<StandinState>>,
    Path((mount, path)): Path<(String, String)>,
) -> StatusCode {
    let key = (mount, path);
    let latest = state.with_secrets(|secrets| {
        secrets
            .get(&key)
            .map(|versions| u64::try_from(versions.len()).unwrap_or(u64::MAX))
    });
    match latest {
        Some(latest) => change_versions(&state, key, &[latest], soft_delete),
        None => StatusCode::NO_CONTENT,
    }
}

async fn delete_versions(
    State(state): State<Arc<StandinState>>,
    Path((mount, path)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, StandinError> {
    let numbers = parse_versions(&body)?;
    Ok(change_versions(
        &state,
        (mount, path),
        &numbers,
        soft_delete,
    ))
}

async fn undelete_versions(
    State(state): State<Arc<StandinState>>,
    Path((mount, path)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, StandinError> {
    let numbers = parse_versions(&body)?;
    Ok(change_versions(&state, (mount, path), &numbers, |stored| {
        stored.metadata.deletion_time.clear();
    }))
}

async fn destroy_versions(
    State(state): State<Arc<StandinState>>,
    Path((mount, path)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, StandinError> {
    let numbers = parse_versions(&body)?;
    Ok(change_versions(&state, (mount, path), &numbers, |stored| {
        stored.metadata.destroyed = true;
        stored.data = None;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const TOKEN: &str = "standin-test-token";

    async fn call(
        router: &Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut builder = axum::http::Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header(TOKEN_HEADER, token);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let response = router
            .clone()
            .oneshot(builder.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, json)
    }

    fn router() -> Router {
        app(Arc::new(StandinState::new(TOKEN)))
    }

    #[tokio::test]
    async fn requests_without_the_right_token_are_refused_like_vault() {
        let router = router();
        for token in [None, Some("wrong")] {
            let (status, body) = call(&router, "GET", "/v1/kv/data/a", token, None).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(body, json!({"errors": ["permission denied"]}));
        }
        // Even on a path with no handler: the token is checked first.
        let (status, _) = call(&router, "GET", "/v1/sys/nothing", None, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn writes_create_versions_and_reads_return_latest_or_requested() {
        let router = router();
        for (n, value) in ["one", "two"].iter().enumerate() {
            let (status, body) = call(
                &router,
                "POST",
                "/v1/kv/data/upstream/github",
                Some(TOKEN),
                Some(json!({"data": {"token": value}})),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["data"]["version"], json!(n + 1));
        }
        let (status, body) = call(
            &router,
            "GET",
            "/v1/kv/data/upstream/github",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"]["data"], json!({"token": "two"}));
        assert_eq!(body["data"]["metadata"]["version"], json!(2));
        assert_eq!(body["data"]["metadata"]["deletion_time"], json!(""));

        let (_, body) = call(
            &router,
            "GET",
            "/v1/kv/data/upstream/github?version=1",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(body["data"]["data"], json!({"token": "one"}));

        let (status, body) = call(
            &router,
            "GET",
            "/v1/kv/data/upstream/github?version=3",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({"errors": []}));
    }

    #[tokio::test]
    async fn check_and_set_mismatch_is_refused() {
        let router = router();
        let (status, body) = call(
            &router,
            "PUT",
            "/v1/kv/data/x",
            Some(TOKEN),
            Some(json!({"data": {"k": "v"}, "options": {"cas": 1}})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["errors"][0]
                .as_str()
                .unwrap()
                .contains("check-and-set")
        );
    }

    #[tokio::test]
    async fn deleted_and_destroyed_versions_read_as_404_with_metadata() {
        let router = router();
        for value in ["one", "two", "three"] {
            call(
                &router,
                "POST",
                "/v1/kv/data/s",
                Some(TOKEN),
                Some(json!({"data": {"k": value}})),
            )
            .await;
        }
        let (status, _) = call(
            &router,
            "POST",
            "/v1/kv/delete/s",
            Some(TOKEN),
            Some(json!({"versions": [1]})),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) =
            call(&router, "GET", "/v1/kv/data/s?version=1", Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["data"]["data"], Value::Null);
        assert_ne!(body["data"]["metadata"]["deletion_time"], json!(""));

        call(
            &router,
            "POST",
            "/v1/kv/destroy/s",
            Some(TOKEN),
            Some(json!({"versions": [2]})),
        )
        .await;
        let (status, body) =
            call(&router, "GET", "/v1/kv/data/s?version=2", Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["data"]["metadata"]["destroyed"], json!(true));

        // Undelete restores version 1; DELETE on data/ soft-deletes the latest (3).
        call(
            &router,
            "POST",
            "/v1/kv/undelete/s",
            Some(TOKEN),
            Some(json!({"versions": [1]})),
        )
        .await;
        let (status, _) = call(&router, "GET", "/v1/kv/data/s?version=1", Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::OK);
        call(&router, "DELETE", "/v1/kv/data/s", Some(TOKEN), None).await;
        let (status, _) = call(&router, "GET", "/v1/kv/data/s", Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
