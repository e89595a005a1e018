//! Kubernetes service-account token exchange: a workload presents its projected service-account
//! token as the `subject_token` of a token exchange (RFC 8693 §2.1, `subject_token_type`
//! `urn:ietf:params:oauth:token-type:jwt`) and gets the access token of the one agent whose
//! enrollment lists that service account.
//!
//! Config (`[kubernetes]`): `issuer` (the cluster's service-account issuer), `jwks_file` (the
//! cluster's JWK Set, as served at `/openid/v1/jwks`; relative paths are resolved against the
//! config's folder) and `audiences` (the projected token's `aud` must contain one of them). The
//! JWKS is read and checked when the config loads.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client_key::{AssertionAlg, ClientJwk, ClientKey};
use crate::config::{InvalidField, check_name};
use crate::token::TOKEN_CLOCK_SKEW_SECS;

/// Prefix of a service account's `sub` (`system:serviceaccount:<namespace>:<name>`).
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// Largest service-account token read.
pub const MAX_SA_TOKEN_BYTES: usize = 8 * 1024;
/// Longest Kubernetes namespace or service-account name (DNS-1123 subdomain).
const MAX_K8S_NAME_LEN: usize = 253;
/// JWK members kept from the cluster's JWKS (others, such as `x5c`, are dropped: keys are only
/// ever trusted from the file, never from certificates).
const JWK_MEMBERS: &[&str] = &["kty", "kid", "alg", "use", "n", "e", "crv", "x", "y"];
/// Private JWK members (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// `[kubernetes]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesFile {
    /// The service-account token issuer (`--service-account-issuer`).
    pub issuer: String,
    /// The cluster's JWK Set file.
    pub jwks_file: PathBuf,
    /// Accepted audiences; the token's `aud` must contain one.
    pub audiences: Vec<String>,
}

/// `[kubernetes]` loaded: the JWKS read and each key validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// The service-account token issuer.
    pub issuer: String,
    /// The resolved JWKS path.
    pub jwks_file: PathBuf,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// The cluster's public keys (RSA and P-256), normalized.
    pub keys: Vec<ClientJwk>,
}

impl KubernetesFile {
    /// Check the section and read its JWKS (`jwks_file` relative to `base_dir`).
    pub fn load(&self, base_dir: &Path) -> Result<KubernetesConfig, InvalidField> {
        if self.issuer.trim().is_empty() {
            return Err(InvalidField::new("kubernetes.issuer", "must not be empty"));
        }
        if self.audiences.is_empty() {
            return Err(InvalidField::new(
                "kubernetes.audiences",
                "must name at least one audience",
            ));
        }
        for (index, audience) in self.audiences.iter().enumerate() {
            check_name(&format!("kubernetes.audiences[{index}]"), audience)?;
        }
        if self.jwks_file.as_os_str().is_empty() {
            return Err(InvalidField::new(
                "kubernetes.jwks_file",
                "must not be empty",
            ));
        }
        let path = base_dir.join(&self.jwks_file);
        let text = std::fs::read_to_string(&path).map_err(|err| {
            InvalidField::new(
                "kubernetes.jwks_file",
                format!("cannot read {}: {err}", path.display()),
            )
        })?;
        let keys = parse_jwks(&text)
            .map_err(|reason| {
                InvalidField::new(
                    "kubernetes.jwks_file",
                    format!("{}: {reason}", path.display()),
                )
            })?
            .iter()
            .map(|key| key.jwk().clone())
            .collect();
        Ok(KubernetesConfig {
            issuer: self.issuer.clone(),
            jwks_file: path,
            audiences: self.audiences.clone(),
            keys,
        })
    }
}

/// Parse a JWK Set (RFC 7517 §5) of public signature keys.
pub fn parse_jwks(text: &str) -> Result<Vec<ClientKey>, String> {
    let value: Value = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    let Some(keys) = value.get("keys").and_then(Value::as_array) else {
        return Err("not a JWK Set (no `keys` array)".to_owned());
    };
    if keys.is_empty() {
        return Err("the JWK Set holds no key".to_owned());
    }
    keys.iter()
        .enumerate()
        .map(|(index, key)| {
            let Some(object) = key.as_object() else {
                return Err(format!("keys[{index}] is not an object"));
            };
            // RFC 7518 §6.2.2, §6.3.2, §6.4: a public JWKS never holds private members.
            if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| object.contains_key(**m)) {
                return Err(format!(
                    "keys[{index}] holds private key material (`{member}`)"
                ));
            }
            // RFC 7517 §4.2: encryption keys are refused by ClientKey (`use` must be `sig`).
            let kept: Map<String, Value> = object
                .iter()
                .filter(|(name, _)| JWK_MEMBERS.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            ClientKey::from_value(Value::Object(kept))
                .map_err(|err| format!("keys[{index}]: {err}"))
        })
        .collect()
}

/// The verifier built from [`KubernetesConfig`].
#[derive(Debug, Clone)]
pub struct KubernetesVerifier {
    issuer: String,
    audiences: Vec<String>,
    keys: Vec<ClientKey>,
}

impl KubernetesVerifier {
    /// The verifier of `config` (its keys were validated at load).
    pub fn new(config: &KubernetesConfig) -> KubernetesVerifier {
        let keys = config
            .keys
            .iter()
            .filter_map(|jwk| match ClientKey::from_jwk(jwk.clone()) {
                Ok(key) => Some(key),
                Err(err) => {
                    tracing::error!(error = %err, "skipping a Kubernetes JWKS key");
                    None
                }
            })
            .collect();
        KubernetesVerifier {
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            keys,
        }
    }
}

