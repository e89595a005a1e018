//! Behavry's secret store: where the static API keys of upstream MCP servers come from.
//!
//! Some MCP servers accept only a static API key, not an exchanged token. For those, the
//! credential that replaces the agent's `Authorization` header is read from a secret store by
//! *reference* (`file:upstream/github#token`, `vault:kv/upstream/github#token?version=2`, see
//! [`reference`]). Config, logs, errors and audit events only ever hold references; the value
//! is a [`SecretValue`], which prints as `[REDACTED]`, cannot be serialized and is wiped on drop.
//!
//! Backends, behind the [`SecretStore`] trait:
//! - [`EncryptedFileStore`]: one local file, XChaCha20-Poly1305 under a 256-bit key (default);
//! - [`VaultKvStore`]: HashiCorp Vault / OpenBao KV v2 over HTTP (production).
//!
//! [`SecretResolver`] holds the configured backends and sends each reference to its own.
//! The authz-sidecar opens the backends of its `[secrets]` config section at start and answers
//! `secret` upstreams' keys at `POST /v1/credentials`; `behavry secret` manages the encrypted
//! file (see `docs/secrets.md`).

pub mod file_store;
pub mod reference;
pub mod value;
pub mod vault;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

pub use file_store::{EncryptedFileStore, FileStoreError, FileStoreKey};
pub use reference::{ReferenceError, SecretBackend, SecretRef};
pub use value::SecretValue;
pub use vault::{VaultConfig, VaultError, VaultKvStore, VaultSettings, VaultToken};

/// What [`SecretStore::get`] returns: boxed so the trait can be used as `dyn SecretStore`.
pub type SecretFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SecretValue, SecretError>> + Send + 'a>>;

/// A place secrets are read from by reference.
pub trait SecretStore: Send + Sync {
    /// The value `reference` names. Errors name the reference, never the value.
    fn get<'a>(&'a self, reference: &'a SecretRef) -> SecretFuture<'a>;
}

/// Why a secret could not be read. Every variant names the reference (safe to log) and none
/// holds a secret value or a credential.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No such secret, field or version (Vault: also a deleted or destroyed version).
    #[error("secret {reference} not found")]
    NotFound { reference: SecretRef },
    /// The store refused the read (Vault: 403, the token's policy does not allow it).
    #[error("permission denied reading secret {reference}")]
    PermissionDenied { reference: SecretRef },
    /// The reference's backend is not configured.
    #[error("secret {reference}: the {} backend is not configured", .reference.backend())]
    BackendNotConfigured { reference: SecretRef },
    /// The local secrets file or its key failed.
    #[error("secret {reference}: {source}")]
    File {
        reference: SecretRef,
        #[source]
        source: Box<FileStoreError>,
    },
    /// Vault could not be reached or gave an unexpected answer.
    #[error("secret {reference}: {source}")]
    Vault {
        reference: SecretRef,
        #[source]
        source: Box<VaultError>,
    },
}

impl SecretError {
    /// The reference the failed read was for.
    pub fn reference(&self) -> &SecretRef {
        match self {
            SecretError::NotFound { reference }
            | SecretError::PermissionDenied { reference }
            | SecretError::BackendNotConfigured { reference }
            | SecretError::File { reference, .. }
            | SecretError::Vault { reference, .. } => reference,
        }
    }
}

/// Looks up a variable in the process environment; pass it where a function takes an `env`
/// lookup. Tests pass their own closure instead, so they never touch the process environment.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// Where secrets come from, as written in config (camelCase JSON; the authz-sidecar's TOML
/// `[secrets]` section uses the snake_case names, accepted as aliases). Both backends are
/// optional; a reference to one that is not configured fails with
/// [`SecretError::BackendNotConfigured`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretStoreConfig {
    /// The encrypted local file (`file:` references).
    #[serde(default)]
    pub file: Option<FileStoreConfig>,
    /// Vault KV v2 (`vault:` references).
    #[serde(default)]
    pub vault: Option<VaultConfig>,
}

/// The encrypted local file: where it is and where its key comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileStoreConfig {
    /// The secrets file (created by the management tooling, see [`EncryptedFileStore::create`]).
    pub path: PathBuf,
    /// Key file (64 hex digits, mode 0600). Exactly one of `keyFile` and `keyEnv` must be set.
    #[serde(default, alias = "key_file")]
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the key as 64 hex digits.
    #[serde(default, alias = "key_env")]
    pub key_env: Option<String>,
}

