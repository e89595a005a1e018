//! The OAuth 2.0 authorization server of the sidecar: the token endpoint and its RFC 8414
//! metadata.
//!
//! `POST /oauth/token` implements the client credentials grant (RFC 6749 §4.4) with
//! `private_key_jwt` client authentication (RFC 7523 §2.2, RFC 7521 §4.2; checks in
//! [`crate::assertion`]). No client secrets exist: an agent proves itself with a JWT signed by
//! one of its registered keys, and gets an RFC 9068 access token for the gateway. The same
//! endpoint serves OAuth 2.0 Token Exchange (RFC 8693, [`crate::token_exchange`]): narrowing,
//! delegation (`act`) and Kubernetes service-account tokens.
//! `GET /.well-known/oauth-authorization-server` describes it (RFC 8414 §2, §3).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;

use crate::assertion::{
    AssertionError, AssertionRules, JWT_BEARER_ASSERTION_TYPE, ReplayCache, verify_client_assertion,
};
use crate::client_key::{AssertionAlg, ClientKey};
use crate::config::{Config, check_scope_token};
use crate::directory::DirectorySnapshot;
use crate::http::AppState;
use crate::kubernetes::KubernetesVerifier;
use crate::signing_key::{JwkSet, SigningKey};
use crate::token::{AccessTokenSpec, TokenError, sign_access_token, unix_now};
use crate::upstream::UpstreamConfig;

/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/oauth/token";
/// RFC 8414 §3: the well-known path of the authorization server metadata.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// The one grant type served (RFC 6749 §4.4.2).
pub const CLIENT_CREDENTIALS_GRANT: &str = "client_credentials";
/// RFC 8693 §2.1: the token exchange grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The one client authentication method (RFC 7591 §2 / OpenID Connect Core §9 name).
pub const PRIVATE_KEY_JWT: &str = "private_key_jwt";
/// Largest accepted token request body.
pub const MAX_TOKEN_REQUEST_BYTES: usize = 16 * 1024;

/// The token service's settings and state.
#[derive(Debug)]
pub struct AuthorizationServer {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) token_ttl_secs: u64,
    token_endpoint: String,
    jwks_uri: String,
    /// Values a client assertion's `aud` may hold.
    assertion_audiences: Vec<String>,
    pub(crate) key: SigningKey,
    replay: ReplayCache,
    /// Public keys our own tokens verify with, by `kid` (token exchange subject and actor
    /// tokens): the signing key's, plus retired keys once a key ring hands them in.
    pub(crate) verification_keys: Vec<ClientKey>,
    /// Upstreams whose `resource` a token exchange may target (RFC 8707).
    pub(crate) upstreams: Vec<UpstreamConfig>,
    /// `[token_exchange] max_delegation_depth`.
    pub(crate) max_delegation_depth: usize,
    /// `[kubernetes]`: service-account token exchange, if configured.
    pub(crate) kubernetes: Option<KubernetesVerifier>,
}

impl AuthorizationServer {
    /// The token service of `config`, signing with `key`.
    pub fn new(config: &Config, key: SigningKey) -> AuthorizationServer {
        let token_endpoint = format!("{}{TOKEN_PATH}", config.public_url);
        AuthorizationServer {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            token_ttl_secs: config.token_ttl_secs,
            jwks_uri: format!("{}{}", config.public_url, crate::http::JWKS_PATH),
            // RFC 7523 §3 item 3: the token endpoint URL identifies this server as an audience,
            // and so does its issuer identifier.
            assertion_audiences: vec![token_endpoint.clone(), config.issuer.clone()],
            token_endpoint,
            verification_keys: verification_keys(&key.jwks()),
            key,
            replay: ReplayCache::new(),
            upstreams: config.upstreams.clone(),
            max_delegation_depth: config.token_exchange.max_delegation_depth,
            kubernetes: config.kubernetes.as_ref().map(KubernetesVerifier::new),
        }
    }

    /// Replace the keys our own tokens are verified with (e.g. a key ring's published keys,
    /// retired ones included), so tokens signed by a retired key stay exchangeable until they
    /// expire.
    pub fn set_verification_keys(&mut self, jwks: &JwkSet) {
        self.verification_keys = verification_keys(jwks);
    }

