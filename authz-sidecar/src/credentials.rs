//! `POST /v1/credentials`: the credential that replaces an agent's `Authorization` header on the
//! way to one upstream MCP server ([`crate::upstream`]).
//!
//! Only the filter calls it, with the proxy credential (`proxy_token_file`) as a bearer token
//! (RFC 6750 §2.1). For a [`CredentialRequest`] naming an `[[upstreams]]` entry, the agent and
//! every actor of its delegation chain must be enabled and not revoked, and the agent must hold a
//! grant for the server (`[agents.servers.<name>]`). Then:
//! - `exchange`: a token minted by [`crate::token_exchange::mint_delegated`]: `aud` = the
//!   upstream's `resource` (RFC 8707 §2), `sub` = the agent, `act` = the chain (RFC 8693 §4.1),
//!   scopes narrowed, lifetime capped by the subject token's `exp`;
//! - `secret`: the static key read from the secret store by reference.
//!
//! The answer's `value` is a credential: it is never logged, never put in an error, and the
//! [`CredentialResponse`] `Debug` hides it. One log line per issued credential names agent,
//! server, kind and reference (the token's `jti` or the secret reference).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use behavry_core::wire::{CREDENTIALS_PATH, CredentialKind, CredentialRequest, CredentialResponse};
use behavry_secrets::{SecretError, SecretRef, SecretResolver, SecretStore, VaultError};

use crate::bearer;
use crate::config::{AdminCredential, Config, InvalidField};
use crate::http::AppState;
use crate::token::{TokenError, unix_now};
use crate::token_exchange::{DelegatedGrant, DelegationError, mint_delegated};
use crate::upstream::{CredentialSource, UpstreamConfig};

/// Largest accepted credential request body: an agent id, a bounded delegation chain and its
/// scopes fit in far less.
pub const MAX_CREDENTIAL_BODY_BYTES: usize = 16 * 1024;
/// `realm` of the endpoint's Bearer challenges (RFC 6750 §3).
pub const PROXY_REALM: &str = "behavry-proxy";

/// One upstream with its secret reference parsed once.
#[derive(Debug, Clone)]
struct Upstream {
    config: UpstreamConfig,
    secret: Option<SecretRef>,
}

/// What the endpoint needs: the proxy credential, the upstreams and the opened secret store.
#[derive(Debug)]
pub struct CredentialService {
    proxy_credential: Option<AdminCredential>,
    upstreams: BTreeMap<String, Upstream>,
    secrets: SecretResolver,
}

impl CredentialService {
    /// The endpoint of `config`, reading secrets through `secrets` (opened at start, see
    /// [`crate::upstream::SecretsConfig::open`]).
    pub fn new(
        config: &Config,
        secrets: SecretResolver,
    ) -> Result<CredentialService, InvalidField> {
        let mut upstreams = BTreeMap::new();
        for (index, upstream) in config.upstreams.iter().enumerate() {
            let secret = match &upstream.secret {
                Some(text) => Some(SecretRef::parse(text).map_err(|err| {
                    InvalidField::new(format!("upstreams[{index}].secret"), err.to_string())
                })?),
                None => None,
            };
            upstreams.insert(
                upstream.name.clone(),
                Upstream {
                    config: upstream.clone(),
                    secret,
                },
            );
        }
        Ok(CredentialService {
            proxy_credential: config.proxy_token.clone(),
            upstreams,
            secrets,
        })
    }

    /// Whether the endpoint is enabled (a proxy credential is configured).
    pub fn enabled(&self) -> bool {
        self.proxy_credential.is_some()
    }
}

