//! OAuth 2.0 Token Exchange (RFC 8693) at `POST /oauth/token`
//! (`grant_type=urn:ietf:params:oauth:grant-type:token-exchange`).
//!
//! - A token of ours (`subject_token_type` `...:access_token`) is exchanged for a narrower one:
//!   another target (the gateway or an upstream's `resource`, RFC 8707), fewer scopes, a
//!   shorter life. With an `actor_token`, the new token is delegated: `sub` stays the subject,
//!   `act` names the actor with the earlier chain nested inside (RFC 8693 §4.1), when the
//!   subject's enrollment lists the actor in `may_act` (§4.4).
//! - A Kubernetes projected service-account token (`...:jwt`, [`crate::kubernetes`]) is
//!   exchanged for the access token of the agent enrolled with that service account.
//!
//! [`mint_delegated`] is the minting step shared with `POST /v1/credentials`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::config::InvalidField;
use crate::directory::DirectorySnapshot;
use crate::http::AppState;
use crate::kubernetes::{KubernetesError, verify_service_account_token};
use crate::oauth::{
    AuthorizationServer, OAuthError, TokenRequest, authenticate_client, granted_scope,
    with_no_store,
};
use crate::token::{
    AccessTokenClaims, AccessTokenSpec, Actor, OwnTokenRules, TokenError, VerifiedAccessToken,
    sign_access_token, unix_now, verify_own_token,
};
use crate::upstream::{CredentialSource, UpstreamConfig};

/// RFC 8693 §3: an OAuth 2.0 access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 §3: a JWT (here: a Kubernetes projected service-account token).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Default `[token_exchange] max_delegation_depth`.
pub const DEFAULT_MAX_DELEGATION_DEPTH: usize = 3;
/// Largest allowed `max_delegation_depth`.
pub const MAX_DELEGATION_DEPTH_LIMIT: usize = 8;

/// `[token_exchange]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// Most actors an `act` chain may hold, `1..=8`. Default 3.
    #[serde(default = "default_max_delegation_depth")]
    pub max_delegation_depth: usize,
}

fn default_max_delegation_depth() -> usize {
    DEFAULT_MAX_DELEGATION_DEPTH
}

impl Default for TokenExchangeConfig {
    fn default() -> Self {
        TokenExchangeConfig {
            max_delegation_depth: DEFAULT_MAX_DELEGATION_DEPTH,
        }
    }
}

impl TokenExchangeConfig {
    /// Check the section.
    pub fn validate(&self) -> Result<(), InvalidField> {
        if !(1..=MAX_DELEGATION_DEPTH_LIMIT).contains(&self.max_delegation_depth) {
            return Err(InvalidField::new(
                "token_exchange.max_delegation_depth",
                format!(
                    "must be between 1 and {MAX_DELEGATION_DEPTH_LIMIT}, got {}",
                    self.max_delegation_depth
                ),
            ));
        }
        Ok(())
    }
}

/// What [`mint_delegated`] issues a token for.
#[derive(Debug, Clone, Copy)]
pub struct DelegatedGrant<'a> {
    /// `sub`: the agent the token is for.
    pub subject: &'a str,
    /// The delegation chain, current actor first; empty for the subject's own token. Becomes
    /// `act` (RFC 8693 §4.1), and its first element the `client_id`.
    pub chain: &'a [String],
    /// Requested scopes, space-separated; narrowed to the upstream's `scopes` when it has some.
    pub scope: &'a str,
    /// `exp` of the subject's token: the new token never outlives it.
    pub subject_exp: u64,
    /// The target upstream (`aud` = its `resource`, its ttl and `claims`); `None` targets the
    /// gateway audience.
    pub upstream: Option<&'a UpstreamConfig>,
}

/// Why [`mint_delegated`] refused.
#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    /// The subject's token has expired (or has less than a second left).
    #[error("the subject token has expired")]
    SubjectExpired,
    /// An agent appears twice in the chain (or acts for itself).
    #[error("delegation cycle: `{0}` already appears in the delegation chain")]
    Cycle(String),
    /// The chain holds more actors than `max_delegation_depth`.
    #[error("delegation chain of {depth} actors exceeds max_delegation_depth {max}")]
    TooDeep {
        /// Actors in the new chain.
        depth: usize,
        /// The configured limit.
        max: usize,
    },
    /// No scope is left after narrowing to the upstream's scopes.
    #[error("none of the requested scopes is allowed for upstream `{0}`")]
    NoScope(String),
    /// Signing failed.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl From<DelegationError> for OAuthError {
    fn from(err: DelegationError) -> Self {
        match err {
            // RFC 8693 §2.2.2: a subject or actor token unacceptable by policy is
            // `invalid_request`.
            DelegationError::SubjectExpired
            | DelegationError::Cycle(_)
            | DelegationError::TooDeep { .. } => OAuthError::InvalidRequest(err.to_string()),
            DelegationError::NoScope(_) => OAuthError::InvalidScope(err.to_string()),
            DelegationError::Token(err) => OAuthError::Token(err),
        }
    }
}

/// The `act` claim of `chain` (current actor first): RFC 8693 §4.1, the current actor
/// outermost, each earlier actor nested in the one after it.
pub fn actor_of_chain(chain: &[String]) -> Option<Actor> {
    chain.iter().rev().fold(None, |prior, sub| {
        Some(Actor {
            sub: sub.clone(),
            act: prior.map(Box::new),
        })
    })
}

/// Mint the token described by `grant` at `now` (seconds since the epoch): `sub` = subject,
/// `act` = the chain, `client_id` = the current actor (or the subject), `aud` = the upstream's
/// `resource` or the gateway, scopes narrowed to the upstream's, lifetime
/// min(upstream or default ttl, subject `exp` − now), the upstream's extra claims.
///
/// Checks the chain (no cycle, at most `max_delegation_depth` actors); the caller has checked
/// that the subject and every actor are enabled, not revoked, and allowed (`may_act`, grants).
pub fn mint_delegated(
    server: &AuthorizationServer,
    grant: &DelegatedGrant<'_>,
    now: u64,
) -> Result<(String, AccessTokenClaims), DelegationError> {
    // RFC 8693 §4.1: a chain is a sequence of distinct parties; an agent acting for itself or
    // twice in its own chain would let it launder its identity.
    let mut seen = vec![grant.subject];
    for actor in grant.chain {
        if seen.contains(&actor.as_str()) {
            return Err(DelegationError::Cycle(actor.clone()));
        }
        seen.push(actor);
    }
    if grant.chain.len() > server.max_delegation_depth {
        return Err(DelegationError::TooDeep {
            depth: grant.chain.len(),
            max: server.max_delegation_depth,
        });
    }
    let (audience, ttl, extra) = match grant.upstream {
        Some(upstream) => (
            upstream.resource.as_str(),
            upstream.token_ttl_secs,
            Some(&upstream.claims),
        ),
        None => (server.audience.as_str(), server.token_ttl_secs, None),
    };
    // RFC 8693 §2.1 (scope) and RFC 6749 §3.3: an upstream with `scopes` gets only those.
    let mut scopes: Vec<&str> = Vec::new();
    for scope in grant.scope.split(' ').filter(|s| !s.is_empty()) {
        let allowed = grant
            .upstream
            .is_none_or(|u| u.scopes.is_empty() || u.scopes.iter().any(|s| s == scope));
        if allowed && !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        let target = grant.upstream.map_or(audience, |u| u.name.as_str());
        return Err(DelegationError::NoScope(target.to_owned()));
    }
    let scope = scopes.join(" ");
    // A derived token never outlives the token it was derived from (RFC 8693 §2.2.1
    // `expires_in` is the issuer's to choose; RFC 6750 §5.3 short-lived bearer tokens).
    let remaining = grant.subject_exp.saturating_sub(now);
    if remaining == 0 {
        return Err(DelegationError::SubjectExpired);
    }
    let actor = actor_of_chain(grant.chain);
    let spec = AccessTokenSpec {
        issuer: &server.issuer,
        audience,
        agent_id: grant.subject,
        // RFC 8693 §4.3 / RFC 9068 §2.2: the client is the party the token is issued to, the
        // current actor of a delegation.
        client_id: grant.chain.first().map_or(grant.subject, String::as_str),
        actor: actor.as_ref(),
        scope: &scope,
        ttl_secs: ttl.min(remaining),
        issued_at: now,
        extra,
    };
    Ok(sign_access_token(&server.key, &spec)?)
}