    /// The `iss` of issued tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The gateway audience: the default `aud` of issued tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Whether a requested `resource` (RFC 8707 §2) names the gateway: the audience itself, or,
    /// when the audience is the gateway's base URI (e.g. `https://gw.example/mcp`), an MCP
    /// endpoint below it (`https://gw.example/mcp/github`), as an MCP client asks for the
    /// server it connects to (MCP authorization, "Resource Parameter Implementation"). The
    /// token's `aud` stays the gateway's.
    pub fn names_gateway(&self, resource: &str) -> bool {
        if resource == self.audience {
            return true;
        }
        let is_uri = self.audience.starts_with("https://") || self.audience.starts_with("http://");
        is_uri
            && resource
                .strip_prefix(self.audience.trim_end_matches('/'))
                .is_some_and(|rest| rest.starts_with('/') && !rest.contains(['?', '#']))
    }

    /// The token endpoint URL (`<public_url>/oauth/token`).
    pub fn token_endpoint(&self) -> &str {
        &self.token_endpoint
    }

    /// The key tokens are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

/// The keys of `jwks` as verifiers; a key that does not convert is logged and left out (so
/// tokens it signed are refused, never accepted unverified).
fn verification_keys(jwks: &JwkSet) -> Vec<ClientKey> {
    jwks.keys
        .iter()
        .filter_map(|jwk| {
            let converted = serde_json::to_value(jwk)
                .map_err(|err| err.to_string())
                .and_then(|value| ClientKey::from_value(value).map_err(|err| err.to_string()));
            match converted {
                Ok(key) => Some(key),
                Err(err) => {
                    tracing::error!(kid = %jwk.kid, error = %err, "cannot use a signing key for verification");
                    None
                }
            }
        })
        .collect()
}

/// Why a token request was refused: the RFC 6749 §5.2 error codes.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// `invalid_request`: missing or repeated parameter, wrong content type, two client
    /// authentication methods.
    #[error("{0}")]
    InvalidRequest(String),
    /// `invalid_client` without an assertion to blame (none sent, unsupported type).
    #[error("{0}")]
    InvalidClient(String),
    /// `invalid_client` (or `temporarily_unavailable`) from the assertion checks.
    #[error(transparent)]
    Assertion(#[from] AssertionError),
    /// `unsupported_grant_type`.
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// `invalid_scope`.
    #[error("{0}")]
    InvalidScope(String),
    /// `invalid_target` (RFC 8707 §2, RFC 8693 §2.2.2): the requested resource or audience is
    /// unknown or not granted.
    #[error("{0}")]
    InvalidTarget(String),
    /// `invalid_grant` (RFC 6749 §5.2): the grant (a service-account token) maps to no agent.
    #[error("{0}")]
    InvalidGrant(String),
    /// `server_error`: signing failed.
    #[error("cannot issue the token: {0}")]
    Token(#[from] TokenError),
}

/// RFC 6749 §5.2 error body.
#[derive(Debug, Serialize)]
struct OAuthErrorBody {
    error: &'static str,
    error_description: String,
}

impl IntoResponse for OAuthError {
    // The one mapping from token endpoint errors to HTTP (RFC 6749 §5.2).
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            OAuthError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            // RFC 6749 §5.2 allows 401 for invalid_client; RFC 7523 §3.2: a bad assertion is
            // `invalid_client`.
            OAuthError::InvalidClient(_) => (StatusCode::UNAUTHORIZED, "invalid_client"),
            OAuthError::Assertion(AssertionError::ReplayCacheFull) => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
            OAuthError::Assertion(_) => (StatusCode::UNAUTHORIZED, "invalid_client"),
            OAuthError::UnsupportedGrantType(_) => {
                (StatusCode::BAD_REQUEST, "unsupported_grant_type")
            }
            OAuthError::InvalidScope(_) => (StatusCode::BAD_REQUEST, "invalid_scope"),
            OAuthError::InvalidTarget(_) => (StatusCode::BAD_REQUEST, "invalid_target"),
            OAuthError::InvalidGrant(_) => (StatusCode::BAD_REQUEST, "invalid_grant"),
            OAuthError::Token(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "token request failed");
        } else {
            tracing::warn!(error = %self, code, "token request refused");
        }
        let body = OAuthErrorBody {
            error: code,
            error_description: self.to_string(),
        };
        with_no_store((status, Json(body)).into_response())
    }
}

