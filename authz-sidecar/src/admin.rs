//! The admin API: enroll, list, inspect, disable, enable and delete agents, and manage their
//! public keys. `behavry agent ...` is its client.
//!
//! It has its own credential, separate from agent tokens: a bearer token (RFC 6750 §2.1) from
//! `admin_token_file` or `BEHAVRY_AUTHZ_ADMIN_TOKEN`. Without one configured, every admin route
//! answers 404 `admin_disabled`. Every change is written to the registry and then the in-memory
//! snapshot is rebuilt, so the next decision and the next token request see it.
//!
//! | route | what |
//! |---|---|
//! | `POST /admin/v1/agents` | enroll (body: [`EnrollRequest`]) → 201 agent |
//! | `GET /admin/v1/agents` | `{"agents": [...]}` |
//! | `GET /admin/v1/agents/{id}` | one agent |
//! | `POST /admin/v1/agents/{id}/disable`, `.../enable` | the agent after the change |
//! | `DELETE /admin/v1/agents/{id}` | 204 |
//! | `POST /admin/v1/agents/{id}/keys` | add a public JWK → 201 agent |
//! | `DELETE /admin/v1/agents/{id}/keys/{kid}` | remove a key → the agent |
//! | `POST /admin/v1/revocations` | revoke a token or an agent ([`RevocationRequest`]) → 201 entries |
//! | `GET /admin/v1/revocations` | every revocation in force, with reasons and expiries |
//! | `/admin/v1/pins...` | pinned tool definitions and held ones ([`crate::pins`]) |
//!
//! Disabling, enabling and deleting an agent also change the revocation list
//! ([`crate::revocation`]); the filter picks the change up at its next poll.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::bearer;
use crate::client_key::{ClientKey, KeyFormatError};
use crate::config::{AdminCredential, AgentEnrollment, InvalidField, ServerGrant};
use crate::directory::DirectoryError;
use crate::http::AppState;
use crate::registry::{AgentRecord, RegistryError, RevocationEntries, unix_now};
use crate::revocation::{InvalidRevocation, RevocationRequest};