/// RFC 8693 §2.2.1 success body.
#[derive(Debug, Serialize)]
pub struct ExchangeResponse {
    /// The issued token.
    pub access_token: String,
    /// Always [`ACCESS_TOKEN_TYPE`].
    pub issued_token_type: &'static str,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Granted scopes, space-separated.
    pub scope: String,
}

/// The subject of an exchange once verified.
struct Subject {
    /// The agent.
    agent: String,
    /// The chain of the subject token, current actor first.
    chain: Vec<String>,
    /// The subject token's `client_id`.
    client_id: String,
    /// Scopes the subject token holds.
    scopes: Vec<String>,
    /// Its `exp`.
    exp: u64,
    /// `may_act.sub` of the subject token, if any.
    may_act: Option<String>,
}

fn request_error(what: &str, err: impl std::fmt::Display) -> OAuthError {
    // RFC 8693 §2.2.2: an invalid subject or actor token is `invalid_request`. The token itself
    // is never echoed.
    OAuthError::InvalidRequest(format!("{what} {err}"))
}

/// Verify one of our tokens and the state of its agents: signature and claims
/// ([`verify_own_token`]), `jti` not revoked, every agent of `sub` and `act` enabled and not
/// revoked.
fn verify_presented(
    server: &AuthorizationServer,
    state: &AppState,
    snapshot: &DirectorySnapshot,
    token: &str,
    what: &str,
    now: u64,
) -> Result<VerifiedAccessToken, OAuthError> {
    let rules = OwnTokenRules {
        issuer: &server.issuer,
        audience: &server.audience,
        now,
    };
    let verified = verify_own_token(token, &server.verification_keys, rules)
        .map_err(|err| request_error(what, err))?;
    let revocations = state.revocations.list();
    if revocations.token_ids.contains(&verified.jti) {
        return Err(request_error(what, "has been revoked"));
    }
    let mut agents = vec![verified.sub.as_str()];
    if let Some(act) = &verified.act {
        agents.extend(act.chain());
    }
    for agent in agents {
        if revocations.agents.iter().any(|a| a == agent) {
            return Err(request_error(
                what,
                format_args!("names agent `{agent}`, whose tokens are revoked"),
            ));
        }
        if snapshot.agent(agent).is_none() {
            return Err(request_error(
                what,
                format_args!("names agent `{agent}`, which is not enrolled or is disabled"),
            ));
        }
    }
    Ok(verified)
}

/// The exchange's single target (RFC 8707 §2, RFC 8693 §2.1): `resource` and `audience`
/// together must name at most one; none means the gateway.
fn requested_target(request: &TokenRequest) -> Result<Option<&str>, OAuthError> {
    let mut targets: Vec<&str> = Vec::new();
    for target in request.resource.iter().chain(&request.audience) {
        if !targets.contains(&target.as_str()) {
            targets.push(target);
        }
    }
    match targets.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(OAuthError::InvalidTarget(
            "exactly one target may be requested (one resource or audience)".to_owned(),
        )),
    }
}