/// RFC 6749 §5.1: responses carrying tokens (and, here, every token endpoint answer) must not be
/// cached.
pub(crate) fn with_no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// RFC 6749 §5.1 success body.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The RFC 9068 access token.
    pub access_token: String,
    /// Always `Bearer` (RFC 6750).
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Granted scopes, space-separated (RFC 6749 §3.3: always sent here, so the client never has
    /// to guess whether its request was narrowed).
    pub scope: String,
}

/// The parameters of one token request, each at most once (except the targets).
#[derive(Debug, Default)]
pub(crate) struct TokenRequest {
    pub(crate) grant_type: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_assertion_type: Option<String>,
    pub(crate) client_assertion: Option<String>,
    pub(crate) client_secret: Option<String>,
    // RFC 8693 §2.1 token exchange parameters.
    pub(crate) subject_token: Option<String>,
    pub(crate) subject_token_type: Option<String>,
    pub(crate) actor_token: Option<String>,
    pub(crate) actor_token_type: Option<String>,
    pub(crate) requested_token_type: Option<String>,
    /// RFC 8707 §2 / RFC 8693 §2.1: `resource` and `audience` may legitimately repeat; the
    /// exchange refuses more than one target with `invalid_target`.
    pub(crate) resource: Vec<String>,
    pub(crate) audience: Vec<String>,
}

impl TokenRequest {
    fn parse(body: &[u8]) -> Result<TokenRequest, OAuthError> {
        let mut request = TokenRequest::default();
        for (name, value) in form_urlencoded::parse(body) {
            let slot = match name.as_ref() {
                "grant_type" => &mut request.grant_type,
                "scope" => &mut request.scope,
                "client_id" => &mut request.client_id,
                "client_assertion_type" => &mut request.client_assertion_type,
                "client_assertion" => &mut request.client_assertion,
                "client_secret" => &mut request.client_secret,
                "subject_token" => &mut request.subject_token,
                "subject_token_type" => &mut request.subject_token_type,
                "actor_token" => &mut request.actor_token,
                "actor_token_type" => &mut request.actor_token_type,
                "requested_token_type" => &mut request.requested_token_type,
                "resource" => {
                    request.resource.push(value.into_owned());
                    continue;
                }
                "audience" => {
                    request.audience.push(value.into_owned());
                    continue;
                }
                // RFC 6749 §3.2: unrecognized parameters are ignored.
                _ => continue,
            };
            // RFC 6749 §3.2: "Request and response parameters MUST NOT be included more than
            // once."
            if slot.is_some() {
                return Err(OAuthError::InvalidRequest(format!(
                    "parameter `{name}` is repeated"
                )));
            }
            *slot = Some(value.into_owned());
        }
        Ok(request)
    }
}