/// Prefix of every admin route.
pub const ADMIN_AGENTS_PATH: &str = "/admin/v1/agents";
/// The revocation admin route.
pub const ADMIN_REVOCATIONS_PATH: &str = "/admin/v1/revocations";
/// Largest accepted admin request body.
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;
/// RFC 6750 §3 `realm` of the admin credential challenge.
const ADMIN_REALM: &str = "behavry-admin";

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No admin credential is configured.
    #[error(
        "the admin API is disabled: configure `admin_token_file` or BEHAVRY_AUTHZ_ADMIN_TOKEN on the authz-sidecar"
    )]
    Disabled,
    /// No `Authorization: Bearer` credential was sent.
    #[error("admin credential required: send Authorization: Bearer <admin token>")]
    MissingCredential,
    /// The credential does not match.
    #[error("the admin credential is not valid")]
    WrongCredential,
    /// The body could not be read.
    #[error("cannot read request body: {0}")]
    Body(#[from] BytesRejection),
    /// The body is not valid JSON of the expected shape.
    #[error("invalid request body: {0}")]
    BadJson(#[from] serde_json::Error),
    /// A field of the enrollment is not allowed.
    #[error(transparent)]
    Field(#[from] InvalidField),
    /// A revocation request is not acceptable.
    #[error(transparent)]
    Revocation(#[from] InvalidRevocation),
    /// A public key is not acceptable.
    #[error("invalid public key: {0}")]
    Key(#[from] KeyFormatError),
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The change was stored but the snapshot could not be rebuilt (the previous one stays).
    #[error("the change was stored but could not be applied: {0}")]
    Apply(#[from] DirectoryError),
    #[error("tool `{tool}` on server `{server}` has neither a pin nor a held definition")]
    NoPin { server: String, tool: String },
    #[error("no held definition {hash} of tool `{tool}` on server `{server}` to decide on")]
    NoHeldDefinition {
        server: String,
        tool: String,
        hash: String,
    },
}

impl IntoResponse for AdminError {
    // The one mapping from admin errors to HTTP statuses.
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AdminError::Disabled => (StatusCode::NOT_FOUND, "admin_disabled"),
            AdminError::MissingCredential => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AdminError::WrongCredential => (StatusCode::UNAUTHORIZED, "invalid_token"),
            AdminError::Body(rejection) => (rejection.status(), "unreadable_body"),
            AdminError::BadJson(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            AdminError::Field(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
            AdminError::Key(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
            AdminError::Revocation(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
            AdminError::Registry(RegistryError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "agent_not_found")
            }
            AdminError::Registry(RegistryError::KeyNotFound { .. }) => {
                (StatusCode::NOT_FOUND, "key_not_found")
            }
            AdminError::Registry(RegistryError::AlreadyEnrolled(_)) => {
                (StatusCode::CONFLICT, "agent_exists")
            }
            AdminError::Registry(RegistryError::KeyExists { .. }) => {
                (StatusCode::CONFLICT, "key_exists")
            }
            AdminError::NoPin { .. } | AdminError::NoHeldDefinition { .. } => {
                (StatusCode::NOT_FOUND, "pin_not_found")
            }
            AdminError::Registry(_) | AdminError::Apply(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "registry_error")
            }
        };
        let refusal = match &self {
            AdminError::MissingCredential => Some((bearer::Refusal::Missing, ADMIN_REALM)),
            AdminError::WrongCredential => Some((bearer::Refusal::Wrong, ADMIN_REALM)),
            _ => None,
        };
        bearer::error_response(status, code, self.to_string(), "admin request", refusal)
    }
}

/// Body of `POST /admin/v1/agents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnrollRequest {
    /// Agent id.
    pub id: String,
    /// Owner. Default: none.
    #[serde(default)]
    pub owner: Option<String>,
    /// Roles. Default: none.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes. Default: `["mcp"]`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Grants per MCP server. Default: none.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerGrant>,
    /// Agents that may act for this one (RFC 8693 §4.4). Default: none.
    #[serde(default)]
    pub may_act: Vec<String>,
    /// Kubernetes service accounts mapped to this agent. Default: none.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// MCP clients the agent is enrolled to use. Default: none.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Public JWKs. Default: none (add them later).
    #[serde(default)]
    pub keys: Vec<serde_json::Value>,
    /// Enabled at once. Default: true.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// Body of `GET /admin/v1/agents`.
#[derive(Debug, Serialize)]
pub struct AgentList {
    /// Every agent, by id.
    pub agents: Vec<AgentRecord>,
}

/// The admin routes, behind the credential check.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route(ADMIN_AGENTS_PATH, post(enroll).get(list))
        .route(
            &format!("{ADMIN_AGENTS_PATH}/{{id}}"),
            get(show).delete(remove),
        )
        .route(
            &format!("{ADMIN_AGENTS_PATH}/{{id}}/disable"),
            post(disable),
        )
        .route(&format!("{ADMIN_AGENTS_PATH}/{{id}}/enable"), post(enable))
        .route(&format!("{ADMIN_AGENTS_PATH}/{{id}}/keys"), post(add_key))
        .route(
            &format!("{ADMIN_AGENTS_PATH}/{{id}}/keys/{{kid}}"),
            delete(remove_key),
        )
        .route(ADMIN_REVOCATIONS_PATH, post(revoke).get(revocations))
        .merge(crate::pins::admin_routes())
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(state, require_admin))
}

/// The credential check in front of every admin route.
async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check_credential(state.admin_credential.as_deref(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

fn check_credential(
    expected: Option<&AdminCredential>,
    headers: &axum::http::HeaderMap,
) -> Result<(), AdminError> {
    bearer::check(expected, headers).map_err(AdminError::from)
}

impl From<bearer::Refusal> for AdminError {
    fn from(refusal: bearer::Refusal) -> AdminError {
        match refusal {
            bearer::Refusal::Disabled => AdminError::Disabled,
            bearer::Refusal::Missing => AdminError::MissingCredential,
            bearer::Refusal::Wrong => AdminError::WrongCredential,
        }
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, AdminError> {
    Ok(serde_json::from_slice(&body?)?)
}

/// Rebuild the snapshots after a change, so it applies to the next request and the filter's
/// next revocation poll.
async fn apply(state: &AppState) -> Result<(), AdminError> {
    state.directory.refresh().await?;
    state
        .revocations
        .reload()
        .await
        .map_err(|err| AdminError::Apply(err.into()))?;
    Ok(())
}

async fn enroll(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<AgentRecord>), AdminError> {
    let request: EnrollRequest = parse_body(body)?;
    let enrollment = AgentEnrollment {
        owner: request.owner,
        roles: request.roles,
        scopes: request
            .scopes
            .unwrap_or_else(|| AgentEnrollment::new("").scopes),
        servers: request.servers,
        may_act: request.may_act,
        service_accounts: request.service_accounts,
        clients: request.clients,
        ..AgentEnrollment::new(request.id)
    };
    enrollment.validate("")?;
    let keys = request
        .keys
        .into_iter()
        .map(ClientKey::from_value)
        .collect::<Result<Vec<_>, _>>()?;
    let record = state
        .directory
        .registry()
        .enroll(&enrollment, &keys, request.enabled)
        .await?;
    apply(&state).await?;
    tracing::info!(agent = %record.enrollment.id, keys = record.keys.len(), enabled = record.enabled, "enrolled agent");
    Ok((StatusCode::CREATED, Json(record)))
}

async fn list(State(state): State<AppState>) -> Result<Json<AgentList>, AdminError> {
    let agents = state.directory.registry().list().await?;
    Ok(Json(AgentList { agents }))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentRecord>, AdminError> {
    state
        .directory
        .registry()
        .get(&id)
        .await?
        .map(Json)
        .ok_or(AdminError::Registry(RegistryError::NotFound(id)))
}

async fn set_enabled(
    state: &AppState,
    id: &str,
    enabled: bool,
) -> Result<Json<AgentRecord>, AdminError> {
    let record = state.directory.registry().set_enabled(id, enabled).await?;
    apply(state).await?;
    tracing::info!(agent = %id, enabled, "changed agent state");
    Ok(Json(record))
}

async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentRecord>, AdminError> {
    set_enabled(&state, &id, false).await
}

async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentRecord>, AdminError> {
    set_enabled(&state, &id, true).await
}

async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    state.directory.registry().delete(&id).await?;
    apply(&state).await?;
    tracing::info!(agent = %id, "deleted agent");
    Ok(StatusCode::NO_CONTENT)
}

async fn add_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<AgentRecord>), AdminError> {
    let jwk: serde_json::Value = parse_body(body)?;
    let key = ClientKey::from_value(jwk)?;
    let record = state.directory.registry().add_key(&id, &key).await?;
    apply(&state).await?;
    tracing::info!(agent = %id, kid = key.kid(), "added public key");
    Ok((StatusCode::CREATED, Json(record)))
}

async fn remove_key(
    State(state): State<AppState>,
    Path((id, kid)): Path<(String, String)>,
) -> Result<Json<AgentRecord>, AdminError> {
    let record = state.directory.registry().remove_key(&id, &kid).await?;
    apply(&state).await?;
    tracing::info!(agent = %id, kid = %kid, "removed public key");
    Ok(Json(record))
}

async fn revoke(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RevocationEntries>), AdminError> {
    let request: RevocationRequest = parse_body(body)?;
    let revocation = request.validate(unix_now())?;
    state.revocations.revoke(&revocation).await?;
    tracing::info!(
        ?revocation,
        version = state.revocations.list().version,
        "revoked"
    );
    Ok((
        StatusCode::CREATED,
        Json(state.revocations.entries().await?),
    ))
}

async fn revocations(State(state): State<AppState>) -> Result<Json<RevocationEntries>, AdminError> {
    Ok(Json(state.revocations.entries().await?))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;

    use axum::http::header;

    use super::*;
    use crate::client_key::tests::TestClientKey;
    use crate::http::tests::{ADMIN_TOKEN, call, test_state};

    fn admin_request(method: &str, path: &str, body: Option<serde_json::Value>) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap()
    }

    async fn decide(state: &AppState, agent: &str) -> bool {
        let body = serde_json::json!({
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
            "agent": {"id": agent},
            "request": {"server": "everything", "method": "tools/call", "tool": "echo"},
        });
        let request = Request::post("/v1/decide")
            .body(Body::from(body.to_string()))
            .unwrap();
        call(state, request).await.2["allow"].as_bool().unwrap()
    }

    #[tokio::test]
    async fn without_a_credential_configured_the_admin_api_is_404() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), false).await;
        let (status, _, json) = call(&state, admin_request("GET", ADMIN_AGENTS_PATH, None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "admin_disabled");
    }

    #[tokio::test]
    async fn missing_or_wrong_credentials_get_401_with_a_bearer_challenge() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;
        let cases = [
            (None, "Bearer realm=\"behavry-admin\""),
            (
                Some("Basic YTpi".to_owned()),
                "Bearer realm=\"behavry-admin\"",
            ),
            (
                Some(format!("Bearer {ADMIN_TOKEN}x")),
                "Bearer realm=\"behavry-admin\", error=\"invalid_token\"",
            ),
            (
                Some("Bearer short".to_owned()),
                "Bearer realm=\"behavry-admin\", error=\"invalid_token\"",
            ),
        ];
        for (authorization, challenge) in cases {
            let mut builder = Request::post(ADMIN_AGENTS_PATH);
            if let Some(value) = &authorization {
                builder = builder.header(header::AUTHORIZATION, value);
            }
            let body = serde_json::json!({"id": "sneaky"}).to_string();
            let (status, headers, json) =
                call(&state, builder.body(Body::from(body)).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
            assert_eq!(
                headers[header::WWW_AUTHENTICATE],
                challenge,
                "{authorization:?}"
            );
            assert!(json["message"].is_string());
        }
        assert!(
            state
                .directory
                .registry()
                .get("sneaky")
                .await
                .unwrap()
                .is_none()
        );
        // The scheme is case-insensitive.
        let request = Request::get(ADMIN_AGENTS_PATH)
            .header(header::AUTHORIZATION, format!("bearer {ADMIN_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&state, request).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn enroll_list_disable_enable_keys_delete() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;
        let key = TestClientKey::ec();
        let body = serde_json::json!({
            "id": "agent-x", "owner": "team-x", "roles": ["reader"],
            "servers": {"everything": {"tools": ["echo"]}},
            "mayAct": ["orchestrator"],
            "serviceAccounts": ["system:serviceaccount:agents:agent-x"],
            "clients": ["claude-code"],
            "keys": [key.public_jwk("k1")],
        });
        let (status, _, json) = call(
            &state,
            admin_request("POST", ADMIN_AGENTS_PATH, Some(body.clone())),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        assert_eq!(json["id"], "agent-x");
        assert_eq!(json["owner"], "team-x");
        assert_eq!(json["scopes"], serde_json::json!(["mcp"]));
        assert_eq!(json["enabled"], true);
        assert_eq!(json["keys"][0]["kid"], "k1");
        assert_eq!(json["keys"][0]["alg"], "ES256");
        assert!(json["createdAt"].as_i64().unwrap() > 0);
        assert_eq!(json["mayAct"], serde_json::json!(["orchestrator"]));
        assert_eq!(
            json["serviceAccounts"],
            serde_json::json!(["system:serviceaccount:agents:agent-x"])
        );
        assert_eq!(json["clients"], serde_json::json!(["claude-code"]));
        // The snapshot follows at once: decisions allow the new agent's grant.
        assert!(decide(&state, "agent-x").await);

        let (status, _, json) =
            call(&state, admin_request("POST", ADMIN_AGENTS_PATH, Some(body))).await;
        assert_eq!(
            (status, json["error"].as_str()),
            (StatusCode::CONFLICT, Some("agent_exists"))
        );

        let (status, _, json) = call(&state, admin_request("GET", ADMIN_AGENTS_PATH, None)).await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<_> = json["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["agent-x", "demo-agent"]);

        let path = format!("{ADMIN_AGENTS_PATH}/agent-x");
        let (status, _, json) = call(
            &state,
            admin_request("POST", &format!("{path}/disable"), None),
        )
        .await;
        assert_eq!(
            (status, &json["enabled"]),
            (StatusCode::OK, &serde_json::json!(false))
        );
        assert!(!decide(&state, "agent-x").await);
        let (status, _, json) = call(
            &state,
            admin_request("POST", &format!("{path}/enable"), None),
        )
        .await;
        assert_eq!(
            (status, &json["enabled"]),
            (StatusCode::OK, &serde_json::json!(true))
        );
        assert!(decide(&state, "agent-x").await);

        let second = TestClientKey::rsa().public_jwk("k2");
        let (status, _, json) = call(
            &state,
            admin_request("POST", &format!("{path}/keys"), Some(second.clone())),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        assert_eq!(json["keys"].as_array().unwrap().len(), 2);
        let (status, _, json) = call(
            &state,
            admin_request("POST", &format!("{path}/keys"), Some(second)),
        )
        .await;
        assert_eq!(
            (status, json["error"].as_str()),
            (StatusCode::CONFLICT, Some("key_exists"))
        );
        let (status, _, json) = call(
            &state,
            admin_request("DELETE", &format!("{path}/keys/k1"), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["keys"][0]["kid"], "k2");
        let (status, _, json) = call(
            &state,
            admin_request("DELETE", &format!("{path}/keys/k1"), None),
        )
        .await;
        assert_eq!(
            (status, json["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("key_not_found"))
        );

        let (status, _, _) = call(&state, admin_request("DELETE", &path, None)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(!decide(&state, "agent-x").await);
        let (status, _, json) = call(&state, admin_request("GET", &path, None)).await;
        assert_eq!(
            (status, json["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("agent_not_found"))
        );
        let (status, _, _) = call(
            &state,
            admin_request("POST", &format!("{path}/disable"), None),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn bad_enrollments_are_400_with_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;
        let mut private = TestClientKey::ec().public_jwk("k");
        private["d"] = "AAAA".into();
        let cases = [
            (
                serde_json::json!({"id": "has space"}),
                "invalid_field",
                "id",
            ),
            (
                serde_json::json!({"id": "a", "roles": [""]}),
                "invalid_field",
                "roles[0]",
            ),
            (
                serde_json::json!({"id": "a", "scopes": ["a b"]}),
                "invalid_field",
                "scopes[0]",
            ),
            (
                serde_json::json!({"id": "a", "servers": {"s": {"tool": ["x"]}}}),
                "invalid_request",
                "tool",
            ),
            (
                serde_json::json!({"id": "a", "mayAct": ["a"]}),
                "invalid_field",
                "may_act[0]",
            ),
            (
                serde_json::json!({"id": "a", "mayAct": ["has space"]}),
                "invalid_field",
                "may_act[0]",
            ),
            (
                serde_json::json!({"id": "a", "serviceAccounts": ["default:sa"]}),
                "invalid_field",
                "service_accounts[0]",
            ),
            (
                serde_json::json!({"id": "a", "clients": [""]}),
                "invalid_field",
                "clients[0]",
            ),
            (
                serde_json::json!({"id": "a", "extra": 1}),
                "invalid_request",
                "extra",
            ),
            (
                serde_json::json!({"id": "a", "keys": [private]}),
                "invalid_key",
                "private key",
            ),
            (
                serde_json::json!({"id": "a", "keys": [{"kty": "oct", "k": "AAAA"}]}),
                "invalid_key",
                "private key",
            ),
        ];
        for (body, code, needle) in cases {
            let (status, _, json) = call(
                &state,
                admin_request("POST", ADMIN_AGENTS_PATH, Some(body.clone())),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(json["error"], code, "{body}");
            assert!(
                json["message"].as_str().unwrap().contains(needle),
                "{body}: {json}"
            );
        }
        assert!(state.directory.registry().get("a").await.unwrap().is_none());
    }

    async fn polled(state: &AppState) -> serde_json::Value {
        let request = Request::get("/v1/revocations").body(Body::empty()).unwrap();
        let (status, headers, json) = call(state, request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        json
    }

    #[tokio::test]
    async fn revocations_need_the_admin_credential() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;
        let body = serde_json::json!({"tokenId": "stolen"}).to_string();
        for authorization in [None, Some(format!("Bearer {ADMIN_TOKEN}x"))] {
            let mut builder = Request::post(ADMIN_REVOCATIONS_PATH);
            if let Some(value) = &authorization {
                builder = builder.header(header::AUTHORIZATION, value);
            }
            let (status, headers, _) =
                call(&state, builder.body(Body::from(body.clone())).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
            assert!(headers.contains_key(header::WWW_AUTHENTICATE));
            let (status, _, _) = call(
                &state,
                Request::get(ADMIN_REVOCATIONS_PATH)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        // Nothing was revoked, and the poll endpoint itself needs no credential.
        let list = polled(&state).await;
        assert_eq!(list["version"], 1);
        assert_eq!(list["tokenIds"], serde_json::json!([]));
        let disabled = test_state(tempfile::tempdir().unwrap().path(), false).await;
        let (status, _, json) = call(
            &disabled,
            admin_request("GET", ADMIN_REVOCATIONS_PATH, None),
        )
        .await;
        assert_eq!(
            (status, &json["error"]),
            (StatusCode::NOT_FOUND, &serde_json::json!("admin_disabled"))
        );
    }

    #[tokio::test]
    async fn revoked_tokens_and_agent_changes_reach_the_polled_list() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;
        let start = polled(&state).await["version"].as_u64().unwrap();
        let expires_at = unix_now() + 300;
        let (status, _, json) = call(
            &state,
            admin_request(
                "POST",
                ADMIN_REVOCATIONS_PATH,
                Some(serde_json::json!({"tokenId": "jti-1", "expiresAt": expires_at})),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        assert_eq!(json["tokens"][0]["tokenId"], "jti-1");
        assert_eq!(json["tokens"][0]["expiresAt"], expires_at);
        let list = polled(&state).await;
        assert_eq!(list["tokenIds"], serde_json::json!(["jti-1"]));
        let after_revoke = list["version"].as_u64().unwrap();
        assert!(after_revoke > start);

        let path = format!("{ADMIN_AGENTS_PATH}/demo-agent");
        call(
            &state,
            admin_request("POST", &format!("{path}/disable"), None),
        )
        .await;
        let list = polled(&state).await;
        assert_eq!(list["agents"], serde_json::json!(["demo-agent"]));
        let after_disable = list["version"].as_u64().unwrap();
        assert!(after_disable > after_revoke);
        let (_, _, json) = call(&state, admin_request("GET", ADMIN_REVOCATIONS_PATH, None)).await;
        assert_eq!(json["agents"][0]["reason"], "disabled");

        call(
            &state,
            admin_request("POST", &format!("{path}/enable"), None),
        )
        .await;
        let list = polled(&state).await;
        assert_eq!(list["agents"], serde_json::json!([]));
        assert!(list["version"].as_u64().unwrap() > after_disable);

        call(&state, admin_request("DELETE", &path, None)).await;
        let (_, _, json) = call(&state, admin_request("GET", ADMIN_REVOCATIONS_PATH, None)).await;
        assert_eq!(json["agents"][0]["agent"], "demo-agent");
        assert_eq!(json["agents"][0]["reason"], "deleted");
        assert_eq!(
            polled(&state).await["agents"],
            serde_json::json!(["demo-agent"])
        );
    }

    #[tokio::test]
    async fn bad_revocations_are_400_with_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;
        let now = unix_now();
        let cases = [
            (serde_json::json!({}), "invalid_field", "tokenId"),
            (
                serde_json::json!({"tokenId": "a", "agent": "b"}),
                "invalid_field",
                "exactly one",
            ),
            (
                serde_json::json!({"tokenId": ""}),
                "invalid_field",
                "tokenId",
            ),
            (
                serde_json::json!({"tokenId": "a", "expiresAt": now - 3600}),
                "invalid_field",
                "expiresAt",
            ),
            (
                serde_json::json!({"agent": "a", "expiresAt": now + 86_400}),
                "invalid_field",
                "expiresAt",
            ),
            (
                serde_json::json!({"tokenId": "a", "reason": "x"}),
                "invalid_request",
                "reason",
            ),
        ];
        for (body, code, needle) in cases {
            let (status, _, json) = call(
                &state,
                admin_request("POST", ADMIN_REVOCATIONS_PATH, Some(body.clone())),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(json["error"], code, "{body}");
            assert!(
                json["message"].as_str().unwrap().contains(needle),
                "{body}: {json}"
            );
        }
        assert_eq!(polled(&state).await["version"], 1);
    }
}