/// Why a credential request was refused. Messages name agents, servers and references, never a
/// credential or a secret value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No proxy credential is configured: the endpoint does not exist.
    #[error("the upstream credential endpoint is disabled (no proxy credential configured)")]
    Disabled,
    /// No `Authorization: Bearer` header.
    #[error("missing proxy credential (Authorization: Bearer)")]
    MissingCredential,
    /// A bearer token that is not the proxy credential.
    #[error("invalid proxy credential")]
    WrongCredential,
    /// The body could not be read (too large, connection lost).
    #[error("cannot read request body: {0}")]
    Body(#[from] BytesRejection),
    /// The body is not a valid credential request.
    #[error("invalid credential request: {0}")]
    BadRequest(#[from] serde_json::Error),
    /// No `[[upstreams]]` entry of that name.
    #[error("no upstream `{0}` is configured")]
    UnknownServer(String),
    /// The agent (or an actor of its chain) is not an enabled agent.
    #[error("agent `{0}` is not enabled")]
    AgentNotEnabled(String),
    /// The agent (or an actor of its chain) is revoked.
    #[error("agent `{0}` is revoked")]
    AgentRevoked(String),
    /// The agent holds no grant for the server.
    #[error("agent `{agent}` holds no grant for server `{server}`")]
    NotGranted {
        /// The agent.
        agent: String,
        /// The upstream.
        server: String,
    },
    /// An actor of the chain is not one the agent lets act for it (RFC 8693 §4.4 `may_act`).
    #[error("agent `{actor}` may not act for `{agent}`")]
    MayNotAct {
        /// The agent acted for.
        agent: String,
        /// The actor it does not list.
        actor: String,
    },
    /// Minting refused (expired subject, no scope left, cycle, chain too deep).
    #[error(transparent)]
    Delegation(#[from] DelegationError),
    /// The clock is unusable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The secret store answered but will not give the secret (not found, denied, bad file).
    #[error("upstream secret unavailable: {0}")]
    Secret(SecretError),
    /// The secret store could not be reached.
    #[error("secret store unreachable: {0}")]
    SecretStoreDown(SecretError),
}

impl From<SecretError> for CredentialError {
    fn from(err: SecretError) -> Self {
        // A store that does not answer (or answers "unavailable", e.g. a sealed Vault) is a
        // transient 503; a store that answers no is a 502 the operator must fix.
        let unreachable = match &err {
            SecretError::Vault { source, .. } => match source.as_ref() {
                VaultError::Unreachable(_) | VaultError::Timeout { .. } => true,
                VaultError::UnexpectedStatus { status, .. } => *status >= 500,
                _ => false,
            },
            _ => false,
        };
        if unreachable {
            CredentialError::SecretStoreDown(err)
        } else {
            CredentialError::Secret(err)
        }
    }
}

impl IntoResponse for CredentialError {
    // The one mapping from credential errors to HTTP statuses.
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            CredentialError::Disabled => (StatusCode::NOT_FOUND, "not_found"),
            CredentialError::MissingCredential | CredentialError::WrongCredential => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            CredentialError::Body(rejection) => (rejection.status(), "unreadable_body"),
            CredentialError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            CredentialError::UnknownServer(_) => (StatusCode::NOT_FOUND, "unknown_server"),
            CredentialError::AgentNotEnabled(_) => (StatusCode::FORBIDDEN, "agent_not_enabled"),
            CredentialError::AgentRevoked(_) => (StatusCode::FORBIDDEN, "agent_revoked"),
            CredentialError::NotGranted { .. } => (StatusCode::FORBIDDEN, "not_granted"),
            CredentialError::Delegation(DelegationError::Token(_)) | CredentialError::Token(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "token_error")
            }
            CredentialError::Delegation(DelegationError::SubjectExpired) => {
                (StatusCode::FORBIDDEN, "subject_expired")
            }
            CredentialError::Delegation(DelegationError::NoScope(_)) => {
                (StatusCode::FORBIDDEN, "insufficient_scope")
            }
            CredentialError::Delegation(_) | CredentialError::MayNotAct { .. } => {
                (StatusCode::FORBIDDEN, "invalid_delegation")
            }
            CredentialError::Secret(_) => (StatusCode::BAD_GATEWAY, "secret_unavailable"),
            CredentialError::SecretStoreDown(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "secret_store_unreachable")
            }
        };
        let refusal = match &self {
            CredentialError::MissingCredential => Some((bearer::Refusal::Missing, PROXY_REALM)),
            CredentialError::WrongCredential => Some((bearer::Refusal::Wrong, PROXY_REALM)),
            _ => None,
        };
        bearer::error_response(
            status,
            code,
            self.to_string(),
            "upstream credential",
            refusal,
        )
    }
}