/// `POST /oauth/token`.
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    // RFC 6749 §4.4.2: the request is application/x-www-form-urlencoded.
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(OAuthError::InvalidRequest(
            "Content-Type must be application/x-www-form-urlencoded".to_owned(),
        ));
    }
    let body = body.map_err(|err| OAuthError::InvalidRequest(err.body_text()))?;
    let request = TokenRequest::parse(&body)?;

    // RFC 6749 §2.3: one authentication method per request. No shared secrets exist here, so
    // HTTP Basic or `client_secret` next to an assertion is a malformed request.
    if headers.contains_key(header::AUTHORIZATION) || request.client_secret.is_some() {
        return Err(OAuthError::InvalidRequest(
            "only private_key_jwt client authentication is accepted; send no Authorization header or client_secret".to_owned(),
        ));
    }
    // RFC 6749 §4.4.2: grant_type is required; client_credentials or token exchange.
    match request.grant_type.as_deref() {
        None => {
            return Err(OAuthError::InvalidRequest(
                "grant_type is required".to_owned(),
            ));
        }
        Some(CLIENT_CREDENTIALS_GRANT) => {}
        Some(TOKEN_EXCHANGE_GRANT) => {
            return crate::token_exchange::exchange(&state, &request);
        }
        Some(other) => {
            return Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type `{other}` is not supported (client_credentials or {TOKEN_EXCHANGE_GRANT})"
            )));
        }
    }
    let server = &state.authorization_server;
    let now = unix_now()?;
    let snapshot = state.directory.snapshot();
    let client_id = authenticate_client(server, &snapshot, &request, now)?;
    let agent = snapshot
        .agent(&client_id)
        .ok_or_else(|| AssertionError::UnknownClient(client_id.clone()))?;

    let scope = granted_scope(request.scope.as_deref(), &agent.enrollment.scopes)?;
    // RFC 8707 §2: a client credentials token is for the gateway only; a `resource` naming
    // anything else is `invalid_target` (upstream tokens come from token exchange).
    if let Some(other) = request
        .resource
        .iter()
        .find(|resource| !server.names_gateway(resource))
    {
        return Err(OAuthError::InvalidTarget(format!(
            "`{other}` is not this gateway; ask for upstream tokens by token exchange"
        )));
    }
    let spec = AccessTokenSpec {
        issuer: &server.issuer,
        audience: &server.audience,
        agent_id: &client_id,
        client_id: &client_id,
        actor: None,
        scope: &scope,
        ttl_secs: server.token_ttl_secs,
        issued_at: now,
        extra: None,
    };
    let (access_token, claims) = sign_access_token(&server.key, &spec)?;
    tracing::info!(
        agent = %client_id, jti = %claims.jti, scope = %scope, "issued an access token"
    );
    let body = TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: server.token_ttl_secs,
        scope,
    };
    Ok(with_no_store(Json(body).into_response()))
}

/// `private_key_jwt` client authentication (RFC 7523 §2.2, RFC 7521 §4.2): verify the
/// assertion of `request` against the enabled agents of `snapshot`, remember it against replay;
/// answers the authenticated client id.
pub(crate) fn authenticate_client(
    server: &AuthorizationServer,
    snapshot: &DirectorySnapshot,
    request: &TokenRequest,
    now: u64,
) -> Result<String, OAuthError> {
    // RFC 7521 §4.2: client_assertion_type and client_assertion are both required.
    let Some(assertion) = request.client_assertion.as_deref() else {
        return Err(OAuthError::InvalidClient(
            "client authentication is required: send a private_key_jwt client_assertion (RFC 7523)"
                .to_owned(),
        ));
    };
    match request.client_assertion_type.as_deref() {
        Some(JWT_BEARER_ASSERTION_TYPE) => {}
        None => {
            return Err(OAuthError::InvalidRequest(
                "client_assertion_type is required".to_owned(),
            ));
        }
        Some(other) => {
            return Err(OAuthError::InvalidClient(format!(
                "client_assertion_type `{other}` is not supported (use {JWT_BEARER_ASSERTION_TYPE})"
            )));
        }
    }

    let verified = verify_client_assertion(
        assertion,
        request.client_id.as_deref(),
        |id| snapshot.agent(id).map(|agent| agent.keys.as_slice()),
        AssertionRules {
            audiences: &server.assertion_audiences,
            now,
        },
    )?;
    // RFC 7523 §3 item 7: each assertion is accepted once.
    server.replay.remember(&verified, now)?;
    Ok(verified.client_id)
}

