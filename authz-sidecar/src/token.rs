//! Minting agent access tokens: RS256 JWTs in the RFC 9068 access-token profile.
//!
//! Pure apart from the clock and the random token id. The token endpoint (`POST /oauth/token`)
//! issues them with [`sign_access_token`]; the `behavry token mint` command calls [`mint_token`]
//! offline with the sidecar's config and key (agents of the config only). Envoy's
//! `jwt_authn` verifies these tokens against `/.well-known/jwks.json` and checks `iss`, `aud`,
//! `exp` and `nbf`.

use std::collections::BTreeMap;
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
    /// An extra claim would override one the token service sets itself.
    #[error("claim `{0}` is reserved: the token service sets it itself")]
    ReservedClaim(String),
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
    /// Extra string claims of a token exchanged for an upstream (its `claims` table), never one
    /// of [`crate::upstream::RESERVED_CLAIMS`].
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
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
    /// Extra string claims (an upstream's `claims`); reserved names are refused at signing.
    pub extra: Option<&'a BTreeMap<String, String>>,
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
    // RFC 7519 §4.1 / RFC 9068 §2.2 / RFC 8693 §4: the registered and delegation claims are
    // the token service's alone; an extra claim of the same name (refused at config load too)
    // would be a second, conflicting member (RFC 7519 §4: names must be unique).
    let extra = spec.extra.cloned().unwrap_or_default();
    if let Some(name) = extra
        .keys()
        .find(|name| crate::upstream::RESERVED_CLAIMS.contains(&name.as_str()))
    {
        return Err(TokenError::ReservedClaim(name.clone()));
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
        extra,
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
        extra: None,
    };
    sign_access_token(key, &spec).map(|(token, _)| token)
}

