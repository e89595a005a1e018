//! HashiCorp Vault (or OpenBao) KV secrets engine version 2, read over HTTP.
//!
//! API: <https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2> ("Read secret version").
//! `vault:kv/upstream/github#token?version=2` becomes
//! `GET <address>/v1/kv/data/upstream/github?version=2` with the token in `X-Vault-Token` and,
//! when configured, the Enterprise namespace in `X-Vault-Namespace`. The answer is
//! `{"data": {"data": {<fields>}, "metadata": {"version": .., "deletion_time": .., "destroyed": ..}}}`;
//! the reference's field is taken from the inner `data`.
//!
//! Answers: 200 → the field (missing field → not found); 403 → permission denied;
//! 404 → not found (Vault also answers 404, with `data.data: null` and the version's metadata,
//! for a soft-deleted or destroyed version); anything else → an error with the status and
//! Vault's `errors` strings. The token and the values are never logged or put into errors:
//! only references, URLs (which hold mount and path, no secrets) and statuses are.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::reference::{SecretBackend, SecretRef};
use crate::value::SecretValue;
use crate::{SecretError, SecretFuture, SecretStore};

/// Default for `requestTimeoutMs`: a whole request (connect, send, answer) must finish in 5 s.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Default for `cacheTtlMs`: 0, no cache (every read asks Vault).
pub const DEFAULT_CACHE_TTL_MS: u64 = 0;
/// Upper bound for `cacheTtlMs` (1 hour): a rotated or revoked secret must not live on for long.
pub const MAX_CACHE_TTL_MS: u64 = 3_600_000;

/// Vault settings as written in config (camelCase JSON). The token is never in config itself:
/// it is read from `tokenFile` (e.g. written by Vault Agent) or from the environment variable
/// named by `tokenEnv`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultConfig {
    /// Base URL of Vault, e.g. `https://vault.internal:8200` (no trailing `/v1`).
    pub address: String,
    /// Vault Enterprise / OpenBao namespace sent as `X-Vault-Namespace`; default none.
    #[serde(default)]
    pub namespace: Option<String>,
    /// File holding the token. Exactly one of `tokenFile` and `tokenEnv` must be set.
    #[serde(default, alias = "token_file")]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the token.
    #[serde(default, alias = "token_env")]
    pub token_env: Option<String>,
    /// PEM file with extra CA certificates to trust (a private CA); default: public roots only.
    #[serde(default, alias = "ca_cert_file")]
    pub ca_cert_file: Option<PathBuf>,
    /// Whole-request timeout in milliseconds; default [`DEFAULT_REQUEST_TIMEOUT_MS`].
    #[serde(default = "default_request_timeout_ms", alias = "request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How long a value read from Vault is reused, in milliseconds; default
    /// [`DEFAULT_CACHE_TTL_MS`] (off); at most [`MAX_CACHE_TTL_MS`].
    #[serde(default, alias = "cache_ttl_ms")]
    pub cache_ttl_ms: u64,
}

fn default_request_timeout_ms() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_MS
}

/// Why the Vault backend could not be set up or could not answer. Never holds the token or a
/// secret value.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A config field is wrong; the message names it.
    #[error("vault config: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("vault token: {0}")]
    Token(String),
    #[error("cannot build the HTTP client for Vault: {0}")]
    Client(String),
    #[error("Vault did not answer within {timeout_ms} ms ({url})")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("cannot reach Vault: {0}")]
    Unreachable(String),
    #[error("Vault answered {status} for {url}: {errors}")]
    UnexpectedStatus {
        status: u16,
        url: String,
        errors: String,
    },
    // Only the position: serde_json's message could quote part of the body, i.e. a secret.
    #[error("Vault's answer for {url} is not a KV v2 read response (line {line}, column {column})")]
    MalformedResponse {
        url: String,
        line: usize,
        column: usize,
    },
    #[error("field is not a string in Vault's answer for {url}")]
    FieldNotString { url: String },
    /// Only `vault:` references can be read here (the outer error names the reference).
    #[error("not a `vault:` reference")]
    NotAVaultReference,
}

/// A Vault token. `Debug` shows nothing; wiped on drop.
#[derive(Clone)]
pub struct VaultToken(Zeroizing<String>);