/// Why the secret store config could not be loaded; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum SecretConfigError {
    #[error("secret store config: {path}: {message}")]
    Parse { path: String, message: String },
    #[error("secret store config: file.{field}: {reason}")]
    File { field: &'static str, reason: String },
    #[error("secret store config: file: {0}")]
    FileStore(#[from] FileStoreError),
    #[error("secret store config: {0}")]
    Vault(#[from] VaultError),
}

impl SecretStoreConfig {
    /// Parses JSON config, naming the field path of any error (e.g. `vault.cacheTtlMs`).
    pub fn from_json(text: &str) -> Result<Self, SecretConfigError> {
        let deserializer = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| SecretConfigError::Parse {
            path: err.path().to_string(),
            message: err.inner().to_string(),
        })
    }
}

/// The configured backends; sends each reference to the backend its scheme names.
#[derive(Debug, Clone, Default)]
pub struct SecretResolver {
    file: Option<EncryptedFileStore>,
    vault: Option<VaultKvStore>,
}

impl SecretResolver {
    /// A resolver over the given backends.
    pub fn new(file: Option<EncryptedFileStore>, vault: Option<VaultKvStore>) -> Self {
        Self { file, vault }
    }

    /// Opens the configured backends: reads the key and decrypts the file once (a wrong key
    /// fails here, at start), reads the Vault token and builds the client.
    pub fn from_config(
        config: &SecretStoreConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SecretConfigError> {
        let file = match &config.file {
            None => None,
            Some(file) => {
                let key = match (&file.key_file, &file.key_env) {
                    (Some(path), None) => FileStoreKey::from_key_file(path)?,
                    (None, Some(var)) => FileStoreKey::from_env(var, env)?,
                    _ => {
                        return Err(SecretConfigError::File {
                            field: "keyFile",
                            reason: "set exactly one of keyFile and keyEnv".to_owned(),
                        });
                    }
                };
                Some(EncryptedFileStore::open(&file.path, key)?)
            }
        };
        let vault = match &config.vault {
            None => None,
            Some(vault) => {
                let (settings, token) = vault.load(env)?;
                Some(VaultKvStore::new(settings, token)?)
            }
        };
        Ok(Self { file, vault })
    }
}

impl SecretStore for SecretResolver {
    fn get<'a>(&'a self, reference: &'a SecretRef) -> SecretFuture<'a> {
        let not_configured = || -> SecretFuture<'a> {
            Box::pin(async move {
                Err(SecretError::BackendNotConfigured {
                    reference: reference.clone(),
                })
            })
        };
        match reference.backend() {
            SecretBackend::File => match &self.file {
                Some(file) => file.get(reference),
                None => not_configured(),
            },
            SecretBackend::Vault => match &self.vault {
                Some(vault) => vault.get(reference),
                None => not_configured(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolver_dispatches_by_scheme_and_reports_missing_backends() {
        let dir = tempfile::tempdir().unwrap();
        let store_path = dir.path().join("secrets.bin");
        let key_path = dir.path().join("secrets.key");
        let key = FileStoreKey::generate().unwrap();
        key.write_key_file(&key_path).unwrap();
        let store = EncryptedFileStore::create(&store_path, key).unwrap();
        let name = SecretRef::parse("file:upstream/github#token").unwrap();
        store
            .put(&name, &SecretValue::new("ghp_value".to_owned()))
            .unwrap();

        let config = SecretStoreConfig::from_json(&format!(
            r#"{{"file": {{"path": {:?}, "keyFile": {:?}}}}}"#,
            store_path, key_path
        ))
        .unwrap();
        let resolver = SecretResolver::from_config(&config, &|_| None).unwrap();
        assert_eq!(resolver.get(&name).await.unwrap().expose(), "ghp_value");

        let vault_ref = SecretRef::parse("vault:kv/upstream/github#token").unwrap();
        let err = resolver.get(&vault_ref).await.unwrap_err();
        assert!(matches!(err, SecretError::BackendNotConfigured { .. }));
        assert_eq!(
            err.to_string(),
            "secret vault:kv/upstream/github#token: the vault backend is not configured"
        );
    }

    #[test]
    fn config_errors_name_the_field_path() {
        let err = SecretStoreConfig::from_json(
            r#"{"vault": {"address": "http://v", "tokenEnv": "T", "cacheTtlMs": "x"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("vault.cacheTtlMs"), "{err}");
        let err = SecretStoreConfig::from_json(r#"{"files": {}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `files`"), "{err}");
        let config = SecretStoreConfig::from_json(r#"{"file": {"path": "/nonexistent"}}"#).unwrap();
        let err = SecretResolver::from_config(&config, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("file.keyFile"), "{err}");
    }
}