/// Why a service-account token was refused. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubernetesError {
    /// Not a compact JWS, or a part does not decode.
    #[error("service-account token is malformed: {0}")]
    Malformed(String),
    /// `alg` or another header parameter is not acceptable.
    #[error("service-account token has an unacceptable header: {0}")]
    Header(String),
    /// No key of the cluster's JWKS has this `kid`.
    #[error("service-account token names an unknown key (kid `{0}`)")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("service-account token has an invalid signature")]
    BadSignature,
    /// `iss` is not the cluster's.
    #[error("service-account token was not issued by the configured Kubernetes issuer")]
    Issuer,
    /// `aud` holds none of the accepted audiences.
    #[error("service-account token's aud holds none of the accepted audiences")]
    Audience,
    /// A claim is missing or wrong.
    #[error("service-account token has a missing or invalid `{0}` claim")]
    Claim(&'static str),
    /// `exp` has passed.
    #[error("service-account token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("service-account token is not valid yet")]
    NotYetValid,
}

/// A verified service-account token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountToken {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub sub: String,
    /// `exp`.
    pub exp: u64,
}

/// Verify a projected service-account token: RS256 or ES256 by `kid` from the cluster's JWKS,
/// `iss`, `aud` (one accepted audience), `exp` required, `nbf`/`iat` with skew, `sub` a service
/// account.
pub fn verify_service_account_token(
    token: &str,
    verifier: &KubernetesVerifier,
    now: u64,
) -> Result<ServiceAccountToken, KubernetesError> {
    if token.len() > MAX_SA_TOKEN_BYTES {
        return Err(KubernetesError::Malformed(format!(
            "longer than {MAX_SA_TOKEN_BYTES} bytes"
        )));
    }
    // RFC 7515 §7.1: three base64url parts.
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts.as_slice() else {
        return Err(KubernetesError::Malformed(
            "expected three base64url parts".to_owned(),
        ));
    };
    let header = decode_object("header", header_b64)?;
    let claims = decode_object("claims", claims_b64)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|err| KubernetesError::Malformed(format!("signature: {err}")))?;
    // RFC 8725 §3.1: an allow-list of algorithms; `none` and HMAC are refused.
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(AssertionAlg::from_name)
        .ok_or_else(|| KubernetesError::Header("alg must be RS256 or ES256".to_owned()))?;
    // RFC 7515 §4.1.11 and RFC 8725 §3.10: no unknown critical extensions, no keys from the
    // token itself.
    for refused in ["crit", "jku", "jwk", "x5u", "x5c"] {
        if header.contains_key(refused) {
            return Err(KubernetesError::Header(format!(
                "`{refused}` is not allowed"
            )));
        }
    }
    let Some(kid) = header.get("kid").and_then(Value::as_str) else {
        return Err(KubernetesError::Header("kid is required".to_owned()));
    };
    // RFC 7515 §4.1.4: the key `kid` names, for this algorithm only (RFC 8725 §3.1).
    let candidates: Vec<&ClientKey> = verifier
        .keys
        .iter()
        .filter(|key| key.kid() == kid && key.alg() == alg)
        .collect();
    if candidates.is_empty() {
        return Err(KubernetesError::UnknownKey(kid.chars().take(64).collect()));
    }
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    if !candidates
        .iter()
        .any(|key| key.verify(alg, signing_input.as_bytes(), &signature))
    {
        return Err(KubernetesError::BadSignature);
    }
    // RFC 7519 §4.1.1: the cluster's issuer.
    if claims.get("iss").and_then(Value::as_str) != Some(verifier.issuer.as_str()) {
        return Err(KubernetesError::Issuer);
    }
    // RFC 7519 §4.1.3: `aud` (a string or an array) must hold one accepted audience.
    let accepted = |aud: &str| verifier.audiences.iter().any(|ours| ours == aud);
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => accepted(aud),
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
        _ => false,
    };
    if !audience_ok {
        return Err(KubernetesError::Audience);
    }
    let date = |name: &'static str| -> Result<Option<u64>, KubernetesError> {
        match claims.get(name) {
            None => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or(KubernetesError::Claim(name)),
        }
    };
    // RFC 7519 §4.1.4: `exp` is required here (projected tokens always carry it).
    let exp = date("exp")?.ok_or(KubernetesError::Claim("exp"))?;
    if exp.saturating_add(TOKEN_CLOCK_SKEW_SECS) <= now {
        return Err(KubernetesError::Expired);
    }
    for name in ["nbf", "iat"] {
        if date(name)?.is_some_and(|t| t > now.saturating_add(TOKEN_CLOCK_SKEW_SECS)) {
            return Err(KubernetesError::NotYetValid);
        }
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(KubernetesError::Claim("sub"))?;
    check_service_account("sub", sub).map_err(|_| KubernetesError::Claim("sub"))?;
    Ok(ServiceAccountToken {
        sub: sub.to_owned(),
        exp,
    })
}

fn decode_object(part: &str, b64: &str) -> Result<Map<String, Value>, KubernetesError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|err| KubernetesError::Malformed(format!("{part}: {err}")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(KubernetesError::Malformed(format!(
            "{part} is not a JSON object"
        ))),
    }
}

/// A service account's `sub`: `system:serviceaccount:<namespace>:<name>`, both parts
/// non-empty DNS-1123 names (lowercase letters, digits, `-` and `.`).
pub fn check_service_account(field: &str, value: &str) -> Result<(), InvalidField> {
    let well_formed = value
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(namespace, name)| is_k8s_name(namespace) && is_k8s_name(name));
    if !well_formed {
        return Err(InvalidField::new(
            field,
            format!("`{value}` is not of the form {SERVICE_ACCOUNT_PREFIX}<namespace>:<name>"),
        ));
    }
    Ok(())
}

fn is_k8s_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_K8S_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}