impl std::fmt::Debug for VaultToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultToken([REDACTED])")
    }
}

impl VaultToken {
    /// Wraps a token (surrounding whitespace, e.g. a file's trailing newline, is dropped).
    pub fn new(token: String) -> Result<Self, VaultError> {
        let token = Zeroizing::new(token);
        let trimmed = token.trim();
        if trimmed.is_empty() {
            return Err(VaultError::Token("the token is empty".to_owned()));
        }
        // Must fit an HTTP header value (RFC 9110 §5.5): visible ASCII only.
        if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(VaultError::Token(
                "the token holds characters not allowed in an HTTP header".to_owned(),
            ));
        }
        Ok(Self(Zeroizing::new(trimmed.to_owned())))
    }

    fn header_value(&self) -> Result<HeaderValue, VaultError> {
        let mut value = HeaderValue::from_str(&self.0)
            .map_err(|_| VaultError::Token("not a valid header value".to_owned()))?;
        // Keeps the value out of hyper's debug output and out of HPACK tables (HTTP/2).
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Validated settings for [`VaultKvStore`].
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// Base URL without a trailing `/`.
    pub address: String,
    /// Sent as `X-Vault-Namespace` when set.
    pub namespace: Option<String>,
    /// Extra trusted CA certificates (PEM).
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Cache lifetime; zero disables the cache.
    pub cache_ttl: Duration,
}

impl VaultSettings {
    /// Settings for `address` with the documented defaults.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            namespace: None,
            ca_cert_pem: None,
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
            cache_ttl: Duration::from_millis(DEFAULT_CACHE_TTL_MS),
        }
    }
}

impl VaultConfig {
    /// Checks every field and reads the token and CA files. `env` looks up environment
    /// variables ([`crate::process_env`] in production).
    pub fn load(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(VaultSettings, VaultToken), VaultError> {
        let config_error = |field, reason: &str| VaultError::Config {
            field,
            reason: reason.to_owned(),
        };
        let address = self.address.trim_end_matches('/');
        let scheme_ok = address.starts_with("https://") || address.starts_with("http://");
        if !scheme_ok || reqwest::Url::parse(address).is_err() {
            return Err(config_error(
                "address",
                "must be an http:// or https:// URL, e.g. https://vault.internal:8200",
            ));
        }
        if let Some(namespace) = &self.namespace
            && (namespace.is_empty() || HeaderValue::from_str(namespace).is_err())
        {
            return Err(config_error(
                "namespace",
                "must be a non-empty header-safe string",
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(config_error("requestTimeoutMs", "must be greater than 0"));
        }
        if self.cache_ttl_ms > MAX_CACHE_TTL_MS {
            return Err(config_error(
                "cacheTtlMs",
                &format!("must be at most {MAX_CACHE_TTL_MS} (1 hour)"),
            ));
        }
        let token_text = match (&self.token_file, &self.token_env) {
            (Some(path), None) => Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                config_error("tokenFile", &format!("cannot read {}: {e}", path.display()))
            })?),
            (None, Some(var)) => Zeroizing::new(env(var).ok_or_else(|| {
                config_error(
                    "tokenEnv",
                    &format!("environment variable {var} is not set"),
                )
            })?),
            _ => {
                return Err(config_error(
                    "tokenFile",
                    "set exactly one of tokenFile and tokenEnv",
                ));
            }
        };
        let token = VaultToken::new(token_text.to_string())?;
        let ca_cert_pem = match &self.ca_cert_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                config_error(
                    "caCertFile",
                    &format!("cannot read {}: {e}", path.display()),
                )
            })?),
            None => None,
        };
        Ok((
            VaultSettings {
                address: address.to_owned(),
                namespace: self.namespace.clone(),
                ca_cert_pem,
                request_timeout: Duration::from_millis(self.request_timeout_ms),
                cache_ttl: Duration::from_millis(self.cache_ttl_ms),
            },
            token,
        ))
    }
}

/// The body of a KV v2 read. Only what is needed is named; the rest is ignored.
#[derive(Deserialize)]
struct ReadEnvelope {
    data: Option<ReadData>,
}

#[derive(Deserialize)]
struct ReadData {
    data: Option<Map<String, Value>>,
    metadata: Option<VersionMetadata>,
}