/// Handle a token exchange request whose grant type was recognized by [`crate::oauth::token`].
pub(crate) fn exchange(state: &AppState, request: &TokenRequest) -> Result<Response, OAuthError> {
    let server = &state.authorization_server;
    // RFC 8693 §2.1: only access tokens are issued here.
    if let Some(requested) = request.requested_token_type.as_deref()
        && requested != ACCESS_TOKEN_TYPE
    {
        return Err(OAuthError::InvalidRequest(format!(
            "requested_token_type `{requested}` is not supported (only {ACCESS_TOKEN_TYPE})"
        )));
    }
    // RFC 8693 §2.1: subject_token and subject_token_type are REQUIRED.
    let (Some(subject_token), Some(subject_token_type)) = (
        request.subject_token.as_deref(),
        request.subject_token_type.as_deref(),
    ) else {
        return Err(OAuthError::InvalidRequest(
            "subject_token and subject_token_type are required".to_owned(),
        ));
    };
    // RFC 8693 §2.1: actor_token_type is REQUIRED when actor_token is present and MUST NOT be
    // included otherwise.
    let actor = match (
        request.actor_token.as_deref(),
        request.actor_token_type.as_deref(),
    ) {
        (Some(token), Some(ACCESS_TOKEN_TYPE)) => Some(token),
        (Some(_), Some(JWT_TOKEN_TYPE)) => {
            return Err(OAuthError::InvalidRequest(
                "a Kubernetes service-account token cannot be an actor_token; the actor presents its access token".to_owned(),
            ));
        }
        (Some(_), Some(other)) => {
            return Err(OAuthError::InvalidRequest(format!(
                "actor_token_type `{other}` is not supported (only {ACCESS_TOKEN_TYPE})"
            )));
        }
        (Some(_), None) => {
            return Err(OAuthError::InvalidRequest(
                "actor_token_type is required with actor_token".to_owned(),
            ));
        }
        (None, Some(_)) => {
            return Err(OAuthError::InvalidRequest(
                "actor_token_type must not be sent without actor_token".to_owned(),
            ));
        }
        (None, None) => None,
    };
    let target = requested_target(request)?;

    let now = unix_now()?;
    let snapshot = state.directory.snapshot();
    // RFC 8693 §2.1: client authentication is optional for this grant; a client that
    // authenticates must be the party the exchange is for.
    let client = if request.client_assertion.is_some() || request.client_assertion_type.is_some() {
        Some(authenticate_client(server, &snapshot, request, now)?)
    } else {
        None
    };

    let subject = match subject_token_type {
        ACCESS_TOKEN_TYPE => {
            let verified = verify_presented(
                server,
                state,
                &snapshot,
                subject_token,
                "subject_token",
                now,
            )?;
            Subject {
                chain: verified
                    .act
                    .as_ref()
                    .map(|act| act.chain().into_iter().map(str::to_owned).collect())
                    .unwrap_or_default(),
                scopes: verified.scopes().into_iter().map(str::to_owned).collect(),
                may_act: verified.may_act.map(|m| m.sub),
                client_id: verified.client_id,
                exp: verified.exp,
                agent: verified.sub,
            }
        }
        JWT_TOKEN_TYPE => {
            if actor.is_some() {
                return Err(OAuthError::InvalidRequest(
                    "a Kubernetes service-account token is exchanged for its agent's own token; send no actor_token".to_owned(),
                ));
            }
            kubernetes_subject(server, state, &snapshot, subject_token, now)?
        }
        other => {
            return Err(OAuthError::InvalidRequest(format!(
                "subject_token_type `{other}` is not supported ({ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE})"
            )));
        }
    };
    let Some(subject_agent) = snapshot.agent(&subject.agent) else {
        return Err(request_error(
            "subject_token",
            "names an agent that is not enrolled or is disabled",
        ));
    };

    let (chain, mut not_after) = match actor {
        None => {
            // RFC 8693 §4.1: without a new actor the chain is kept exactly as it was; dropping
            // `act` would turn a delegated token back into the subject's own.
            if let Some(client) = &client
                && *client != subject.agent
                && *client != subject.client_id
            {
                return Err(OAuthError::InvalidRequest(format!(
                    "the authenticated client `{client}` is not the holder of the subject_token"
                )));
            }
            (subject.chain.clone(), subject.exp)
        }
        Some(actor_token) => {
            let actor =
                verify_presented(server, state, &snapshot, actor_token, "actor_token", now)?;
            // The actor token is the actor's own token: a delegated token names its principal
            // in `sub`, not the party holding it.
            if actor.act.is_some() {
                return Err(OAuthError::InvalidRequest(
                    "actor_token must be the actor's own token (it carries `act`)".to_owned(),
                ));
            }
            if let Some(client) = &client
                && *client != actor.sub
            {
                return Err(OAuthError::InvalidRequest(format!(
                    "the authenticated client `{client}` is not the actor `{}`",
                    actor.sub
                )));
            }
            // RFC 8693 §4.1: an agent acting for itself, or already in the chain, is a cycle.
            if actor.sub == subject.agent || subject.chain.contains(&actor.sub) {
                return Err(DelegationError::Cycle(actor.sub).into());
            }
            // RFC 8693 §4.4: the subject must allow this actor, by enrollment and, when the
            // subject token names one, by its `may_act` claim.
            if !subject_agent.enrollment.may_act.contains(&actor.sub) {
                return Err(OAuthError::InvalidRequest(format!(
                    "agent `{}` may not act for `{}` (not in its may_act)",
                    actor.sub, subject.agent
                )));
            }
            if let Some(allowed) = &subject.may_act
                && *allowed != actor.sub
            {
                return Err(OAuthError::InvalidRequest(format!(
                    "the subject_token's may_act does not name `{}`",
                    actor.sub
                )));
            }
            let mut chain = vec![actor.sub.clone()];
            chain.extend(subject.chain.iter().cloned());
            (chain, subject.exp.min(actor.exp))
        }
    };

    // RFC 8707 §2, RFC 8693 §2.2.2: the target must be the gateway or a configured upstream the
    // subject agent has a grant for; anything else is `invalid_target`.
    let upstream = match target {
        None => None,
        Some(target) if server.names_gateway(target) => None,
        Some(target) => {
            let Some(upstream) = server.upstreams.iter().find(|u| u.resource == target) else {
                return Err(OAuthError::InvalidTarget(format!(
                    "`{target}` is not a known resource or audience"
                )));
            };
            if upstream.credential != CredentialSource::Exchange {
                return Err(OAuthError::InvalidTarget(format!(
                    "upstream `{}` takes a static secret, not an exchanged token",
                    upstream.name
                )));
            }
            if !subject_agent
                .enrollment
                .servers
                .contains_key(&upstream.name)
            {
                return Err(OAuthError::InvalidTarget(format!(
                    "agent `{}` has no grant for upstream `{}`",
                    subject.agent, upstream.name
                )));
            }
            Some(upstream)
        }
    };

    // RFC 8693 §2.1 / RFC 6749 §3.3: the scope can only narrow the subject token's.
    let scope = granted_scope(request.scope.as_deref(), &subject.scopes)?;
    not_after = not_after.min(subject.exp);
    let grant = DelegatedGrant {
        subject: &subject.agent,
        chain: &chain,
        scope: &scope,
        subject_exp: not_after,
        upstream,
    };
    let (access_token, claims) = mint_delegated(server, &grant, now)?;
    tracing::info!(
        agent = %claims.sub,
        client = %claims.client_id,
        chain = ?chain,
        aud = %claims.aud,
        jti = %claims.jti,
        scope = %claims.scope,
        "issued an exchanged token"
    );
    let body = ExchangeResponse {
        access_token,
        issued_token_type: ACCESS_TOKEN_TYPE,
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
        scope: claims.scope,
    };
    Ok(with_no_store(Json(body).into_response()))
}