/// Largest token [`verify_own_token`] reads.
pub const MAX_VERIFIED_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat` of a token presented back to the token service.
pub const TOKEN_CLOCK_SKEW_SECS: u64 = 30;

/// RFC 8693 §4.4 `may_act`: the party the token's subject allows to act for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MayAct {
    /// The party allowed to act.
    pub sub: String,
}

/// The claims of a verified token of our own issuer (an RFC 9068 access token).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VerifiedAccessToken {
    /// `sub`: the agent.
    pub sub: String,
    /// `aud`.
    pub aud: String,
    /// `exp`.
    pub exp: u64,
    /// `jti`.
    pub jti: String,
    /// `client_id`: who the token was issued to.
    pub client_id: String,
    /// `scope`, space-separated.
    pub scope: String,
    /// `act`: the delegation chain (RFC 8693 §4.1).
    #[serde(default)]
    pub act: Option<Actor>,
    /// `may_act` (RFC 8693 §4.4), if the token carries one.
    #[serde(default)]
    pub may_act: Option<MayAct>,
}

impl VerifiedAccessToken {
    /// The scopes of the token.
    pub fn scopes(&self) -> Vec<&str> {
        self.scope.split(' ').filter(|s| !s.is_empty()).collect()
    }
}

/// What a token of our own issuer must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct OwnTokenRules<'a> {
    /// The expected `iss`.
    pub issuer: &'a str,
    /// The expected `aud` (the gateway: a token minted for an upstream is not accepted back).
    pub audience: &'a str,
    /// Seconds since the epoch.
    pub now: u64,
}

/// Why a token presented back to the token service was refused. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnTokenError {
    /// Not a compact JWS, or a part does not decode.
    #[error("is malformed: {0}")]
    Malformed(String),
    /// A header parameter is missing or not allowed.
    #[error("has an unacceptable header: {0}")]
    Header(String),
    /// No key of ours has this `kid`.
    #[error("names an unknown signing key (kid `{0}`)")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("has an invalid signature")]
    BadSignature,
    /// A claim is missing or wrong.
    #[error("has a missing or invalid `{0}` claim")]
    Claim(&'static str),
    /// `iss` is not ours.
    #[error("was not issued by this token service")]
    Issuer,
    /// `aud` is not the gateway.
    #[error("is not for audience `{0}` (a token minted for an upstream cannot be exchanged)")]
    Audience(String),
    /// `exp` has passed.
    #[error("has expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("is not valid yet")]
    NotYetValid,
}

/// Verify a token of this token service: RS256 signature by the key its `kid` names among
/// `keys` (the active key today; a key ring can hand in retired keys too), `typ` `at+jwt`, `iss`,
/// `aud`, `exp`/`nbf`/`iat` with [`TOKEN_CLOCK_SKEW_SECS`] of skew. Revocation and the agent's
/// state are the caller's to check.
pub fn verify_own_token(
    token: &str,
    keys: &[crate::client_key::ClientKey],
    rules: OwnTokenRules<'_>,
) -> Result<VerifiedAccessToken, OwnTokenError> {
    use crate::client_key::AssertionAlg;
    use serde_json::{Map, Value};

    if token.len() > MAX_VERIFIED_TOKEN_BYTES {
        return Err(OwnTokenError::Malformed(format!(
            "longer than {MAX_VERIFIED_TOKEN_BYTES} bytes"
        )));
    }
    // RFC 7515 §7.1: three base64url parts.
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts.as_slice() else {
        return Err(OwnTokenError::Malformed(
            "expected three base64url parts".to_owned(),
        ));
    };
    let object = |part: &str, b64: &str| -> Result<Map<String, Value>, OwnTokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|err| OwnTokenError::Malformed(format!("{part}: {err}")))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(object)) => Ok(object),
            _ => Err(OwnTokenError::Malformed(format!(
                "{part} is not a JSON object"
            ))),
        }
    };
    let header = object("header", header_b64)?;
    let claims = object("claims", claims_b64)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|err| OwnTokenError::Malformed(format!("signature: {err}")))?;
    // RFC 8725 §3.1: we sign RS256 only; any other `alg` is refused before any key is used.
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(OwnTokenError::Header("alg must be RS256".to_owned()));
    }
    // RFC 9068 §4: the `typ` header MUST be `at+jwt` (or `application/at+jwt`); RFC 8725 §3.11
    // explicit typing keeps other JWTs of ours from passing for access tokens.
    let typ = header
        .get("typ")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
        || typ.eq_ignore_ascii_case("application/at+jwt"))
    {
        return Err(OwnTokenError::Header(format!(
            "typ must be {ACCESS_TOKEN_TYP}"
        )));
    }
    // RFC 7515 §4.1.11: unknown critical extensions are refused; keys only come from us.
    for refused in ["crit", "jku", "jwk", "x5u", "x5c"] {
        if header.contains_key(refused) {
            return Err(OwnTokenError::Header(format!("`{refused}` is not allowed")));
        }
    }
    let Some(kid) = header.get("kid").and_then(Value::as_str) else {
        return Err(OwnTokenError::Header("kid is required".to_owned()));
    };
    // RFC 7515 §4.1.4: the key is the one `kid` names.
    let candidates: Vec<_> = keys.iter().filter(|key| key.kid() == kid).collect();
    if candidates.is_empty() {
        return Err(OwnTokenError::UnknownKey(kid.chars().take(64).collect()));
    }
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    if !candidates
        .iter()
        .any(|key| key.verify(AssertionAlg::Rs256, signing_input.as_bytes(), &signature))
    {
        return Err(OwnTokenError::BadSignature);
    }
    // RFC 9068 §4 / RFC 7519 §4.1.1: `iss` must be ours.
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer) {
        return Err(OwnTokenError::Issuer);
    }
    // RFC 9068 §4, RFC 8707 §2, RFC 8693 §5: the token must be for the gateway. A token minted
    // for an upstream's resource is bound to that upstream and cannot be turned into another.
    if claims.get("aud").and_then(Value::as_str) != Some(rules.audience) {
        return Err(OwnTokenError::Audience(rules.audience.to_owned()));
    }
    let date = |name: &'static str| -> Result<Option<u64>, OwnTokenError> {
        match claims.get(name) {
            None => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or(OwnTokenError::Claim(name)),
        }
    };
    // RFC 7519 §4.1.4-4.1.6 with a small skew.
    let exp = date("exp")?.ok_or(OwnTokenError::Claim("exp"))?;
    if exp.saturating_add(TOKEN_CLOCK_SKEW_SECS) <= rules.now {
        return Err(OwnTokenError::Expired);
    }
    for name in ["nbf", "iat"] {
        if date(name)?.is_some_and(|t| t > rules.now.saturating_add(TOKEN_CLOCK_SKEW_SECS)) {
            return Err(OwnTokenError::NotYetValid);
        }
    }
    let verified: VerifiedAccessToken = serde_json::from_value(Value::Object(claims))
        .map_err(|err| OwnTokenError::Malformed(format!("claims: {err}")))?;
    if verified.sub.is_empty() {
        return Err(OwnTokenError::Claim("sub"));
    }
    if verified.jti.is_empty() {
        return Err(OwnTokenError::Claim("jti"));
    }
    Ok(verified)
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
    fn extra_claims_are_signed_and_reserved_names_refused() {
        let key = test_key();
        let extra = BTreeMap::from([("tenant".to_owned(), "acme".to_owned())]);
        let spec = AccessTokenSpec {
            issuer: "iss-test",
            audience: "aud-test",
            agent_id: "demo-agent",
            client_id: "demo-agent",
            actor: None,
            scope: "mcp",
            ttl_secs: 60,
            issued_at: unix_now().unwrap(),
            extra: Some(&extra),
        };
        let (token, claims) = sign_access_token(&key, &spec).unwrap();
        assert_eq!(claims.extra, extra);
        let (decoding_key, validation) = verifier(&key, "iss-test", "aud-test");
        let raw = decode::<serde_json::Value>(&token, &decoding_key, &validation)
            .unwrap()
            .claims;
        assert_eq!(raw["tenant"], "acme");
        for reserved in ["sub", "aud", "act", "may_act", "client_id"] {
            let extra = BTreeMap::from([(reserved.to_owned(), "x".to_owned())]);
            let spec = AccessTokenSpec {
                extra: Some(&extra),
                ..spec
            };
            let err = sign_access_token(&key, &spec).unwrap_err();
            assert!(matches!(err, TokenError::ReservedClaim(ref n) if n == reserved));
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