/// The endpoint's route, with its own body limit.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(CREDENTIALS_PATH, post(credentials))
        .layer(DefaultBodyLimit::max(MAX_CREDENTIAL_BODY_BYTES))
}

/// Check the proxy credential: RFC 6750 §2.1 bearer token, compared in constant time.
fn check_proxy_credential(
    expected: Option<&AdminCredential>,
    headers: &HeaderMap,
) -> Result<(), CredentialError> {
    bearer::check(expected, headers).map_err(|refusal| match refusal {
        bearer::Refusal::Disabled => CredentialError::Disabled,
        bearer::Refusal::Missing => CredentialError::MissingCredential,
        bearer::Refusal::Wrong => CredentialError::WrongCredential,
    })
}

/// Body parsed from raw bytes, after the credential check, so an unauthenticated caller learns
/// nothing about the request format.
async fn credentials(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CredentialResponse>, CredentialError> {
    let service = &state.credentials;
    check_proxy_credential(service.proxy_credential.as_ref(), &headers)?;
    let request: CredentialRequest = serde_json::from_slice(&body?)?;
    let upstream = service
        .upstreams
        .get(&request.server)
        .ok_or_else(|| CredentialError::UnknownServer(request.server.clone()))?;
    let scope = check_agent(&state, &request, &upstream.config)?;
    let response = match (&upstream.config.credential, &upstream.secret) {
        (CredentialSource::Exchange, _) => {
            let grant = DelegatedGrant {
                subject: &request.agent.id,
                chain: &request.agent.delegation,
                scope: &scope,
                subject_exp: request.subject_expires_at,
                upstream: Some(&upstream.config),
            };
            let (token, claims) = mint_delegated(&state.authorization_server, &grant, unix_now()?)?;
            CredentialResponse {
                kind: CredentialKind::Exchanged,
                header: "authorization".to_owned(),
                // RFC 6750 §2.1: the token goes upstream as a bearer token.
                value: format!("Bearer {token}"),
                expires_in_secs: claims.exp.saturating_sub(claims.iat),
                reference: claims.jti,
            }
        }
        (CredentialSource::Secret, Some(reference)) => {
            let secret = service.secrets.get(reference).await?;
            CredentialResponse {
                kind: CredentialKind::Secret,
                header: upstream.config.header.clone(),
                value: format!("{}{}", upstream.config.secret_prefix(), secret.expose()),
                expires_in_secs: upstream.config.cache_secs,
                reference: reference.to_string(),
            }
        }
        // Refused at config load; kept as an answer rather than a panic.
        (CredentialSource::Secret, None) => {
            return Err(CredentialError::UnknownServer(request.server.clone()));
        }
    };
    tracing::info!(
        agent = %request.agent.id,
        delegation = ?request.agent.delegation,
        server = %request.server,
        kind = ?response.kind,
        reference = %response.reference,
        "issued upstream credential"
    );
    Ok(Json(response))
}

/// The agent and every actor must be enabled and not revoked, and the agent must hold a grant
/// for the upstream. Answers the scopes the credential may carry: the request's (the agent
/// token's) that the enrollment still grants, space-separated.
fn check_agent(
    state: &AppState,
    request: &CredentialRequest,
    upstream: &UpstreamConfig,
) -> Result<String, CredentialError> {
    // The in-memory snapshot and revocation list, as decisions use: disabled or deleted agents
    // are absent from the snapshot, revoked ones listed.
    let snapshot = state.directory.snapshot();
    let revoked = state.revocations.list();
    let enabled = |id: &str| {
        let agent = snapshot
            .agent(id)
            .ok_or_else(|| CredentialError::AgentNotEnabled(id.to_owned()))?;
        if revoked.agents.iter().any(|agent| agent == id) {
            return Err(CredentialError::AgentRevoked(id.to_owned()));
        }
        Ok(agent)
    };
    let agent = enabled(&request.agent.id)?;
    // RFC 8693 §4.1: each actor of the chain acts with its own authority; a disabled or revoked
    // one ends the chain's right to act.
    // RFC 8693 §4.4: every actor of the chain must be one the agent lets act for it, as the
    // token exchange checked when the chain was made. Checked again here, so the credentials
    // endpoint never extends a chain the token endpoint would have refused.
    for actor in &request.agent.delegation {
        enabled(actor)?;
        if !agent
            .enrollment
            .may_act
            .iter()
            .any(|allowed| allowed == actor)
        {
            return Err(CredentialError::MayNotAct {
                agent: request.agent.id.clone(),
                actor: actor.clone(),
            });
        }
    }
    if !agent.enrollment.servers.contains_key(&upstream.name) {
        return Err(CredentialError::NotGranted {
            agent: request.agent.id.clone(),
            server: upstream.name.clone(),
        });
    }
    // RFC 6749 §3.3: never more than the agent holds now; a scope withdrawn from the enrollment
    // since its token was issued does not pass on to the upstream.
    let scopes: Vec<&str> = request
        .agent
        .scopes
        .iter()
        .map(String::as_str)
        .filter(|scope| agent.enrollment.scopes.iter().any(|held| held == scope))
        .collect();
    Ok(scopes.join(" "))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use behavry_secrets::{EncryptedFileStore, FileStoreKey, SecretValue};
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use axum::http::header;

    use super::*;
    use crate::config::{AgentEnrollment, ServerGrant};
    use crate::http::tests::{call, test_state};
    use crate::revocation::Revocation;
    use crate::signing_key::tests::test_key;
    use crate::upstream::SecretsConfigExt as _;

    const PROXY_TOKEN: &str = "test-proxy-credential-0123456789abcdef";
    const FILE_SECRET: &str = "sk_file_upstream_secret_value_42";
    const VAULT_SECRET: &str = "ghp_vault_upstream_secret_value_7";
    const VAULT_TOKEN: &str = "hvs.credentials-test-token";

    const UPSTREAMS: &str = r#"
proxy_token_file = "proxy-token"
[[upstreams]]
name = "files"
resource = "https://files.example/mcp"
credential = "exchange"
scopes = ["mcp", "files:read"]
token_ttl_secs = 120
[upstreams.claims]
tenant = "blue"
[[upstreams]]
name = "everything"
resource = "https://everything.example/mcp"
credential = "exchange"
"#;

    const FILE_UPSTREAMS: &str = r#"
[secrets.file]
path = "secrets.bin"
key_file = "secrets.key"
[[upstreams]]
name = "keyed"
resource = "https://keyed.example/mcp"
credential = "secret"
secret = "file:upstream/keyed#api_key"
header = "x-api-key"
cache_secs = 30
[[upstreams]]
name = "keyed-bearer"
resource = "https://keyed-bearer.example/mcp"
credential = "secret"
secret = "file:upstream/keyed#api_key"
[[upstreams]]
name = "keyed-missing"
resource = "https://keyed-missing.example/mcp"
credential = "secret"
secret = "file:upstream/keyed#no_such_field"
"#;

    fn enrollment(id: &str, scopes: &[&str], servers: &[&str]) -> AgentEnrollment {
        AgentEnrollment {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            servers: servers
                .iter()
                .map(|s| ((*s).to_owned(), ServerGrant::default()))
                .collect(),
            ..AgentEnrollment::new(id)
        }
    }

    fn all_servers() -> Vec<&'static str> {
        vec![
            "files",
            "everything",
            "keyed",
            "keyed-bearer",
            "keyed-missing",
            "vaulted",
            "vault-missing",
        ]
    }

    /// The demo sidecar of `http::tests` with `toml`'s upstreams and secrets (files in `dir`),
    /// and agents: `alice` (granted everything), `bot` and `assistant` (actors), `nogrant`,
    /// `off` (disabled), `gone` (revoked).
    async fn fixture(dir: &Path, toml: &str, env: &HashMap<String, String>) -> AppState {
        std::fs::write(dir.join("proxy-token"), format!("{PROXY_TOKEN}\n")).unwrap();
        let config = Config::from_toml_str(toml, &dir.join("authz.toml"), dir, env).unwrap();
        let secrets = config.secrets.open(env).unwrap();
        let mut state = test_state(dir, false).await;
        state.credentials = Arc::new(CredentialService::new(&config, secrets).unwrap());
        let registry = state.directory.registry();
        let servers = all_servers();
        registry
            .seed(&[
                AgentEnrollment {
                    may_act: ["bot", "assistant", "off", "gone", "stranger"]
                        .map(str::to_owned)
                        .to_vec(),
                    ..enrollment("alice", &["mcp", "files:read", "admin"], &servers)
                },
                enrollment("bot", &["mcp"], &[]),
                enrollment("assistant", &["mcp"], &[]),
                enrollment("nogrant", &["mcp"], &["other"]),
                enrollment("off", &["mcp"], &servers),
                enrollment("gone", &["mcp"], &servers),
            ])
            .await
            .unwrap();
        registry.set_enabled("off", false).await.unwrap();
        let until = i64::try_from(unix_now().unwrap()).unwrap() + 600;
        state
            .revocations
            .revoke(&Revocation::Agent {
                agent: "gone".to_owned(),
                expires_at: until,
            })
            .await
            .unwrap();
        state.directory.refresh().await.unwrap();
        state
    }

    /// A secrets file in `dir` holding [`FILE_SECRET`] at `file:upstream/keyed#api_key`.
    fn write_file_store(dir: &Path) {
        let key = FileStoreKey::generate().unwrap();
        key.write_key_file(&dir.join("secrets.key")).unwrap();
        let store = EncryptedFileStore::create(dir.join("secrets.bin"), key).unwrap();
        store
            .put(
                &SecretRef::parse("file:upstream/keyed#api_key").unwrap(),
                &SecretValue::new(FILE_SECRET.to_owned()),
            )
            .unwrap();
    }

    fn body(server: &str, agent: &str, delegation: &[&str], scopes: &[&str], exp: u64) -> Value {
        json!({
            "server": server,
            "agent": {"id": agent, "delegation": delegation, "scopes": scopes},
            "subjectExpiresAt": exp,
        })
    }

    fn in_secs(secs: u64) -> u64 {
        unix_now().unwrap() + secs
    }

    fn request(token: Option<&str>, body: &str) -> Request<Body> {
        let mut builder = Request::post(CREDENTIALS_PATH);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(Body::from(body.to_owned())).unwrap()
    }

    async fn ask(state: &AppState, body: &Value) -> (StatusCode, Value) {
        let (status, _, json) = call(state, request(Some(PROXY_TOKEN), &body.to_string())).await;
        (status, json)
    }

    fn verify(token: &str, audience: &str) -> Value {
        let jwk = &test_key().jwks().keys[0].clone();
        let key = DecodingKey::from_rsa_components(&jwk.n, &jwk.e).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[crate::config::DEFAULT_ISSUER]);
        validation.set_audience(&[audience]);
        validation.leeway = 0;
        decode::<Value>(token, &key, &validation).unwrap().claims
    }

    #[tokio::test]
    async fn missing_or_wrong_proxy_credential_is_401_with_a_bearer_challenge() {
        let dir = tempfile::tempdir().unwrap();
        let state = fixture(dir.path(), UPSTREAMS, &HashMap::new()).await;
        let good = body("files", "alice", &[], &["mcp"], in_secs(60)).to_string();
        let (status, headers, json) = call(&state, request(None, &good)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["error"], "unauthorized");
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"behavry-proxy\""
        );
        for wrong in ["wrong-credential-0123456789abcdefghij", "", NEAR_MISS] {
            let (status, headers, _) = call(&state, request(Some(wrong), &good)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
            assert!(
                headers[header::WWW_AUTHENTICATE]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer "),
            );
        }
        // Another scheme is no bearer credential at all.
        let basic = Request::post(CREDENTIALS_PATH)
            .header(header::AUTHORIZATION, format!("Basic {PROXY_TOKEN}"))
            .body(Body::from(good.clone()))
            .unwrap();
        let (status, _, _) = call(&state, basic).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // The credential is checked before the body: an unauthenticated caller learns nothing.
        let (status, _, _) = call(&state, request(Some("nope"), "not json")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    /// The proxy credential with its last character changed.
    const NEAR_MISS: &str = "test-proxy-credential-0123456789abcdeX";

    #[tokio::test]
    async fn the_endpoint_is_404_without_a_proxy_credential() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path(), true).await;
        assert!(!state.credentials.enabled());
        let good = body("files", "demo-agent", &[], &["mcp"], in_secs(60)).to_string();
        let (status, _, json) = call(&state, request(Some(PROXY_TOKEN), &good)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "not_found");
    }

    #[tokio::test]
    async fn unknown_server_is_404_and_bad_bodies_are_400() {
        let dir = tempfile::tempdir().unwrap();
        let state = fixture(dir.path(), UPSTREAMS, &HashMap::new()).await;
        let (status, json) = ask(
            &state,
            &body("nowhere", "alice", &[], &["mcp"], in_secs(60)),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "unknown_server");
        assert!(json["message"].as_str().unwrap().contains("nowhere"));

        let mut extra = body("files", "alice", &[], &["mcp"], in_secs(60));
        extra["extra"] = json!(1);
        for (bad, expect) in [
            ("not json".to_owned(), "expected"),
            (extra.to_string(), "unknown field `extra`"),
            (json!({"server": "files"}).to_string(), "missing field"),
        ] {
            let (status, _, json) = call(&state, request(Some(PROXY_TOKEN), &bad)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(json["error"], "invalid_request");
            let message = json["message"].as_str().unwrap();
            assert!(message.contains("invalid credential request"), "{message}");
            assert!(message.contains(expect), "{message}");
        }
        let big = "x".repeat(MAX_CREDENTIAL_BODY_BYTES + 1);
        let (status, _, _) = call(&state, request(Some(PROXY_TOKEN), &big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn agents_that_may_not_get_a_credential_are_403() {
        let dir = tempfile::tempdir().unwrap();
        let state = fixture(dir.path(), UPSTREAMS, &HashMap::new()).await;
        let exp = in_secs(60);
        for (request, code, names) in [
            (
                body("files", "stranger", &[], &["mcp"], exp),
                "agent_not_enabled",
                "stranger",
            ),
            (
                body("files", "off", &[], &["mcp"], exp),
                "agent_not_enabled",
                "off",
            ),
            (
                body("files", "gone", &[], &["mcp"], exp),
                "agent_revoked",
                "gone",
            ),
            (
                body("files", "nogrant", &[], &["mcp"], exp),
                "not_granted",
                "files",
            ),
            (
                body("files", "alice", &["off"], &["mcp"], exp),
                "agent_not_enabled",
                "off",
            ),
            (
                body("files", "alice", &["bot", "gone"], &["mcp"], exp),
                "agent_revoked",
                "gone",
            ),
            (
                body("files", "alice", &["stranger"], &["mcp"], exp),
                "agent_not_enabled",
                "stranger",
            ),
            // Held by the token but not listed by the upstream.
            (
                body("files", "alice", &[], &["admin"], exp),
                "insufficient_scope",
                "files",
            ),
            // In the token but not (or no longer) held by the enrollment.
            (
                body("everything", "alice", &[], &["files:write"], exp),
                "insufficient_scope",
                "",
            ),
            (
                body("everything", "alice", &[], &[], exp),
                "insufficient_scope",
                "",
            ),
            (
                body("files", "alice", &[], &["mcp"], unix_now().unwrap()),
                "subject_expired",
                "",
            ),
            (
                body("files", "alice", &[], &["mcp"], 0),
                "subject_expired",
                "",
            ),
            (
                body("files", "alice", &["bot", "alice"], &["mcp"], exp),
                "invalid_delegation",
                "alice",
            ),
            // An enabled agent alice does not let act for her (may_act).
            (
                body("files", "alice", &["nogrant"], &["mcp"], exp),
                "invalid_delegation",
                "nogrant",
            ),
        ] {
            let (status, json) = ask(&state, &request).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{request}: {json}");
            assert_eq!(json["error"], code, "{request}: {json}");
            assert!(json["message"].as_str().unwrap().contains(names), "{json}");
        }
    }

    #[tokio::test]
    async fn an_exchanged_token_is_minted_for_the_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let state = fixture(dir.path(), UPSTREAMS, &HashMap::new()).await;
        let subject_exp = in_secs(60);
        let (status, json) = ask(
            &state,
            &body(
                "files",
                "alice",
                &["bot", "assistant"],
                &["mcp", "admin", "files:read", "files:write"],
                subject_exp,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let response: CredentialResponse = serde_json::from_value(json).unwrap();
        assert_eq!(response.kind, CredentialKind::Exchanged);
        assert_eq!(response.header, "authorization");
        let token = response.value.strip_prefix("Bearer ").unwrap();
        let header = decode_header(token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(test_key().kid()));
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        // RFC 8707 §2: the upstream's resource is the audience; the gateway's is refused.
        let claims = verify(token, "https://files.example/mcp");
        assert_eq!(claims["sub"], "alice");
        // RFC 8693 §4.1: the current actor outermost, the earlier one nested.
        assert_eq!(
            claims["act"],
            json!({"sub": "bot", "act": {"sub": "assistant"}})
        );
        assert_eq!(claims["client_id"], "bot");
        // Token ∩ enrollment ∩ upstream: `admin` (not the upstream's) and `files:write` (not
        // held) are dropped.
        assert_eq!(claims["scope"], "mcp files:read");
        assert_eq!(claims["tenant"], "blue");
        assert_eq!(claims["jti"], response.reference.as_str());
        // The subject has 60 s left: the token lives no longer (the upstream's ttl is 120).
        let exp = claims["exp"].as_u64().unwrap();
        let iat = claims["iat"].as_u64().unwrap();
        assert!(exp <= subject_exp, "{exp} > {subject_exp}");
        assert_eq!(response.expires_in_secs, exp - iat);
        assert!(response.expires_in_secs <= 60 && response.expires_in_secs >= 55);
        assert!(!format!("{response:?}").contains(token));

        // A long-lived subject gets the upstream's ttl; without delegation the agent is the
        // client and there is no `act`. No upstream scopes: the held scopes pass unchanged.
        let (status, json) = ask(
            &state,
            &body("everything", "alice", &[], &["admin", "mcp"], in_secs(800)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let response: CredentialResponse = serde_json::from_value(json).unwrap();
        assert_eq!(response.expires_in_secs, 300);
        let token = response.value.strip_prefix("Bearer ").unwrap();
        let claims = verify(token, "https://everything.example/mcp");
        assert_eq!(claims["client_id"], "alice");
        assert!(claims.get("act").is_none());
        assert!(claims.get("tenant").is_none());
        assert_eq!(claims["scope"], "admin mcp");
    }

    #[tokio::test]
    async fn a_secret_comes_from_the_encrypted_file_store() {
        let dir = tempfile::tempdir().unwrap();
        write_file_store(dir.path());
        let toml = format!("{UPSTREAMS}{FILE_UPSTREAMS}");
        let state = fixture(dir.path(), &toml, &HashMap::new()).await;
        let exp = in_secs(60);
        let (status, json) = ask(&state, &body("keyed", "alice", &[], &["mcp"], exp)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let response: CredentialResponse = serde_json::from_value(json).unwrap();
        assert_eq!(response.kind, CredentialKind::Secret);
        assert_eq!(response.header, "x-api-key");
        assert_eq!(response.value, FILE_SECRET);
        assert_eq!(response.expires_in_secs, 30);
        assert_eq!(response.reference, "file:upstream/keyed#api_key");
        assert!(!format!("{response:?}").contains(FILE_SECRET));

        let (status, json) = ask(&state, &body("keyed-bearer", "alice", &[], &["mcp"], exp)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["header"], "authorization");
        assert_eq!(json["value"], format!("Bearer {FILE_SECRET}"));
        assert_eq!(json["expiresInSecs"], 60);

        // The grant checks apply to secrets too.
        let (status, _) = ask(&state, &body("keyed", "nogrant", &[], &["mcp"], exp)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let (status, json) = ask(&state, &body("keyed-missing", "alice", &[], &["mcp"], exp)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{json}");
        assert_eq!(json["error"], "secret_unavailable");
        let message = json["message"].as_str().unwrap();
        assert!(
            message.contains("file:upstream/keyed#no_such_field"),
            "{message}"
        );
        assert!(!message.contains(FILE_SECRET));
    }

    /// A Vault KV v2 stand-in on loopback holding [`VAULT_SECRET`] at
    /// `kv/upstream/github#token`; answers its address and the sender that stops it.
    async fn start_vault() -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let standin = Arc::new(behavry_vault_standin::StandinState::new(VAULT_TOKEN));
        let write = Request::post("/v1/kv/data/upstream/github")
            .header(behavry_vault_standin::TOKEN_HEADER, VAULT_TOKEN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"data": {"token": VAULT_SECRET}}).to_string(),
            ))
            .unwrap();
        let written = behavry_vault_standin::app(standin.clone())
            .oneshot(write)
            .await
            .unwrap();
        assert!(written.status().is_success(), "{}", written.status());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(behavry_vault_standin::serve(
            listener,
            standin,
            async move {
                let _ = stopped.await;
            },
        ));
        (address, stop)
    }

    fn vault_toml(address: &str) -> String {
        format!(
            r#"{UPSTREAMS}
[secrets.vault]
address = "{address}"
token_env = "TEST_VAULT_TOKEN"
request_timeout_ms = 2000
[[upstreams]]
name = "vaulted"
resource = "https://vaulted.example/mcp"
credential = "secret"
secret = "vault:kv/upstream/github#token"
[[upstreams]]
name = "vault-missing"
resource = "https://vault-missing.example/mcp"
credential = "secret"
secret = "vault:kv/upstream/nothing#token"
"#
        )
    }

    fn vault_env(token: &str) -> HashMap<String, String> {
        HashMap::from([("TEST_VAULT_TOKEN".to_owned(), token.to_owned())])
    }

    #[tokio::test]
    async fn a_secret_comes_from_vault_kv_v2() {
        let (address, _stop) = start_vault().await;
        let dir = tempfile::tempdir().unwrap();
        let toml = vault_toml(&address);
        let state = fixture(dir.path(), &toml, &vault_env(VAULT_TOKEN)).await;
        let exp = in_secs(60);
        let (status, json) = ask(&state, &body("vaulted", "alice", &[], &["mcp"], exp)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let response: CredentialResponse = serde_json::from_value(json).unwrap();
        assert_eq!(response.value, format!("Bearer {VAULT_SECRET}"));
        assert_eq!(response.reference, "vault:kv/upstream/github#token");
        assert!(!format!("{response:?}").contains(VAULT_SECRET));

        // Vault answers 404: the operator must fix the reference (502, naming it).
        let (status, json) = ask(&state, &body("vault-missing", "alice", &[], &["mcp"], exp)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{json}");
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("vault:kv/upstream/nothing#token")
        );

        // Vault answers 403 (the token's policy denies the read): 502 too.
        let dir = tempfile::tempdir().unwrap();
        let denied = fixture(dir.path(), &toml, &vault_env("hvs.some-other-token")).await;
        let (status, json) = ask(&denied, &body("vaulted", "alice", &[], &["mcp"], exp)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{json}");
        let message = json["message"].as_str().unwrap();
        assert!(message.contains("permission denied"), "{message}");
        assert!(
            !message.contains(VAULT_SECRET) && !message.contains("hvs."),
            "{message}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_vault_is_503() {
        // Bind then drop: nothing listens on the port any more.
        let port = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let toml = vault_toml(&format!("http://127.0.0.1:{port}"));
        let state = fixture(dir.path(), &toml, &vault_env(VAULT_TOKEN)).await;
        let (status, json) = ask(
            &state,
            &body("vaulted", "alice", &[], &["mcp"], in_secs(60)),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
        assert_eq!(json["error"], "secret_store_unreachable");
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("vault:kv/upstream/github#token")
        );
    }
}
