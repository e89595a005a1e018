//! Minting agent access tokens: RS256 JWTs in the RFC 9068 access-token profile.
//!
//! Pure apart from the clock and the random token id. The token endpoint (`POST /oauth/token`)
//! issues them with [`sign_access_token`]; the `behavry token mint` command calls [`mint_token`]
//! offline with the sidecar's config and key (agents of the config only). Envoy's
//! `jwt_authn` verifies these tokens against `/.well-known/jwks.json` and checks `iss`, `aud`,
//! `exp` and `nbf`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::config::{Config, MAX_TOKEN_TTL_SECS};
use crate::signing_key::{KeyError, SigningKey};

/// The `scope` of tokens minted offline by [`mint_token`]: access to MCP through the gateway.
pub const TOKEN_SCOPE: &str = crate::config::DEFAULT_AGENT_SCOPE;
/// JOSE `typ` of an access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Bytes of randomness in a `jti` (RFC 7519 §4.1.7 asks for a negligible collision chance).
const JTI_RANDOM_BYTES: usize = 16;

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The agent is not in the config's `[[agents]]`.
    #[error("agent `{0}` is not enrolled in the authz config")]
    UnknownAgent(String),
    /// The asked lifetime is out of range.
    #[error("token ttl must be between 1 and {MAX_TOKEN_TTL_SECS} seconds, got {0}")]
    InvalidTtl(u64),
    /// The system clock is before 1970.
    #[error("system clock is before the Unix epoch")]
    Clock,
    /// Header or claims could not be serialized.
    #[error("cannot encode token: {0}")]
    Encode(#[from] serde_json::Error),
    /// The key could not sign.
    #[error(transparent)]
    Sign(#[from] KeyError),
}

/// JOSE header of an agent token (RFC 7515 §4.1, RFC 9068 §2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenHeader {
    /// Always `RS256`.
    pub alg: String,
    /// Always `at+jwt`.
    pub typ: String,
    /// Key id of the signing key (RFC 7638 thumbprint), found in the JWKS.
    pub kid: String,
}

/// Claims of an agent token (RFC 7519 §4.1, RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer: the config's `issuer`.
    pub iss: String,
    /// Subject: the agent id.
    pub sub: String,
    /// Audience: the config's `audience`.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Not before, seconds since the epoch (= `iat`).
    pub nbf: u64,
    /// Unique token id, base64url of 16 random bytes.
    pub jti: String,
    /// The OAuth client that asked for the token (RFC 9068 §2.2, RFC 8693 §4.3): the agent
    /// itself, or the actor of a delegation.
    pub client_id: String,
    /// Space-separated scopes (RFC 9068 §2.2.3).
    pub scope: String,
    /// The acting party of a delegated token (RFC 8693 §4.1), the current actor outermost,
    /// earlier actors nested inside. Absent on a token the agent holds for itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

/// RFC 8693 §4.1 `act`: who acts for the token's subject. A nested `act` names the actor
/// before this one; only `sub` of the outermost actor is the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The acting agent's id.
    pub sub: String,
    /// The prior actor in the chain, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The chain's agent ids, current actor first.
    pub fn chain(&self) -> Vec<&str> {
        let mut chain = vec![self.sub.as_str()];
        let mut next = self.act.as_deref();
        while let Some(actor) = next {
            chain.push(actor.sub.as_str());
            next = actor.act.as_deref();
        }
        chain
    }

    /// Number of actors in the chain (1 for an actor with no prior actor).
    pub fn depth(&self) -> usize {
        self.chain().len()
    }
}