#[derive(Deserialize)]
struct VersionMetadata {
    #[serde(default)]
    destroyed: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(Debug)]
struct CachedSecret {
    fetched: Instant,
    value: SecretValue,
}

/// Reads `vault:` references from Vault's KV v2 engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct VaultKvStore {
    client: reqwest::Client,
    address: Arc<str>,
    request_timeout: Duration,
    cache_ttl: Duration,
    cache: Arc<Mutex<HashMap<SecretRef, CachedSecret>>>,
}

impl VaultKvStore {
    /// A client for the Vault at `settings.address`, authenticating with `token`.
    pub fn new(settings: VaultSettings, token: VaultToken) -> Result<Self, VaultError> {
        let mut headers = HeaderMap::new();
        headers.insert("x-vault-token", token.header_value()?);
        if let Some(namespace) = &settings.namespace {
            let value = HeaderValue::from_str(namespace).map_err(|_| VaultError::Config {
                field: "namespace",
                reason: "must be a header-safe string".to_owned(),
            })?;
            headers.insert("x-vault-namespace", value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout)
            // A redirect could carry the token header to another host; Vault does not need
            // them for KV reads (standby nodes forward requests themselves).
            .redirect(reqwest::redirect::Policy::none())
            .use_rustls_tls();
        if let Some(pem) = &settings.ca_cert_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| VaultError::Client(format!("caCertFile: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| VaultError::Client(e.to_string()))?;
        Ok(Self {
            client,
            address: Arc::from(settings.address.trim_end_matches('/')),
            request_timeout: settings.request_timeout,
            cache_ttl: settings.cache_ttl,
            cache: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn cached(&self, reference: &SecretRef) -> Option<SecretValue> {
        if self.cache_ttl.is_zero() {
            return None;
        }
        // A poisoned cache lock just means a reader panicked; entries are still whole.
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.get(reference) {
            Some(entry) if entry.fetched.elapsed() < self.cache_ttl => Some(entry.value.clone()),
            Some(_) => {
                cache.remove(reference);
                None
            }
            None => None,
        }
    }

    fn remember(&self, reference: &SecretRef, value: &SecretValue) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // Drop expired entries so the map holds at most the references in use.
        cache.retain(|_, entry| entry.fetched.elapsed() < self.cache_ttl);
        cache.insert(
            reference.clone(),
            CachedSecret {
                fetched: Instant::now(),
                value: value.clone(),
            },
        );
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
        let vault_error = |source| SecretError::Vault {
            reference: reference.clone(),
            source: Box::new(source),
        };
        let (mount, path) = match (reference.backend(), reference.vault_mount_and_path()) {
            (SecretBackend::Vault, Some(parts)) => parts,
            _ => {
                return Err(vault_error(VaultError::NotAVaultReference));
            }
        };
        // Mount and path were checked by `SecretRef` (letters, digits, `-_.`), so they need no
        // escaping in the URL.
        let mut url = format!("{}/v1/{mount}/data/{path}", self.address);
        if let Some(version) = reference.version() {
            url.push_str(&format!("?version={version}"));
        }
        tracing::debug!(%reference, "reading secret from Vault KV v2");
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|err| vault_error(self.transport_error(&url, &err)))?;
        let status = response.status();
        let body = Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|err| vault_error(self.transport_error(&url, &err)))?
                .to_vec(),
        );
        match status {
            StatusCode::OK => {}
            StatusCode::FORBIDDEN => {
                return Err(SecretError::PermissionDenied {
                    reference: reference.clone(),
                });
            }
            // Unknown path or version, and soft-deleted or destroyed versions (which come with
            // `data.data: null` and the version's metadata): all "not found" to the caller.
            StatusCode::NOT_FOUND => {
                return Err(SecretError::NotFound {
                    reference: reference.clone(),
                });
            }
            other => {
                let errors = serde_json::from_slice::<ErrorBody>(&body)
                    .map(|parsed| summarize_errors(&parsed.errors))
                    .unwrap_or_else(|_| "(no Vault error list in the answer)".to_owned());
                return Err(vault_error(VaultError::UnexpectedStatus {
                    status: other.as_u16(),
                    url,
                    errors,
                }));
            }
        }
        let envelope: ReadEnvelope = serde_json::from_slice(&body).map_err(|err| {
            vault_error(VaultError::MalformedResponse {
                url: url.clone(),
                line: err.line(),
                column: err.column(),
            })
        })?;
        let Some(read) = envelope.data else {
            return Err(vault_error(VaultError::MalformedResponse {
                url,
                line: 0,
                column: 0,
            }));
        };
        let destroyed = read.metadata.as_ref().is_some_and(|m| m.destroyed);
        // A 200 with data is readable: Vault itself turns a passed `deletion_time` into a 404
        // (and a future `deletion_time`, from `delete_version_after`, is not a deletion yet).
        let Some(mut fields) = read.data.filter(|_| !destroyed) else {
            return Err(SecretError::NotFound {
                reference: reference.clone(),
            });
        };
        let found = match fields.get(reference.field()) {
            Some(Value::String(text)) => Ok(SecretValue::new(text.clone())),
            Some(_) => Err(vault_error(VaultError::FieldNotString { url })),
            None => Err(SecretError::NotFound {
                reference: reference.clone(),
            }),
        };
        // Best effort: wipe the other fields' text before the map is freed.
        for value in fields.values_mut() {
            if let Value::String(text) = value {
                text.zeroize();
            }
        }
        found
    }

    fn transport_error(&self, url: &str, err: &reqwest::Error) -> VaultError {
        if err.is_timeout() {
            return VaultError::Timeout {
                url: url.to_owned(),
                timeout_ms: u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX),
            };
        }
        // reqwest's own message is terse; the causes (connection refused, TLS) are below it.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        VaultError::Unreachable(message)
    }
}

fn summarize_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        return "(empty error list)".to_owned();
    }
    let mut joined = errors.join("; ");
    const LIMIT: usize = 300;
    if joined.len() > LIMIT {
        let mut cut = LIMIT;
        while !joined.is_char_boundary(cut) {
            cut -= 1;
        }
        joined.truncate(cut);
        joined.push('…');
    }
    joined
}