/// A Kubernetes service-account token as the subject: verified, then mapped to the one enabled
/// agent whose enrollment lists the account. The result is that agent's own token.
fn kubernetes_subject(
    server: &AuthorizationServer,
    state: &AppState,
    snapshot: &DirectorySnapshot,
    token: &str,
    now: u64,
) -> Result<Subject, OAuthError> {
    let Some(verifier) = &server.kubernetes else {
        return Err(OAuthError::InvalidRequest(format!(
            "subject_token_type {JWT_TOKEN_TYPE} (Kubernetes service-account tokens) is not enabled: configure [kubernetes]"
        )));
    };
    let account = verify_service_account_token(token, verifier, now)
        .map_err(|err: KubernetesError| OAuthError::InvalidRequest(err.to_string()))?;
    let mapped: Vec<_> = snapshot
        .agents()
        .filter(|agent| agent.enrollment.service_accounts.contains(&account.sub))
        .collect();
    // RFC 6749 §5.2 `invalid_grant`: the grant is valid but maps to no single agent.
    let agent = match mapped.as_slice() {
        [one] => *one,
        [] => {
            return Err(OAuthError::InvalidGrant(format!(
                "service account `{}` is not mapped to any enabled agent",
                account.sub
            )));
        }
        several => {
            return Err(OAuthError::InvalidGrant(format!(
                "service account `{}` is mapped to {} agents; it must map to exactly one",
                account.sub,
                several.len()
            )));
        }
    };
    let id = agent.enrollment.id.clone();
    if state.revocations.list().agents.contains(&id) {
        return Err(OAuthError::InvalidGrant(format!(
            "agent `{id}`'s tokens are revoked"
        )));
    }
    Ok(Subject {
        chain: Vec::new(),
        client_id: id.clone(),
        scopes: agent.enrollment.scopes.clone(),
        exp: account.exp,
        may_act: None,
        agent: id,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    use serde_json::{Value, json};

    use super::*;
    use crate::assertion::JWT_BEARER_ASSERTION_TYPE;
    use crate::assertion::tests::{good_claims, sign};
    use crate::client_key::ClientKey;
    use crate::client_key::tests::TestClientKey;
    use crate::config::{AgentEnrollment, Config, ServerGrant};
    use crate::http::tests::{call, test_state};
    use crate::oauth::TOKEN_PATH;
    use crate::revocation::Revocation;
    use crate::signing_key::tests::test_key;

    const GATEWAY: &str = "behavry-gateway";
    const GITHUB: &str = "https://api.github.example/mcp";
    const JIRA: &str = "https://jira.example/mcp";
    const VAULTED: &str = "https://vaulted.example/mcp";
    const K8S_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
    const ALICE_SA: &str = "system:serviceaccount:agents:alice";
    const SHARED_SA: &str = "system:serviceaccount:agents:shared";
    const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

    struct Fixture {
        _dir: tempfile::TempDir,
        state: AppState,
        k8s_rsa: TestClientKey,
        k8s_ec: TestClientKey,
        client_keys: BTreeMap<&'static str, TestClientKey>,
    }

    fn config_text() -> String {
        format!(
            r#"
[token_exchange]
max_delegation_depth = 2

[secrets.vault]
address = "http://127.0.0.1:9"
token_env = "TEST_VAULT_TOKEN"

[kubernetes]
issuer = "{K8S_ISSUER}"
jwks_file = "k8s/jwks.json"
audiences = ["behavry", "other"]

[[upstreams]]
name = "github"
resource = "{GITHUB}"
credential = "exchange"
scopes = ["mcp:read", "repo"]
token_ttl_secs = 120
claims = {{ tenant = "acme" }}

[[upstreams]]
name = "jira"
resource = "{JIRA}"
credential = "exchange"

[[upstreams]]
name = "vaulted"
resource = "{VAULTED}"
credential = "secret"
secret = "vault:kv/upstream/vaulted#token"
"#
        )
    }

    fn enrollment(id: &str, may_act: &[&str], servers: &[&str]) -> AgentEnrollment {
        AgentEnrollment {
            scopes: vec!["mcp".to_owned(), "mcp:read".to_owned(), "repo".to_owned()],
            may_act: may_act.iter().map(|s| (*s).to_owned()).collect(),
            servers: servers
                .iter()
                .map(|s| ((*s).to_owned(), ServerGrant::default()))
                .collect(),
            ..AgentEnrollment::new(id)
        }
    }

    impl Fixture {
        /// `alice` (grant for github and vaulted, may be acted for by orch, planner and worker,
        /// service account `alice`), `orch`, `planner`, `worker`, `bob` and `carol` (both on
        /// the shared service account).
        async fn new() -> Fixture {
            Fixture::with_config(&config_text()).await
        }

        async fn with_config(text: &str) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let k8s_rsa = TestClientKey::rsa();
            let k8s_ec = TestClientKey::ec();
            std::fs::create_dir_all(dir.path().join("k8s")).unwrap();
            let mut rsa_jwk = k8s_rsa.public_jwk("k8s-rsa");
            rsa_jwk["x5c"] = json!(["MIIB..."]);
            let jwks = json!({"keys": [rsa_jwk, k8s_ec.public_jwk("k8s-ec")]});
            std::fs::write(dir.path().join("k8s/jwks.json"), jwks.to_string()).unwrap();
            // Upstreams need the filter's proxy credential (`POST /v1/credentials`).
            let env = HashMap::from([
                (
                    "BEHAVRY_AUTHZ_PROXY_TOKEN".to_owned(),
                    "proxy-credential-0123456789abcdef0123456789".to_owned(),
                ),
                ("TEST_VAULT_TOKEN".to_owned(), "vault-token".to_owned()),
            ]);
            let config =
                Config::from_toml_str(text, &dir.path().join("authz.toml"), dir.path(), &env)
                    .unwrap();
            let mut state = test_state(dir.path(), false).await;
            state.authorization_server = Arc::new(AuthorizationServer::new(&config, test_key()));
            let registry = state.directory.registry();
            let mut client_keys = BTreeMap::new();
            let agents = [
                enrollment(
                    "alice",
                    &["orch", "planner", "worker"],
                    &["github", "vaulted"],
                ),
                enrollment("orch", &[], &[]),
                enrollment("planner", &[], &[]),
                enrollment("worker", &[], &[]),
                enrollment("bob", &[], &[]),
                enrollment("carol", &[], &[]),
            ];
            for mut agent in agents {
                let id: &'static str = match agent.id.as_str() {
                    "alice" => "alice",
                    "orch" => "orch",
                    "planner" => "planner",
                    "worker" => "worker",
                    "bob" => "bob",
                    _ => "carol",
                };
                match id {
                    "alice" => agent.service_accounts = vec![ALICE_SA.to_owned()],
                    "bob" | "carol" => agent.service_accounts = vec![SHARED_SA.to_owned()],
                    _ => {}
                }
                agent.validate("").unwrap();
                let key = TestClientKey::ec();
                let public = ClientKey::from_value(key.public_jwk("k1")).unwrap();
                registry.enroll(&agent, &[public], true).await.unwrap();
                client_keys.insert(id, key);
            }
            state.directory.refresh().await.unwrap();
            Fixture {
                _dir: dir,
                state,
                k8s_rsa,
                k8s_ec,
                client_keys,
            }
        }

        fn server(&self) -> &AuthorizationServer {
            &self.state.authorization_server
        }

        /// The agent's own gateway token, as the token endpoint issues it.
        fn token_of(&self, agent: &str) -> String {
            self.delegated(agent, &[], "mcp mcp:read repo")
        }

        /// A gateway token for `subject` with the chain `chain` (current actor first).
        fn delegated(&self, subject: &str, chain: &[&str], scope: &str) -> String {
            let chain: Vec<String> = chain.iter().map(|s| (*s).to_owned()).collect();
            let now = unix_now().unwrap();
            let grant = DelegatedGrant {
                subject,
                chain: &chain,
                scope,
                subject_exp: now + 600,
                upstream: None,
            };
            mint_delegated(self.server(), &grant, now).unwrap().0
        }

        /// A token signed by the sidecar's key with any header and claims.
        fn raw(&self, header: Value, claims: Value) -> String {
            let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
            let input = format!("{}.{}", b64(&header), b64(&claims));
            let signature = self.server().key.sign_rs256(input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
        }

        fn raw_header(&self) -> Value {
            json!({"alg": "RS256", "typ": "at+jwt", "kid": self.server().key.kid()})
        }

        fn raw_claims(&self, sub: &str) -> Value {
            let now = unix_now().unwrap();
            json!({
                "iss": "behavry-authz", "sub": sub, "aud": GATEWAY, "exp": now + 300,
                "iat": now, "nbf": now, "jti": format!("raw-{now}-{sub}"), "client_id": sub,
                "scope": "mcp mcp:read repo",
            })
        }

        /// A Kubernetes service-account token signed by `key` (kid `kid`).
        fn sa_token(
            &self,
            key: &TestClientKey,
            kid: &str,
            edit: impl FnOnce(&mut Value),
        ) -> String {
            let now = unix_now().unwrap();
            let mut claims = json!({
                "iss": K8S_ISSUER, "sub": ALICE_SA, "aud": ["https://kubernetes.default.svc", "behavry"],
                "exp": now + 3600, "iat": now, "nbf": now,
                "kubernetes.io": {"namespace": "agents", "serviceaccount": {"name": "alice"}},
            });
            edit(&mut claims);
            sign(key, &json!({"alg": key.alg(), "kid": kid}), &claims)
        }

        fn assertion(&self, agent: &'static str) -> String {
            let now = unix_now().unwrap();
            let mut claims = good_claims(agent, now);
            claims["aud"] = self.server().token_endpoint().into();
            claims["jti"] = format!(
                "{:x}",
                rsa::rand_core::RngCore::next_u64(&mut rsa::rand_core::OsRng)
            )
            .into();
            let key = &self.client_keys[agent];
            sign(key, &json!({"alg": key.alg(), "kid": "k1"}), &claims)
        }

        async fn post_sa(&self, token: String) -> (StatusCode, Value) {
            self.post(&[
                ("subject_token", &token),
                ("subject_token_type", JWT_TOKEN_TYPE),
            ])
            .await
        }

        async fn post(&self, pairs: &[(&str, &str)]) -> (StatusCode, Value) {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", GRANT);
            form.extend_pairs(pairs);
            let request = Request::post(TOKEN_PATH)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form.finish()))
                .unwrap();
            let (status, headers, json) = call(&self.state, request).await;
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            (status, json)
        }

        /// Exchange `subject` (our access token) with optional `actor`, plus `extra` pairs.
        async fn exchange(
            &self,
            subject: &str,
            actor: Option<&str>,
            extra: &[(&str, &str)],
        ) -> (StatusCode, Value) {
            let mut pairs = vec![
                ("subject_token", subject),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ];
            if let Some(actor) = actor {
                pairs.push(("actor_token", actor));
                pairs.push(("actor_token_type", ACCESS_TOKEN_TYPE));
            }
            pairs.extend_from_slice(extra);
            self.post(&pairs).await
        }

        /// The issued token's claims, verified independently (jsonwebtoken, JWKS key) for `aud`.
        fn claims(&self, json: &Value, aud: &str) -> Value {
            assert_eq!(json["issued_token_type"], ACCESS_TOKEN_TYPE, "{json}");
            assert_eq!(json["token_type"], "Bearer");
            let token = json["access_token"].as_str().unwrap();
            let jwk = &self.state.jwks.keys[0];
            let key = DecodingKey::from_rsa_components(&jwk.n, &jwk.e).unwrap();
            let mut validation = Validation::new(Algorithm::RS256);
            validation.set_issuer(&["behavry-authz"]);
            validation.set_audience(&[aud]);
            validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
            let claims = decode::<Value>(token, &key, &validation).unwrap().claims;
            assert_eq!(
                json["expires_in"].as_u64().unwrap(),
                claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap()
            );
            assert_eq!(json["scope"], claims["scope"]);
            claims
        }
    }

    /// Asserts a refusal: status 400, `code`, and a description holding `needle`.
    fn refused(result: &(StatusCode, Value), code: &str, needle: &str) {
        let (status, json) = result;
        assert_eq!(*status, StatusCode::BAD_REQUEST, "{json}");
        assert_eq!(json["error"], code, "{json}");
        let description = json["error_description"].as_str().unwrap();
        assert!(
            description.contains(needle),
            "{description} (wanted {needle:?})"
        );
    }

    #[tokio::test]
    async fn plain_exchange_to_an_upstream_narrows_audience_scope_and_lifetime() {
        let fx = Fixture::new().await;
        let alice = fx.token_of("alice");
        let (status, json) = fx.exchange(&alice, None, &[("resource", GITHUB)]).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let claims = fx.claims(&json, GITHUB);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["client_id"], "alice");
        assert!(claims.get("act").is_none());
        // The upstream's scopes intersect the subject's; its ttl and extra claims apply.
        assert_eq!(claims["scope"], "mcp:read repo");
        assert_eq!(json["expires_in"], 120);
        assert_eq!(claims["tenant"], "acme");

        // `audience` names a target too; a narrower scope is honoured.
        let (status, json) = fx
            .exchange(&alice, None, &[("audience", GITHUB), ("scope", "repo")])
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(fx.claims(&json, GITHUB)["scope"], "repo");

        // No target: the gateway, with the default ttl and the subject's scopes.
        let (status, json) = fx
            .exchange(&alice, None, &[("requested_token_type", ACCESS_TOKEN_TYPE)])
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let claims = fx.claims(&json, GATEWAY);
        assert_eq!(claims["scope"], "mcp mcp:read repo");
        assert!(claims.get("tenant").is_none());
        // The subject token (300 s) bounds it.
        assert!(
            (298..=300).contains(&json["expires_in"].as_u64().unwrap()),
            "{json}"
        );
    }

    #[tokio::test]
    async fn delegation_one_and_two_levels_nests_act() {
        let fx = Fixture::new().await;
        let (status, json) = fx
            .exchange(&fx.token_of("alice"), Some(&fx.token_of("orch")), &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let claims = fx.claims(&json, GATEWAY);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["client_id"], "orch");
        assert_eq!(claims["act"], json!({"sub": "orch"}));

        // planner acts on the delegated token: RFC 8693 §4.1 nesting, current actor outermost.
        let once = json["access_token"].as_str().unwrap().to_owned();
        let (status, json) = fx
            .exchange(
                &once,
                Some(&fx.token_of("planner")),
                &[("resource", GITHUB), ("scope", "mcp:read")],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let claims = fx.claims(&json, GITHUB);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["client_id"], "planner");
        assert_eq!(
            claims["act"],
            json!({"sub": "planner", "act": {"sub": "orch"}})
        );
        assert_eq!(claims["scope"], "mcp:read");

        // With client authentication, the authenticated client must be the actor.
        let actor = fx.token_of("orch");
        let assertion = fx.assertion("orch");
        let auth = [
            ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
        ];
        let (status, json) = fx
            .exchange(&fx.token_of("alice"), Some(&actor), &auth)
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let assertion = fx.assertion("planner");
        let auth = [
            ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
        ];
        let result = fx
            .exchange(&fx.token_of("alice"), Some(&actor), &auth)
            .await;
        refused(&result, "invalid_request", "is not the actor");
        // A bad assertion is still invalid_client.
        let auth = [
            ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
            ("client_assertion", "garbage"),
        ];
        let (status, json) = fx
            .exchange(&fx.token_of("alice"), Some(&actor), &auth)
            .await;
        assert_eq!(
            (status, json["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client"))
        );
        // HTTP Basic's client_secret stays refused.
        let result = fx
            .exchange(&fx.token_of("alice"), None, &[("client_secret", "s")])
            .await;
        refused(&result, "invalid_request", "private_key_jwt");
    }

    #[tokio::test]
    async fn may_act_is_enforced_from_the_enrollment_and_the_claim() {
        let fx = Fixture::new().await;
        // Swapped roles: orch's enrollment lists no one, so alice cannot act for orch.
        let result = fx
            .exchange(&fx.token_of("orch"), Some(&fx.token_of("alice")), &[])
            .await;
        refused(&result, "invalid_request", "may not act for `orch`");
        // bob is not in alice's may_act.
        let result = fx
            .exchange(&fx.token_of("alice"), Some(&fx.token_of("bob")), &[])
            .await;
        refused(&result, "invalid_request", "may not act for `alice`");
        // A subject token whose may_act claim names planner: orch is refused, planner allowed.
        let mut claims = fx.raw_claims("alice");
        claims["may_act"] = json!({"sub": "planner"});
        let subject = fx.raw(fx.raw_header(), claims);
        let result = fx.exchange(&subject, Some(&fx.token_of("orch")), &[]).await;
        refused(&result, "invalid_request", "may_act does not name `orch`");
        let (status, json) = fx
            .exchange(&subject, Some(&fx.token_of("planner")), &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        // A delegated token is not an actor token.
        let delegated = fx.delegated("bob", &["orch"], "mcp");
        let result = fx
            .exchange(&fx.token_of("alice"), Some(&delegated), &[])
            .await;
        refused(&result, "invalid_request", "actor's own token");
    }

    #[tokio::test]
    async fn an_exchange_without_actor_keeps_act() {
        let fx = Fixture::new().await;
        let delegated = fx.delegated("alice", &["orch"], "mcp mcp:read");
        let (status, json) = fx.exchange(&delegated, None, &[("scope", "mcp")]).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let claims = fx.claims(&json, GATEWAY);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["act"], json!({"sub": "orch"}));
        assert_eq!(claims["client_id"], "orch");
        assert_eq!(claims["scope"], "mcp");
    }

    #[tokio::test]
    async fn audience_escalation_is_refused() {
        let fx = Fixture::new().await;
        let alice = fx.token_of("alice");
        let result = fx
            .exchange(&alice, None, &[("resource", "https://evil.example/mcp")])
            .await;
        refused(&result, "invalid_target", "not a known resource");
        // jira is configured but alice has no grant for it.
        let result = fx.exchange(&alice, None, &[("resource", JIRA)]).await;
        refused(&result, "invalid_target", "no grant for upstream `jira`");
        // An upstream that takes a static secret gets no exchanged token.
        let result = fx.exchange(&alice, None, &[("resource", VAULTED)]).await;
        refused(&result, "invalid_target", "static secret");
        // Two targets.
        let result = fx
            .exchange(&alice, None, &[("resource", GITHUB), ("resource", GATEWAY)])
            .await;
        refused(&result, "invalid_target", "exactly one target");
        let result = fx
            .exchange(&alice, None, &[("resource", GITHUB), ("audience", GATEWAY)])
            .await;
        refused(&result, "invalid_target", "exactly one target");
        // A token minted for an upstream cannot be exchanged back (RFC 8693 §5).
        let (status, json) = fx.exchange(&alice, None, &[("resource", GITHUB)]).await;
        assert_eq!(status, StatusCode::OK);
        let github_token = json["access_token"].as_str().unwrap();
        let result = fx.exchange(github_token, None, &[]).await;
        refused(
            &result,
            "invalid_request",
            "is not for audience `behavry-gateway`",
        );
        let result = fx
            .exchange(&fx.token_of("alice"), Some(github_token), &[])
            .await;
        refused(
            &result,
            "invalid_request",
            "actor_token is not for audience",
        );
    }

    #[tokio::test]
    async fn scope_escalation_is_refused() {
        let fx = Fixture::new().await;
        let narrow = fx.delegated("alice", &[], "mcp:read");
        for scope in ["mcp", "mcp:read admin", ""] {
            let result = fx.exchange(&narrow, None, &[("scope", scope)]).await;
            assert_eq!(
                result.1["error"], "invalid_scope",
                "{scope:?}: {}",
                result.1
            );
        }
        // Nothing of the subject's scopes is allowed upstream.
        let mcp_only = fx.delegated("alice", &[], "mcp");
        let result = fx.exchange(&mcp_only, None, &[("resource", GITHUB)]).await;
        refused(&result, "invalid_scope", "allowed for upstream `github`");
    }

    #[tokio::test]
    async fn lifetime_never_exceeds_the_subject_token() {
        let fx = Fixture::new().await;
        let mut claims = fx.raw_claims("alice");
        claims["exp"] = (unix_now().unwrap() + 40).into();
        let subject = fx.raw(fx.raw_header(), claims);
        let (status, json) = fx.exchange(&subject, None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert!(json["expires_in"].as_u64().unwrap() <= 40, "{json}");
        // The actor token bounds it too.
        let mut claims = fx.raw_claims("orch");
        claims["exp"] = (unix_now().unwrap() + 20).into();
        let actor = fx.raw(fx.raw_header(), claims);
        let (status, json) = fx.exchange(&fx.token_of("alice"), Some(&actor), &[]).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert!(json["expires_in"].as_u64().unwrap() <= 20, "{json}");
    }

    #[tokio::test]
    async fn invalid_subject_tokens_are_invalid_request() {
        let fx = Fixture::new().await;
        let now = unix_now().unwrap();
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut claims = fx.raw_claims("alice");
            edit(&mut claims);
            fx.raw(fx.raw_header(), claims)
        };
        let mut wrong_typ = fx.raw_header();
        wrong_typ["typ"] = "JWT".into();
        let mut unknown_kid = fx.raw_header();
        unknown_kid["kid"] = "other".into();
        let tampered = {
            let token = fx.token_of("alice");
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let mut claims = fx.raw_claims("alice");
            claims["scope"] = "admin".into();
            parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
            parts.join(".")
        };
        let cases = [
            (
                "expired",
                with(&|c| c["exp"] = (now - 60).into()),
                "expired",
            ),
            (
                "future nbf",
                with(&|c| c["nbf"] = (now + 600).into()),
                "not valid yet",
            ),
            (
                "wrong iss",
                with(&|c| c["iss"] = "someone".into()),
                "not issued by",
            ),
            (
                "no exp",
                with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                "`exp`",
            ),
            (
                "wrong typ",
                fx.raw(wrong_typ, fx.raw_claims("alice")),
                "typ must be at+jwt",
            ),
            (
                "unknown kid",
                fx.raw(unknown_kid, fx.raw_claims("alice")),
                "unknown signing key",
            ),
            ("tampered", tampered, "invalid signature"),
            (
                "unknown agent",
                with(&|c| c["sub"] = "ghost".into()),
                "`ghost`",
            ),
            ("not a jwt", "garbage".to_owned(), "malformed"),
        ];
        for (case, token, needle) in cases {
            let result = fx.exchange(&token, None, &[]).await;
            refused(&result, "invalid_request", needle);
            let description = result.1["error_description"].as_str().unwrap();
            assert!(
                description.starts_with("subject_token"),
                "{case}: {description}"
            );
            assert!(!description.contains(&token), "{case}: the token is echoed");
        }
    }

    #[tokio::test]
    async fn disabled_and_revoked_are_refused() {
        let fx = Fixture::new().await;
        let alice = fx.token_of("alice");
        let orch = fx.token_of("orch");
        // Revoked jti of the subject token.
        let payload = URL_SAFE_NO_PAD
            .decode(alice.split('.').nth(1).unwrap())
            .unwrap();
        let jti = serde_json::from_slice::<Value>(&payload).unwrap()["jti"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, _) = fx.exchange(&alice, None, &[]).await;
        assert_eq!(status, StatusCode::OK);
        fx.state
            .revocations
            .revoke(&Revocation::Token {
                token_id: jti,
                expires_at: i64::try_from(unix_now().unwrap()).unwrap() + 600,
            })
            .await
            .unwrap();
        let result = fx.exchange(&alice, None, &[]).await;
        refused(&result, "invalid_request", "revoked");
        // A disabled actor: its token is refused; a disabled agent inside `act` too.
        let delegated = fx.delegated("alice", &["orch"], "mcp");
        let registry = fx.state.directory.registry();
        registry.set_enabled("orch", false).await.unwrap();
        fx.state.directory.refresh().await.unwrap();
        let result = fx.exchange(&fx.token_of("alice"), Some(&orch), &[]).await;
        refused(
            &result,
            "invalid_request",
            "`orch`, which is not enrolled or is disabled",
        );
        let result = fx.exchange(&delegated, None, &[]).await;
        refused(
            &result,
            "invalid_request",
            "`orch`, which is not enrolled or is disabled",
        );
        // A disabled subject.
        registry.set_enabled("alice", false).await.unwrap();
        fx.state.directory.refresh().await.unwrap();
        let result = fx.exchange(&fx.token_of("alice"), None, &[]).await;
        refused(
            &result,
            "invalid_request",
            "`alice`, which is not enrolled or is disabled",
        );
        // An agent-level revocation.
        fx.state
            .revocations
            .revoke(&Revocation::Agent {
                agent: "planner".to_owned(),
                expires_at: i64::try_from(unix_now().unwrap()).unwrap() + 600,
            })
            .await
            .unwrap();
        let result = fx.exchange(&fx.token_of("planner"), None, &[]).await;
        refused(&result, "invalid_request", "revoked");
    }

    #[tokio::test]
    async fn chains_too_deep_and_cycles_are_refused() {
        let fx = Fixture::new().await;
        // max_delegation_depth = 2: [planner, orch] is fine, [worker, planner, orch] is not.
        let two = fx.delegated("alice", &["planner", "orch"], "mcp");
        let result = fx.exchange(&two, Some(&fx.token_of("worker")), &[]).await;
        refused(&result, "invalid_request", "exceeds max_delegation_depth 2");
        // orch is already in the chain.
        let once = fx.delegated("alice", &["orch"], "mcp");
        let result = fx.exchange(&once, Some(&fx.token_of("orch")), &[]).await;
        refused(&result, "invalid_request", "delegation cycle: `orch`");
        // The subject acting for itself.
        let result = fx
            .exchange(&fx.token_of("alice"), Some(&fx.token_of("alice")), &[])
            .await;
        refused(&result, "invalid_request", "delegation cycle: `alice`");
        // mint_delegated checks on its own too (for POST /v1/credentials).
        let now = unix_now().unwrap();
        let chain = vec!["alice".to_owned()];
        let grant = DelegatedGrant {
            subject: "alice",
            chain: &chain,
            scope: "mcp",
            subject_exp: now + 60,
            upstream: None,
        };
        assert!(matches!(
            mint_delegated(fx.server(), &grant, now),
            Err(DelegationError::Cycle(ref id)) if id == "alice"
        ));
        let expired = DelegatedGrant {
            chain: &[],
            subject_exp: now,
            ..grant
        };
        assert!(matches!(
            mint_delegated(fx.server(), &expired, now),
            Err(DelegationError::SubjectExpired)
        ));
    }

    #[tokio::test]
    async fn malformed_exchange_requests() {
        let fx = Fixture::new().await;
        let alice = fx.token_of("alice");
        let orch = fx.token_of("orch");
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![("subject_token", &alice)],
                "subject_token_type are required",
            ),
            (
                vec![("subject_token_type", ACCESS_TOKEN_TYPE)],
                "are required",
            ),
            (
                vec![
                    ("subject_token", &alice),
                    ("subject_token_type", ACCESS_TOKEN_TYPE),
                    ("actor_token", &orch),
                ],
                "actor_token_type is required",
            ),
            (
                vec![
                    ("subject_token", &alice),
                    ("subject_token_type", ACCESS_TOKEN_TYPE),
                    ("actor_token_type", ACCESS_TOKEN_TYPE),
                ],
                "must not be sent without actor_token",
            ),
            (
                vec![
                    ("subject_token", &alice),
                    ("subject_token_type", ACCESS_TOKEN_TYPE),
                    (
                        "requested_token_type",
                        "urn:ietf:params:oauth:token-type:refresh_token",
                    ),
                ],
                "requested_token_type",
            ),
            (
                vec![
                    ("subject_token", &alice),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:saml2",
                    ),
                ],
                "subject_token_type",
            ),
            (
                vec![
                    ("subject_token", &alice),
                    ("subject_token", &alice),
                    ("subject_token_type", ACCESS_TOKEN_TYPE),
                ],
                "repeated",
            ),
        ];
        for (pairs, needle) in cases {
            let result = fx.post(&pairs).await;
            refused(&result, "invalid_request", needle);
        }
    }

    #[tokio::test]
    async fn kubernetes_service_account_tokens_map_to_their_agent() {
        let fx = Fixture::new().await;
        for (key, kid) in [(&fx.k8s_rsa, "k8s-rsa"), (&fx.k8s_ec, "k8s-ec")] {
            let token = fx.sa_token(key, kid, |_| {});
            let (status, json) = fx
                .post(&[
                    ("subject_token", &token),
                    ("subject_token_type", JWT_TOKEN_TYPE),
                ])
                .await;
            assert_eq!(status, StatusCode::OK, "{kid}: {json}");
            let claims = fx.claims(&json, GATEWAY);
            assert_eq!(claims["sub"], "alice");
            assert_eq!(claims["client_id"], "alice");
            assert!(claims.get("act").is_none());
            assert_eq!(claims["scope"], "mcp mcp:read repo");
            // The result is alice's own token: it can be exchanged further.
            let issued = json["access_token"].as_str().unwrap();
            let (status, json) = fx.exchange(issued, None, &[("resource", GITHUB)]).await;
            assert_eq!(status, StatusCode::OK, "{json}");
        }
        // A single string aud is accepted too.
        let token = fx.sa_token(&fx.k8s_ec, "k8s-ec", |c| c["aud"] = "other".into());
        let (status, json) = fx
            .post(&[
                ("subject_token", &token),
                ("subject_token_type", JWT_TOKEN_TYPE),
            ])
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }

    #[tokio::test]
    async fn kubernetes_refusals() {
        let fx = Fixture::new().await;
        let stranger = TestClientKey::ec();
        let now = unix_now().unwrap();
        let ec = &fx.k8s_ec;
        let cases = [
            (
                fx.sa_token(&stranger, "k8s-ec", |_| {}),
                "invalid_request",
                "invalid signature",
            ),
            (
                fx.sa_token(ec, "nope", |_| {}),
                "invalid_request",
                "unknown key",
            ),
            (
                fx.sa_token(ec, "k8s-ec", |c| c["iss"] = "https://other".into()),
                "invalid_request",
                "issuer",
            ),
            (
                fx.sa_token(ec, "k8s-ec", |c| {
                    c["aud"] = json!(["https://kubernetes.default.svc"])
                }),
                "invalid_request",
                "audiences",
            ),
            (
                fx.sa_token(ec, "k8s-ec", |c| c["exp"] = (now - 120).into()),
                "invalid_request",
                "expired",
            ),
            (
                fx.sa_token(ec, "k8s-ec", |c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                "invalid_request",
                "`exp`",
            ),
            (
                fx.sa_token(ec, "k8s-ec", |c| c["iat"] = (now + 600).into()),
                "invalid_request",
                "not valid yet",
            ),
            (
                fx.sa_token(ec, "k8s-ec", |c| c["sub"] = "alice".into()),
                "invalid_request",
                "`sub`",
            ),
            (
                fx.sa_token(ec, "k8s-ec", |c| {
                    c["sub"] = "system:serviceaccount:agents:nobody".into()
                }),
                "invalid_grant",
                "not mapped to any enabled agent",
            ),
            (
                fx.sa_token(ec, "k8s-ec", |c| c["sub"] = SHARED_SA.into()),
                "invalid_grant",
                "mapped to 2 agents",
            ),
            // RFC 8725 §3.1: the RSA key does not verify an ES256 signature, and vice versa.
            (
                sign(
                    &fx.k8s_rsa,
                    &json!({"alg": "RS256", "kid": "k8s-ec"}),
                    &json!({"iss": K8S_ISSUER}),
                ),
                "invalid_request",
                "unknown key",
            ),
        ];
        for (token, code, needle) in cases {
            let result = fx.post_sa(token).await;
            refused(&result, code, needle);
        }
        // Our own access token is not a Kubernetes token.
        let result = fx.post_sa(fx.token_of("alice")).await;
        refused(&result, "invalid_request", "service-account token");
        // A Kubernetes token cannot be an actor token, nor come with one.
        let sa = fx.sa_token(ec, "k8s-ec", |_| {});
        let result = fx
            .post(&[
                ("subject_token", &fx.token_of("alice")),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("actor_token", &sa),
                ("actor_token_type", JWT_TOKEN_TYPE),
            ])
            .await;
        refused(&result, "invalid_request", "cannot be an actor_token");
        let result = fx
            .post(&[
                ("subject_token", &sa),
                ("subject_token_type", JWT_TOKEN_TYPE),
                ("actor_token", &fx.token_of("orch")),
                ("actor_token_type", ACCESS_TOKEN_TYPE),
            ])
            .await;
        refused(&result, "invalid_request", "send no actor_token");
        // A disabled agent's service account maps to nothing.
        fx.state
            .directory
            .registry()
            .set_enabled("alice", false)
            .await
            .unwrap();
        fx.state.directory.refresh().await.unwrap();
        let result = fx.post_sa(fx.sa_token(ec, "k8s-ec", |_| {})).await;
        refused(&result, "invalid_grant", "not mapped");
    }

    #[tokio::test]
    async fn kubernetes_tokens_are_refused_when_not_configured() {
        let text = config_text();
        let without = &text[..text.find("[kubernetes]").unwrap()];
        let upstreams = &text[text.find("[[upstreams]]").unwrap()..];
        let fx = Fixture::with_config(&format!("{without}{upstreams}")).await;
        let token = fx.sa_token(&fx.k8s_ec, "k8s-ec", |_| {});
        let result = fx
            .post(&[
                ("subject_token", &token),
                ("subject_token_type", JWT_TOKEN_TYPE),
            ])
            .await;
        refused(&result, "invalid_request", "configure [kubernetes]");
    }

    #[tokio::test]
    async fn config_sections_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            Config::from_toml_str(
                text,
                &dir.path().join("authz.toml"),
                dir.path(),
                &HashMap::new(),
            )
        };
        for depth in [0, 9] {
            let err =
                load(&format!("[token_exchange]\nmax_delegation_depth = {depth}")).unwrap_err();
            assert!(err.to_string().contains("max_delegation_depth"), "{err}");
        }
        assert_eq!(load("").unwrap().token_exchange.max_delegation_depth, 3);
        assert!(load("").unwrap().kubernetes.is_none());
        let section = |jwks: &str, audiences: &str| {
            format!(
                "[kubernetes]\nissuer = \"{K8S_ISSUER}\"\njwks_file = \"{jwks}\"\naudiences = {audiences}\n"
            )
        };
        let err = load(&section("missing.json", "[\"behavry\"]")).unwrap_err();
        assert!(err.to_string().contains("kubernetes.jwks_file"), "{err}");
        std::fs::write(dir.path().join("empty.json"), "{\"keys\": []}").unwrap();
        let err = load(&section("empty.json", "[\"behavry\"]")).unwrap_err();
        assert!(err.to_string().contains("no key"), "{err}");
        let mut private = TestClientKey::ec().public_jwk("k");
        private["d"] = "AAAA".into();
        std::fs::write(
            dir.path().join("private.json"),
            json!({"keys": [private]}).to_string(),
        )
        .unwrap();
        let err = load(&section("private.json", "[\"behavry\"]")).unwrap_err();
        assert!(err.to_string().contains("private key material"), "{err}");
        let good = json!({"keys": [TestClientKey::ec().public_jwk("k")]});
        std::fs::write(dir.path().join("good.json"), good.to_string()).unwrap();
        let err = load(&section("good.json", "[]")).unwrap_err();
        assert!(err.to_string().contains("kubernetes.audiences"), "{err}");
        let config = load(&section("good.json", "[\"behavry\"]")).unwrap();
        assert_eq!(config.kubernetes.unwrap().keys.len(), 1);
        // Enrollment fields.
        let err = load("[[agents]]\nid = \"a\"\nservice_accounts = [\"default:sa\"]").unwrap_err();
        assert!(err.to_string().contains("service_accounts[0]"), "{err}");
        let err = load("[[agents]]\nid = \"a\"\nmay_act = [\"a\"]").unwrap_err();
        assert!(err.to_string().contains("may_act[0]"), "{err}");
        let config =
            load("[[agents]]\nid = \"a\"\nmay_act = [\"b\"]\nclients = [\"claude-code\"]").unwrap();
        assert_eq!(config.agents[0].may_act, ["b"]);
        assert_eq!(config.agents[0].clients, ["claude-code"]);
    }
}