/// What one access token is issued for.
#[derive(Debug, Clone, Copy)]
pub struct AccessTokenSpec<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`: the protected resource (the gateway).
    pub audience: &'a str,
    /// `sub`: the agent.
    pub agent_id: &'a str,
    /// `client_id`: who asked for the token (the agent, or the actor of a delegation).
    pub client_id: &'a str,
    /// `act`: the delegation chain, if the token is delegated (RFC 8693 §4.1).
    pub actor: Option<&'a Actor>,
    /// `scope`, space-separated.
    pub scope: &'a str,
    /// Lifetime, `1..=MAX_TOKEN_TTL_SECS`.
    pub ttl_secs: u64,
    /// `iat` and `nbf`, seconds since the epoch.
    pub issued_at: u64,
}

/// Sign the RFC 9068 access token described by `spec`; answers the compact JWS and its claims.
pub fn sign_access_token(
    key: &SigningKey,
    spec: &AccessTokenSpec<'_>,
) -> Result<(String, AccessTokenClaims), TokenError> {
    // RFC 6750 §5.3: bearer tokens are short-lived; the config and the minter cap the lifetime.
    if spec.ttl_secs == 0 || spec.ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(TokenError::InvalidTtl(spec.ttl_secs));
    }
    // RFC 9068 §2.1: `typ` is `at+jwt`, so an access token cannot pass for another kind of JWT.
    let header = TokenHeader {
        alg: "RS256".to_owned(),
        typ: ACCESS_TOKEN_TYP.to_owned(),
        kid: key.kid().to_owned(),
    };
    // RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti are required; scope per §2.2.3.
    let claims = AccessTokenClaims {
        iss: spec.issuer.to_owned(),
        sub: spec.agent_id.to_owned(),
        aud: spec.audience.to_owned(),
        exp: spec.issued_at.saturating_add(spec.ttl_secs),
        iat: spec.issued_at,
        nbf: spec.issued_at,
        jti: random_jti(),
        client_id: spec.client_id.to_owned(),
        scope: spec.scope.to_owned(),
        act: spec.actor.cloned(),
    };
    // RFC 7515 §7.1 (compact serialization): the signature covers
    // BASE64URL(header) || '.' || BASE64URL(payload).
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
    );
    let signature = key.sign_rs256(signing_input.as_bytes())?;
    Ok((
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)),
        claims,
    ))
}

/// Seconds since the epoch, now.
pub fn unix_now() -> Result<u64, TokenError> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TokenError::Clock)?
        .as_secs())
}

/// Mint a token for `agent_id` with lifetime `ttl_secs` (default: the config's `token_ttl_secs`),
/// offline (`behavry token mint`).
///
/// Refuses agents that are not in the config's `[[agents]]`, so a token never names an identity
/// that policy does not know. It cannot see the registry: an agent disabled there still gets a
/// token here, but every decision for it denies (it is absent from policy data).
pub fn mint_token(
    config: &Config,
    key: &SigningKey,
    agent_id: &str,
    ttl_secs: Option<u64>,
) -> Result<String, TokenError> {
    mint_token_at(config, key, agent_id, ttl_secs, unix_now()?)
}

/// [`mint_token`] with an explicit issue time (seconds since the epoch).
pub fn mint_token_at(
    config: &Config,
    key: &SigningKey,
    agent_id: &str,
    ttl_secs: Option<u64>,
    issued_at: u64,
) -> Result<String, TokenError> {
    if config.agent(agent_id).is_none() {
        return Err(TokenError::UnknownAgent(agent_id.to_owned()));
    }
    let spec = AccessTokenSpec {
        issuer: &config.issuer,
        audience: &config.audience,
        agent_id,
        client_id: agent_id,
        actor: None,
        scope: TOKEN_SCOPE,
        ttl_secs: ttl_secs.unwrap_or(config.token_ttl_secs),
        issued_at,
    };
    sign_access_token(key, &spec).map(|(token, _)| token)
}

fn random_jti() -> String {
    let mut bytes = [0_u8; JTI_RANDOM_BYTES];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

    use super::*;
    use crate::signing_key::tests::test_key;

    fn config() -> Config {
        Config::from_toml_str(
            "issuer = \"iss-test\"\naudience = \"aud-test\"\ntoken_ttl_secs = 120\n[[agents]]\nid = \"demo-agent\"",
            Path::new("authz.toml"),
            Path::new(""),
            &HashMap::new(),
        )
        .unwrap()
    }

    /// An independent verifier (the `jsonwebtoken` crate) given only the JWKS entry.
    fn verifier(key: &SigningKey, issuer: &str, audience: &str) -> (DecodingKey, Validation) {
        let jwks = key.jwks();
        let jwk = &jwks.keys[0];
        let decoding_key = DecodingKey::from_rsa_components(&jwk.n, &jwk.e).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        (decoding_key, validation)
    }

    #[test]
    fn minted_token_verifies_against_the_jwks_key() {
        let key = test_key();
        let token = mint_token(&config(), &key, "demo-agent", None).unwrap();

        let header = decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid()));

        let (decoding_key, validation) = verifier(&key, "iss-test", "aud-test");
        let claims = decode::<AccessTokenClaims>(&token, &decoding_key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims.sub, "demo-agent");
        assert_eq!(claims.client_id, "demo-agent");
        assert_eq!(claims.scope, "mcp");
        assert_eq!(claims.iss, "iss-test");
        assert_eq!(claims.aud, "aud-test");
        assert_eq!(claims.exp - claims.iat, 120);
        assert_eq!(claims.nbf, claims.iat);
        assert_eq!(URL_SAFE_NO_PAD.decode(&claims.jti).unwrap().len(), 16);
    }

    #[test]
    fn verifier_rejects_wrong_audience_issuer_and_expiry() {
        let key = test_key();
        let token = mint_token(&config(), &key, "demo-agent", Some(60)).unwrap();

        let (decoding_key, validation) = verifier(&key, "iss-test", "someone-else");
        let err = decode::<AccessTokenClaims>(&token, &decoding_key, &validation).unwrap_err();
        assert_eq!(
            *err.kind(),
            jsonwebtoken::errors::ErrorKind::InvalidAudience
        );

        let (decoding_key, validation) = verifier(&key, "other-issuer", "aud-test");
        let err = decode::<AccessTokenClaims>(&token, &decoding_key, &validation).unwrap_err();
        assert_eq!(*err.kind(), jsonwebtoken::errors::ErrorKind::InvalidIssuer);

        // Issued an hour ago with a fifteen minute lifetime: expired.
        let now = unix_now().unwrap();
        let old = mint_token_at(&config(), &key, "demo-agent", Some(900), now - 3600).unwrap();
        let (decoding_key, validation) = verifier(&key, "iss-test", "aud-test");
        let err = decode::<AccessTokenClaims>(&old, &decoding_key, &validation).unwrap_err();
        assert_eq!(
            *err.kind(),
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
        );
    }

    #[test]
    fn tampered_token_does_not_verify() {
        let key = test_key();
        let token = mint_token(&config(), &key, "demo-agent", None).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({
                "iss": "iss-test", "aud": "aud-test", "sub": "admin",
                "exp": u64::MAX / 2, "nbf": 0, "iat": 0,
            }))
            .unwrap(),
        );
        parts[1] = &forged_claims;
        let forged = parts.join(".");
        let (decoding_key, validation) = verifier(&key, "iss-test", "aud-test");
        assert!(decode::<serde_json::Value>(&forged, &decoding_key, &validation).is_err());
    }

    #[test]
    fn unknown_agent_is_refused() {
        let err = mint_token(&config(), &test_key(), "intruder", None).unwrap_err();
        assert!(matches!(err, TokenError::UnknownAgent(ref id) if id == "intruder"));
        assert!(err.to_string().contains("not enrolled"));
    }

    #[test]
    fn ttl_out_of_range_is_refused() {
        for ttl in [0, MAX_TOKEN_TTL_SECS + 1] {
            let err = mint_token(&config(), &test_key(), "demo-agent", Some(ttl)).unwrap_err();
            assert!(matches!(err, TokenError::InvalidTtl(t) if t == ttl));
        }
    }

    #[test]
    fn token_ids_differ() {
        let key = test_key();
        let a = mint_token(&config(), &key, "demo-agent", None).unwrap();
        let b = mint_token(&config(), &key, "demo-agent", None).unwrap();
        let (decoding_key, validation) = verifier(&key, "iss-test", "aud-test");
        let jti = |t: &str| {
            decode::<AccessTokenClaims>(t, &decoding_key, &validation)
                .unwrap()
                .claims
                .jti
        };
        assert_ne!(jti(&a), jti(&b));
    }
}