impl SecretStore for VaultKvStore {
    fn get<'a>(&'a self, reference: &'a SecretRef) -> SecretFuture<'a> {
        Box::pin(async move {
            if let Some(value) = self.cached(reference) {
                return Ok(value);
            }
            let value = self.fetch(reference).await?;
            self.remember(reference, &value);
            Ok(value)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<VaultConfig, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn config_loads_with_defaults_and_token_from_env() {
        let cfg = config(serde_json::json!({
            "address": "https://vault.internal:8200/",
            "tokenEnv": "VAULT_TOKEN",
        }))
        .unwrap();
        let env = |var: &str| (var == "VAULT_TOKEN").then(|| "hvs.secret-token\n".to_owned());
        let (settings, token) = cfg.load(&env).unwrap();
        assert_eq!(settings.address, "https://vault.internal:8200");
        assert_eq!(settings.request_timeout, Duration::from_millis(5_000));
        assert!(settings.cache_ttl.is_zero());
        assert_eq!(format!("{token:?}"), "VaultToken([REDACTED])");
        assert!(!format!("{settings:?}").contains("hvs."));
    }

    #[test]
    fn config_errors_name_the_field() {
        let env = |_: &str| None;
        let cases = [
            (
                serde_json::json!({"address": "vault:8200", "tokenEnv": "T"}),
                "address",
            ),
            (
                serde_json::json!({"address": "http://v", "tokenEnv": "T"}),
                "tokenEnv",
            ),
            (serde_json::json!({"address": "http://v"}), "tokenFile"),
            (
                serde_json::json!({"address": "http://v", "tokenEnv": "T", "requestTimeoutMs": 0}),
                "requestTimeoutMs",
            ),
            (
                serde_json::json!({"address": "http://v", "tokenEnv": "T", "cacheTtlMs": 3_600_001}),
                "cacheTtlMs",
            ),
        ];
        for (json, field) in cases {
            let err = config(json).unwrap().load(&env).unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
        let unknown = config(serde_json::json!({"address": "http://v", "token": "x"}));
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `token`")
        );
    }

    #[test]
    fn tokens_must_fit_a_header() {
        assert!(VaultToken::new("  ".to_owned()).is_err());
        assert!(VaultToken::new("a b".to_owned()).is_err());
        assert!(VaultToken::new("hvs.ok\n".to_owned()).is_ok());
    }
}