/// RFC 6749 §3.3: the requested scopes (space-delimited) must all be held by the agent: a
/// request can only narrow. Without `scope`, the agent's full set is granted (the documented
/// default).
pub(crate) fn granted_scope(
    requested: Option<&str>,
    held: &[String],
) -> Result<String, OAuthError> {
    let Some(requested) = requested else {
        return Ok(held.join(" "));
    };
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested.split(' ') {
        check_scope_token("scope", scope).map_err(|err| OAuthError::InvalidScope(err.reason))?;
        if !held.iter().any(|h| h == scope) {
            return Err(OAuthError::InvalidScope(format!(
                "scope `{scope}` is not granted to this client"
            )));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(granted.join(" "))
}

/// RFC 8414 §2 authorization server metadata.
#[derive(Debug, Serialize)]
pub struct AuthorizationServerMetadata {
    /// The `iss` of issued tokens.
    pub issuer: String,
    /// `<public_url>/oauth/token`.
    pub token_endpoint: String,
    /// `<public_url>/.well-known/jwks.json`.
    pub jwks_uri: String,
    /// No authorization endpoint: no response types (the member is REQUIRED by §2).
    pub response_types_supported: [&'static str; 0],
    /// `client_credentials` and token exchange (RFC 8693 §2.1).
    pub grant_types_supported: [&'static str; 2],
    /// `private_key_jwt`.
    pub token_endpoint_auth_methods_supported: [&'static str; 1],
    /// `RS256`, `ES256`.
    pub token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
}

/// `GET /.well-known/oauth-authorization-server`.
pub async fn metadata(State(state): State<AppState>) -> Response {
    let server = &state.authorization_server;
    let body = AuthorizationServerMetadata {
        issuer: server.issuer.clone(),
        token_endpoint: server.token_endpoint.clone(),
        jwks_uri: server.jwks_uri.clone(),
        response_types_supported: [],
        grant_types_supported: [CLIENT_CREDENTIALS_GRANT, TOKEN_EXCHANGE_GRANT],
        token_endpoint_auth_methods_supported: [PRIVATE_KEY_JWT],
        token_endpoint_auth_signing_alg_values_supported: AssertionAlg::ALL
            .iter()
            .map(|alg| alg.name())
            .collect(),
    };
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(body)).into_response()
}

/// The token endpoint and the metadata, with the request body bounded.
pub fn routes() -> Router<AppState> {
    use axum::extract::DefaultBodyLimit;
    use axum::routing::{get, post};
    Router::new()
        .route(TOKEN_PATH, post(token))
        .layer(DefaultBodyLimit::max(MAX_TOKEN_REQUEST_BYTES))
        .route(METADATA_PATH, get(metadata))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

    use super::*;
    use crate::assertion::tests::{good_claims, sign};
    use crate::client_key::ClientKey;
    use crate::client_key::tests::TestClientKey;
    use crate::config::AgentEnrollment;
    use crate::http::tests::{call, test_state};
    use crate::token::AccessTokenClaims;

    const AGENT: &str = "agent-1";

    struct Fixture {
        _dir: tempfile::TempDir,
        state: AppState,
        key: TestClientKey,
    }

    impl Fixture {
        /// A sidecar with `agent-1` enrolled (scopes `mcp` and `mcp:read`) holding an EC key.
        async fn new() -> Fixture {
            Fixture::with_key(TestClientKey::ec()).await
        }

        async fn with_key(key: TestClientKey) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let state = test_state(dir.path(), true).await;
            let enrollment = AgentEnrollment {
                scopes: vec!["mcp".to_owned(), "mcp:read".to_owned()],
                ..AgentEnrollment::new(AGENT)
            };
            let client_key = ClientKey::from_value(key.public_jwk("k1")).unwrap();
            state
                .directory
                .registry()
                .enroll(&enrollment, &[client_key], true)
                .await
                .unwrap();
            state.directory.refresh().await.unwrap();
            Fixture {
                _dir: dir,
                state,
                key,
            }
        }

        fn assertion(&self, edit: impl FnOnce(&mut serde_json::Value)) -> String {
            let now = unix_now().unwrap();
            let mut claims = good_claims(AGENT, now);
            claims["aud"] = self.state.authorization_server.token_endpoint().into();
            claims["jti"] = format!(
                "{:x}",
                rsa::rand_core::RngCore::next_u64(&mut rsa::rand_core::OsRng)
            )
            .into();
            edit(&mut claims);
            let header = serde_json::json!({"alg": self.key.alg(), "kid": "k1"});
            sign(&self.key, &header, &claims)
        }

        fn form(&self, assertion: &str, extra: &[(&str, &str)]) -> String {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            form.append_pair("client_assertion_type", JWT_BEARER_ASSERTION_TYPE);
            form.append_pair("client_assertion", assertion);
            for (name, value) in extra {
                form.append_pair(name, value);
            }
            form.finish()
        }

        async fn post(&self, body: String) -> (StatusCode, HeaderMap, serde_json::Value) {
            let request = Request::post(TOKEN_PATH)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap();
            call(&self.state, request).await
        }

        async fn refused(&self, body: String) -> (StatusCode, String, String) {
            let (status, headers, json) = self.post(body).await;
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            (
                status,
                json["error"].as_str().unwrap().to_owned(),
                json["error_description"].as_str().unwrap().to_owned(),
            )
        }

        async fn decide(&self, tool: &str) -> bool {
            let body = serde_json::json!({
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                "agent": {"id": "demo-agent"},
                "request": {"server": "everything", "method": "tools/call", "tool": tool},
            });
            let request = Request::post("/v1/decide")
                .body(Body::from(body.to_string()))
                .unwrap();
            call(&self.state, request).await.2["allow"]
                .as_bool()
                .unwrap()
        }
    }

    fn verify_access_token(state: &AppState, token: &str) -> AccessTokenClaims {
        let jwk = &state.jwks.keys[0];
        let key = DecodingKey::from_rsa_components(&jwk.n, &jwk.e).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&["behavry-authz"]);
        validation.set_audience(&["behavry-gateway"]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        decode::<AccessTokenClaims>(token, &key, &validation)
            .unwrap()
            .claims
    }

    #[tokio::test]
    async fn private_key_jwt_gets_an_rfc9068_token_with_rsa_and_ec_keys() {
        for key in [TestClientKey::ec(), TestClientKey::rsa()] {
            let fixture = Fixture::with_key(key).await;
            let (status, headers, json) = fixture
                .post(fixture.form(&fixture.assertion(|_| {}), &[]))
                .await;
            assert_eq!(status, StatusCode::OK, "{json}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            assert_eq!(headers[header::PRAGMA], "no-cache");
            assert_eq!(json["token_type"], "Bearer");
            assert_eq!(json["expires_in"], 300);
            assert_eq!(json["scope"], "mcp mcp:read");
            let token = json["access_token"].as_str().unwrap();
            let header = decode_header(token).unwrap();
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            let claims = verify_access_token(&fixture.state, token);
            assert_eq!(claims.sub, AGENT);
            assert_eq!(claims.client_id, AGENT);
            assert_eq!(claims.scope, "mcp mcp:read");
            assert_eq!(claims.exp - claims.iat, 300);
        }
    }

    #[tokio::test]
    async fn the_issuer_is_an_accepted_audience_and_client_id_may_be_sent() {
        let fixture = Fixture::new().await;
        let assertion = fixture.assertion(|c| c["aud"] = "behavry-authz".into());
        let (status, _, json) = fixture
            .post(fixture.form(&assertion, &[("client_id", AGENT)]))
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }

    #[tokio::test]
    async fn scope_can_only_narrow() {
        let fixture = Fixture::new().await;
        let narrowed = fixture.form(&fixture.assertion(|_| {}), &[("scope", "mcp:read")]);
        let (status, _, json) = fixture.post(narrowed).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["scope"], "mcp:read");
        let claims = verify_access_token(&fixture.state, json["access_token"].as_str().unwrap());
        assert_eq!(claims.scope, "mcp:read");

        for escalation in ["mcp admin", "admin", "mcp  mcp:read", ""] {
            let body = fixture.form(&fixture.assertion(|_| {}), &[("scope", escalation)]);
            let (status, code, _) = fixture.refused(body).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::BAD_REQUEST, "invalid_scope"),
                "{escalation:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_resource_must_name_the_gateway() {
        let fixture = Fixture::new().await;
        let audience = fixture.state.authorization_server.audience().to_owned();
        let body = fixture.form(&fixture.assertion(|_| {}), &[("resource", &audience)]);
        let (status, _, json) = fixture.post(body).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        for other in ["https://elsewhere.example/mcp", "behavry-gateway-2"] {
            let body = fixture.form(&fixture.assertion(|_| {}), &[("resource", other)]);
            let (status, code, _) = fixture.refused(body).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::BAD_REQUEST, "invalid_target")
            );
        }
    }

    #[test]
    fn mcp_endpoints_below_a_uri_audience_name_the_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml_str(
            "audience = \"https://gw.example/mcp\"\n",
            &dir.path().join("authz.toml"),
            dir.path(),
            &std::collections::HashMap::new(),
        )
        .unwrap();
        let server = AuthorizationServer::new(&config, crate::signing_key::tests::test_key());
        for yes in [
            "https://gw.example/mcp",
            "https://gw.example/mcp/github",
            "https://gw.example/mcp/a/b",
        ] {
            assert!(server.names_gateway(yes), "{yes}");
        }
        for no in [
            "https://gw.example/mcpx",
            "https://gw.example/mc",
            "https://gw.example/mcp/x?y",
            "https://gw.example/mcp/x#y",
            "https://other.example/mcp/github",
            "gw.example/mcp/github",
        ] {
            assert!(!server.names_gateway(no), "{no}");
        }
        // A name (not a URI) audience matches itself only.
        let plain = Config::from_toml_str(
            "",
            &dir.path().join("authz.toml"),
            dir.path(),
            &std::collections::HashMap::new(),
        )
        .unwrap();
        let server = AuthorizationServer::new(&plain, crate::signing_key::tests::test_key());
        assert!(server.names_gateway("behavry-gateway"));
        assert!(!server.names_gateway("behavry-gateway/x"));
    }

    #[tokio::test]
    async fn every_assertion_refusal_is_invalid_client_401() {
        let fixture = Fixture::new().await;
        let stranger = TestClientKey::ec();
        let now = unix_now().unwrap();
        let token_endpoint = fixture
            .state
            .authorization_server
            .token_endpoint()
            .to_owned();
        let mut stranger_claims = good_claims(AGENT, now);
        stranger_claims["aud"] = token_endpoint.clone().into();
        let unregistered = sign(
            &stranger,
            &serde_json::json!({"alg": "ES256", "kid": "k1"}),
            &stranger_claims,
        );
        let hs256 = {
            let mut parts: Vec<String> = fixture
                .assertion(|_| {})
                .split('.')
                .map(str::to_owned)
                .collect();
            parts[0] =
                crate::assertion::tests::b64(&serde_json::json!({"alg": "HS256", "kid": "k1"}));
            parts.join(".")
        };
        let none = {
            let mut parts: Vec<String> = fixture
                .assertion(|_| {})
                .split('.')
                .map(str::to_owned)
                .collect();
            parts[0] = crate::assertion::tests::b64(&serde_json::json!({"alg": "none"}));
            parts[2] = String::new();
            parts.join(".")
        };
        let cases = [
            ("wrong alg (HS256)", hs256, "alg"),
            ("alg none", none, "alg"),
            ("unregistered key", unregistered, "signature"),
            (
                "wrong aud",
                fixture.assertion(|c| c["aud"] = "https://elsewhere/oauth/token".into()),
                "aud",
            ),
            (
                "expired",
                fixture.assertion(|c| c["exp"] = (now - 600).into()),
                "expired",
            ),
            (
                "missing exp",
                fixture.assertion(|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                "exp",
            ),
            (
                "exp too far",
                fixture.assertion(|c| c["exp"] = (now + 3600).into()),
                "exp",
            ),
            (
                "unknown client",
                fixture.assertion(|c| {
                    c["iss"] = "ghost".into();
                    c["sub"] = "ghost".into();
                }),
                "not enrolled",
            ),
            (
                "sub differs",
                fixture.assertion(|c| c["sub"] = "demo-agent".into()),
                "iss and sub",
            ),
        ];
        for (case, assertion, needle) in cases {
            let (status, code, description) = fixture.refused(fixture.form(&assertion, &[])).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {description}");
            assert_eq!(code, "invalid_client", "{case}");
            assert!(description.contains(needle), "{case}: {description}");
        }
    }

    #[tokio::test]
    async fn a_replayed_assertion_is_refused() {
        let fixture = Fixture::new().await;
        let assertion = fixture.assertion(|_| {});
        let (status, _, _) = fixture.post(fixture.form(&assertion, &[])).await;
        assert_eq!(status, StatusCode::OK);
        let (status, code, description) = fixture.refused(fixture.form(&assertion, &[])).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_client")
        );
        assert!(description.contains("already used"), "{description}");
    }

    #[tokio::test]
    async fn disabled_and_deleted_agents_get_no_token_and_no_allow() {
        let fixture = Fixture::new().await;
        assert!(fixture.decide("echo").await);
        let registry = fixture.state.directory.registry();
        registry.set_enabled(AGENT, false).await.unwrap();
        registry.set_enabled("demo-agent", false).await.unwrap();
        fixture.state.directory.refresh().await.unwrap();
        let (status, code, description) = fixture
            .refused(fixture.form(&fixture.assertion(|_| {}), &[]))
            .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_client")
        );
        assert!(description.contains("disabled"), "{description}");
        assert!(!fixture.decide("echo").await);

        registry.set_enabled(AGENT, true).await.unwrap();
        fixture.state.directory.refresh().await.unwrap();
        let (status, _, _) = fixture
            .post(fixture.form(&fixture.assertion(|_| {}), &[]))
            .await;
        assert_eq!(status, StatusCode::OK);

        registry.delete(AGENT).await.unwrap();
        fixture.state.directory.refresh().await.unwrap();
        let (status, code, _) = fixture
            .refused(fixture.form(&fixture.assertion(|_| {}), &[]))
            .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_client")
        );
    }

    #[tokio::test]
    async fn malformed_requests_get_rfc6749_errors() {
        let fixture = Fixture::new().await;
        let assertion = fixture.assertion(|_| {});
        let form = |pairs: &[(&str, &str)]| {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.extend_pairs(pairs);
            form.finish()
        };
        let type_pair = ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE);
        let assertion_pair = ("client_assertion", assertion.as_str());
        let cases = [
            (
                form(&[("grant_type", "password"), type_pair, assertion_pair]),
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
            ),
            (
                form(&[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    type_pair,
                    assertion_pair,
                ]),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                form(&[type_pair, assertion_pair]),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                form(&[
                    ("grant_type", "client_credentials"),
                    ("grant_type", "client_credentials"),
                    type_pair,
                    assertion_pair,
                ]),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                form(&[("grant_type", "client_credentials")]),
                StatusCode::UNAUTHORIZED,
                "invalid_client",
            ),
            (
                form(&[("grant_type", "client_credentials"), assertion_pair]),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", "urn:other"),
                    assertion_pair,
                ]),
                StatusCode::UNAUTHORIZED,
                "invalid_client",
            ),
            (
                form(&[
                    ("grant_type", "client_credentials"),
                    type_pair,
                    assertion_pair,
                    ("client_secret", "s"),
                ]),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                form(&[
                    ("grant_type", "client_credentials"),
                    type_pair,
                    ("client_assertion", "garbage"),
                ]),
                StatusCode::UNAUTHORIZED,
                "invalid_client",
            ),
        ];
        for (body, status, code) in cases {
            let (got_status, got_code, description) = fixture.refused(body.clone()).await;
            assert_eq!(
                (got_status, got_code.as_str()),
                (status, code),
                "{body}: {description}"
            );
        }
        // JSON instead of a form, and HTTP Basic next to the assertion.
        let request = Request::post(TOKEN_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let (status, _, json) = call(&fixture.state, request).await;
        assert_eq!(
            (status, json["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request"))
        );
        let request = Request::post(TOKEN_PATH)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, "Basic YTpi")
            .body(Body::from(fixture.form(&fixture.assertion(|_| {}), &[])))
            .unwrap();
        let (status, _, json) = call(&fixture.state, request).await;
        assert_eq!(
            (status, json["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request"))
        );
    }

    #[tokio::test]
    async fn metadata_describes_the_token_endpoint() {
        let fixture = Fixture::new().await;
        let request = Request::get(METADATA_PATH).body(Body::empty()).unwrap();
        let (status, _, json) = call(&fixture.state, request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["issuer"], "behavry-authz");
        assert_eq!(json["token_endpoint"], "http://127.0.0.1:9911/oauth/token");
        assert_eq!(
            json["jwks_uri"],
            "http://127.0.0.1:9911/.well-known/jwks.json"
        );
        assert_eq!(
            json["grant_types_supported"],
            serde_json::json!([
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ])
        );
        assert_eq!(
            json["token_endpoint_auth_methods_supported"],
            serde_json::json!(["private_key_jwt"])
        );
        assert_eq!(
            json["token_endpoint_auth_signing_alg_values_supported"],
            serde_json::json!(["RS256", "ES256"])
        );
    }
}
