//! Upstream MCP servers that get their own credential instead of the agent's token: the
//! `[[upstreams]]` tables of the config.
//!
//! The agent's token is for the gateway only (its `aud`). On the way to an upstream named here,
//! the filter replaces `Authorization` with what `POST /v1/credentials` answers for the
//! upstream's `credential`:
//! - `exchange`: an access token minted by token exchange (RFC 8693) for the upstream's
//!   `resource` (RFC 8707 §2: it becomes the token's `aud`), carrying the agent as `sub` and the
//!   delegation chain as `act`;
//! - `secret`: a static key read from the secret store by reference, sent in `header`.
//!
//! The token exchange grant at `/oauth/token` accepts these `resource` values as targets too.

use std::collections::BTreeMap;
use std::path::Path;

use behavry_secrets::{
    FileStoreError, SecretBackend, SecretConfigError, SecretRef, SecretResolver, SecretStoreConfig,
    VaultError,
};
use serde::{Deserialize, Serialize};

use crate::config::{EnvSource, InvalidField, MAX_TOKEN_TTL_SECS, check_name, check_scope_token};

/// Default `token_ttl_secs` of an upstream's exchanged tokens: five minutes.
pub const DEFAULT_UPSTREAM_TOKEN_TTL_SECS: u64 = 300;
/// Default `header` a secret is sent in.
pub const DEFAULT_SECRET_HEADER: &str = "authorization";
/// Default `cache_secs` of a secret: how long the filter may reuse it.
pub const DEFAULT_SECRET_CACHE_SECS: u64 = 60;
/// Claims an upstream's `claims` table cannot set: the ones the token service itself decides
/// (RFC 7519 §4.1 registered claims, RFC 9068 §2.2, RFC 8693 §4.1-§4.4, RFC 7800 `cnf`).
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "scope",
    "client_id",
    "act",
    "may_act",
    "cnf",
    "auth_time",
    "acr",
    "amr",
    "roles",
    "groups",
    "entitlements",
];

/// How an upstream gets its credential.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialSource {
    /// A token minted by exchange for `resource`.
    Exchange,
    /// A static key from the secret store.
    Secret,
}

/// One `[[upstreams]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The logical server name: the filter route's `server`, and the key of an agent's
    /// `[agents.servers.<name>]` grant.
    pub name: String,
    /// The upstream's resource indicator (RFC 8707 §2): an absolute URI without a fragment. The
    /// `aud` of tokens exchanged for it.
    pub resource: String,
    /// `exchange` or `secret`.
    pub credential: CredentialSource,
    /// Scopes an exchanged token for this upstream may carry; a request is narrowed to them.
    /// Default: none, meaning the subject token's scopes pass unchanged.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Lifetime of exchanged tokens, `1..=900` seconds. Default 300.
    #[serde(default = "default_upstream_ttl")]
    pub token_ttl_secs: u64,
    /// Extra string claims of exchanged tokens; reserved names ([`RESERVED_CLAIMS`]) refused.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// `secret` only: the secret reference (`file:...#field` or `vault:...#field`).
    #[serde(default)]
    pub secret: Option<String>,
    /// `secret` only: the header the key goes in. Default `authorization`.
    #[serde(default = "default_secret_header")]
    pub header: String,
    /// `secret` only: text put before the key (e.g. `Bearer `). Default: `Bearer ` for the
    /// `authorization` header, nothing otherwise.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `secret` only: seconds the filter may reuse the key. Default 60.
    #[serde(default = "default_secret_cache_secs")]
    pub cache_secs: u64,
}

fn default_upstream_ttl() -> u64 {
    DEFAULT_UPSTREAM_TOKEN_TTL_SECS
}
fn default_secret_header() -> String {
    DEFAULT_SECRET_HEADER.to_owned()
}
fn default_secret_cache_secs() -> u64 {
    DEFAULT_SECRET_CACHE_SECS
}

impl UpstreamConfig {
    /// The text put before a secret in its header.
    pub fn secret_prefix(&self) -> &str {
        match &self.prefix {
            Some(prefix) => prefix,
            None if self.header == DEFAULT_SECRET_HEADER => "Bearer ",
            None => "",
        }
    }

    /// Check every field; `prefix` (e.g. `upstreams[0].`) is prepended to field names.
    pub fn validate(&self, prefix: &str) -> Result<(), InvalidField> {
        check_name(&format!("{prefix}name"), &self.name)?;
        check_resource_indicator(&format!("{prefix}resource"), &self.resource)?;
        for (index, scope) in self.scopes.iter().enumerate() {
            check_scope_token(&format!("{prefix}scopes[{index}]"), scope)?;
        }
        if self.token_ttl_secs == 0 || self.token_ttl_secs > MAX_TOKEN_TTL_SECS {
            return Err(InvalidField::new(
                format!("{prefix}token_ttl_secs"),
                format!(
                    "must be between 1 and {MAX_TOKEN_TTL_SECS}, got {}",
                    self.token_ttl_secs
                ),
            ));
        }
        for name in self.claims.keys() {
            if RESERVED_CLAIMS.contains(&name.as_str()) {
                return Err(InvalidField::new(
                    format!("{prefix}claims.{name}"),
                    "is a reserved claim the token service sets itself",
                ));
            }
            check_name(&format!("{prefix}claims.{name}"), name)?;
        }
        match self.credential {
            CredentialSource::Exchange => {
                if self.secret.is_some() {
                    return Err(InvalidField::new(
                        format!("{prefix}secret"),
                        "only an upstream with credential = \"secret\" takes a secret reference",
                    ));
                }
            }
            CredentialSource::Secret => {
                let Some(reference) = &self.secret else {
                    return Err(InvalidField::new(
                        format!("{prefix}secret"),
                        "is required when credential = \"secret\"",
                    ));
                };
                behavry_secrets::SecretRef::parse(reference)
                    .map_err(|err| InvalidField::new(format!("{prefix}secret"), err.to_string()))?;
                check_header_name(&format!("{prefix}header"), &self.header)?;
                if let Some(text) = &self.prefix
                    && !text.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
                {
                    return Err(InvalidField::new(
                        format!("{prefix}prefix"),
                        "must be visible ASCII or spaces",
                    ));
                }
                if self.cache_secs == 0 || self.cache_secs > MAX_TOKEN_TTL_SECS {
                    return Err(InvalidField::new(
                        format!("{prefix}cache_secs"),
                        format!(
                            "must be between 1 and {MAX_TOKEN_TTL_SECS}, got {}",
                            self.cache_secs
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// RFC 8707 §2: a resource indicator is an absolute URI without a fragment. Only http(s) URIs
/// name MCP servers.
pub fn check_resource_indicator(field: &str, value: &str) -> Result<(), InvalidField> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        None => Err(InvalidField::new(
            field,
            format!("`{value}` must be an absolute http(s) URI (RFC 8707 §2)"),
        )),
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            Err(InvalidField::new(field, format!("`{value}` names no host")))
        }
        Some(_) if value.contains('#') => Err(InvalidField::new(
            field,
            "must not contain a fragment (RFC 8707 §2)",
        )),
        Some(_) if value.chars().any(|c| c.is_whitespace() || c.is_control()) => Err(
            InvalidField::new(field, "must not contain spaces or control characters"),
        ),
        Some(_) => Ok(()),
    }
}

/// RFC 9110 §5.1 field names are tokens; lowercase here, as HTTP/2 and Envoy carry them.
fn check_header_name(field: &str, value: &str) -> Result<(), InvalidField> {
    const TCHAR_EXTRA: &[u8] = b"!#$%&'*+-.^_`|~";
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || TCHAR_EXTRA.contains(&b))
    {
        return Err(InvalidField::new(
            field,
            format!("`{value}` is not a lowercase HTTP header name"),
        ));
    }
    if matches!(
        value,
        "host" | "content-length" | "transfer-encoding" | "connection"
    ) {
        return Err(InvalidField::new(
            field,
            format!("`{value}` cannot carry a credential"),
        ));
    }
    Ok(())
}

/// Check a list of upstreams: each valid, names and resources unique.
pub fn validate_upstreams(upstreams: &[UpstreamConfig]) -> Result<(), InvalidField> {
    let mut names = std::collections::BTreeSet::new();
    let mut resources = std::collections::BTreeSet::new();
    for (index, upstream) in upstreams.iter().enumerate() {
        let prefix = format!("upstreams[{index}].");
        upstream.validate(&prefix)?;
        if !names.insert(upstream.name.as_str()) {
            return Err(InvalidField::new(
                format!("{prefix}name"),
                format!("upstream `{}` is configured twice", upstream.name),
            ));
        }
        if !resources.insert(upstream.resource.as_str()) {
            return Err(InvalidField::new(
                format!("{prefix}resource"),
                format!("resource `{}` is configured twice", upstream.resource),
            ));
        }
    }
    Ok(())
}

/// Check what the upstreams need from the rest of the config: a `secret` upstream's reference
/// must name a configured backend, and any upstream needs the proxy credential (without it the
/// filter could never fetch the upstream's credential).
pub fn check_upstream_needs(
    upstreams: &[UpstreamConfig],
    secrets: &SecretsConfig,
    proxy_credential_set: bool,
) -> Result<(), InvalidField> {
    if let Some(first) = upstreams.first()
        && !proxy_credential_set
    {
        return Err(InvalidField::new(
            "proxy_token_file",
            format!(
                "upstream `{}` needs the proxy credential (`proxy_token_file` or \
                 BEHAVRY_AUTHZ_PROXY_TOKEN) the filter fetches its credential with",
                first.name
            ),
        ));
    }
    for (index, upstream) in upstreams.iter().enumerate() {
        let Some(text) = &upstream.secret else {
            continue;
        };
        let reference = SecretRef::parse(text).map_err(|err| {
            InvalidField::new(format!("upstreams[{index}].secret"), err.to_string())
        })?;
        if !secrets.has_backend(reference.backend()) {
            return Err(InvalidField::new(
                format!("upstreams[{index}].secret"),
                format!(
                    "`{reference}` needs the {backend} backend, but `[secrets.{backend}]` is not \
                     configured",
                    backend = reference.backend()
                ),
            ));
        }
    }
    Ok(())
}

/// `[secrets]`: where the keys of `secret` upstreams are read from — the secret store's own
/// config type (its fields also take their snake_case TOML names). Each backend is optional; an
/// upstream whose reference names a missing one is refused at load ([`check_upstream_needs`]).
/// Relative paths resolve against the config file's folder.
pub type SecretsConfig = SecretStoreConfig;

/// What the sidecar adds to the secret store's config: paths resolved against the config
/// folder, the checks that need no I/O, and opening it with errors named by TOML field.
pub trait SecretsConfigExt: Sized {
    /// The same config with relative paths joined to `base_dir` (the config file's folder).
    fn resolved(self, base_dir: &Path) -> Self;
    /// Whether `backend` is configured.
    fn has_backend(&self, backend: SecretBackend) -> bool;
    /// The checks that need no file or network: one key source, one token source.
    fn validate(&self) -> Result<(), InvalidField>;
    /// Open the configured backends once, at start ([`SecretResolver::from_config`]: the key is
    /// read and the file decrypted, so a wrong key fails here; the Vault token is read and the
    /// client built). Errors name the `[secrets]` field to fix; none holds key material or a
    /// secret.
    fn open(&self, env: &dyn EnvSource) -> Result<SecretResolver, InvalidField>;
}

impl SecretsConfigExt for SecretStoreConfig {
    fn resolved(mut self, base_dir: &Path) -> SecretStoreConfig {
        if let Some(file) = &mut self.file {
            file.path = base_dir.join(&file.path);
            file.key_file = file.key_file.as_ref().map(|path| base_dir.join(path));
        }
        if let Some(vault) = &mut self.vault {
            vault.token_file = vault.token_file.as_ref().map(|path| base_dir.join(path));
            vault.ca_cert_file = vault.ca_cert_file.as_ref().map(|path| base_dir.join(path));
        }
        self
    }

    fn has_backend(&self, backend: SecretBackend) -> bool {
        match backend {
            SecretBackend::File => self.file.is_some(),
            SecretBackend::Vault => self.vault.is_some(),
        }
    }

    fn validate(&self) -> Result<(), InvalidField> {
        if let Some(file) = &self.file {
            if file.path.as_os_str().is_empty() {
                return Err(InvalidField::new("secrets.file.path", "must not be empty"));
            }
            if file.key_file.is_some() == file.key_env.is_some() {
                return Err(InvalidField::new(
                    "secrets.file.key_file",
                    "set exactly one of `key_file` and `key_env`",
                ));
            }
        }
        if let Some(vault) = &self.vault
            && vault.token_file.is_some() == vault.token_env.is_some()
        {
            return Err(InvalidField::new(
                "secrets.vault.token_file",
                "set exactly one of `token_file` and `token_env`",
            ));
        }
        Ok(())
    }

    fn open(&self, env: &dyn EnvSource) -> Result<SecretResolver, InvalidField> {
        let lookup = |name: &str| env.var(name);
        SecretResolver::from_config(self, &lookup)
            .map_err(|err| InvalidField::new(toml_field(self, &err), err.to_string()))
    }
}

/// The `[secrets]` TOML field a secret store error is about.
fn toml_field(config: &SecretStoreConfig, err: &SecretConfigError) -> &'static str {
    let key_field = match config.file.as_ref().map(|file| file.key_file.is_some()) {
        Some(false) => "secrets.file.key_env",
        _ => "secrets.file.key_file",
    };
    let token_field = match config
        .vault
        .as_ref()
        .map(|vault| vault.token_file.is_some())
    {
        Some(false) => "secrets.vault.token_env",
        _ => "secrets.vault.token_file",
    };
    match err {
        SecretConfigError::Parse { .. } => "secrets",
        SecretConfigError::File { .. } => key_field,
        // The key could not be had, or the file does not decrypt (most likely the wrong key).
        SecretConfigError::FileStore(
            FileStoreError::KeyFileTooOpen { .. }
            | FileStoreError::InvalidKey { .. }
            | FileStoreError::KeyEnvMissing { .. }
            | FileStoreError::Decrypt { .. },
        ) => key_field,
        SecretConfigError::FileStore(FileStoreError::Io { path, .. })
            if config
                .file
                .as_ref()
                .and_then(|file| file.key_file.as_ref())
                .is_some_and(|key_file| key_file == path) =>
        {
            key_field
        }
        SecretConfigError::FileStore(_) => "secrets.file.path",
        SecretConfigError::Vault(VaultError::Config { field, .. }) => match *field {
            "address" => "secrets.vault.address",
            "namespace" => "secrets.vault.namespace",
            "requestTimeoutMs" => "secrets.vault.request_timeout_ms",
            "cacheTtlMs" => "secrets.vault.cache_ttl_ms",
            "caCertFile" => "secrets.vault.ca_cert_file",
            _ => token_field,
        },
        SecretConfigError::Vault(VaultError::Token(_)) => token_field,
        SecretConfigError::Vault(_) => "secrets.vault",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use behavry_secrets::{EncryptedFileStore, FileStoreKey};

    use super::*;
    use crate::config::{Config, ConfigError, ENV_ADMIN_TOKEN, ENV_PROXY_TOKEN};

    const PROXY: &str = "proxy-credential-0123456789abcdefghijkl";

    fn load(dir: &Path, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_toml_str(text, &dir.join("authz.toml"), dir, &env)
    }

    const EXCHANGE_UPSTREAM: &str = "[[upstreams]]\nname = \"files\"\nresource = \"https://files.example/mcp\"\ncredential = \"exchange\"\n";

    #[test]
    fn upstreams_need_the_proxy_credential_from_file_or_env() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), EXCHANGE_UPSTREAM, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`proxy_token_file`") && err.contains("files"),
            "{err}"
        );
        // No upstream, no proxy credential: the endpoint is simply disabled.
        assert_eq!(load(dir.path(), "", &[]).unwrap().proxy_token, None);

        std::fs::write(dir.path().join("proxy"), format!("{PROXY}\n")).unwrap();
        let text = format!("proxy_token_file = \"proxy\"\n{EXCHANGE_UPSTREAM}");
        let config = load(dir.path(), &text, &[]).unwrap();
        assert_eq!(
            config.proxy_token.as_ref().unwrap().expose(),
            PROXY.as_bytes()
        );
        assert!(!format!("{config:?}").contains(PROXY));

        let from_env = "e".repeat(40);
        let config = load(dir.path(), &text, &[(ENV_PROXY_TOKEN, &from_env)]).unwrap();
        assert_eq!(config.proxy_token.unwrap().expose(), from_env.as_bytes());

        let err = load(dir.path(), &text, &[(ENV_PROXY_TOKEN, "short")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(ENV_PROXY_TOKEN) && err.contains("at least"),
            "{err}"
        );
        let err = load(dir.path(), "proxy_token_file = \"absent\"", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`proxy_token_file`"), "{err}");
        // The filter's credential must not also be the admin credential.
        let err = load(dir.path(), &text, &[(ENV_ADMIN_TOKEN, PROXY)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("must differ"), "{err}");
    }

    #[test]
    fn secrets_section_resolves_paths_and_backends_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("proxy"), PROXY).unwrap();
        let keyed = "proxy_token_file = \"proxy\"\n[[upstreams]]\nname = \"keyed\"\n\
                     resource = \"https://keyed.example/mcp\"\ncredential = \"secret\"\n\
                     secret = \"vault:kv/upstream/keyed#key\"\n";
        let err = load(dir.path(), keyed, &[]).unwrap_err().to_string();
        assert!(
            err.contains("`upstreams[0].secret`") && err.contains("[secrets.vault]"),
            "{err}"
        );
        let text = format!(
            "{keyed}[secrets.vault]\naddress = \"http://127.0.0.1:8200\"\ntoken_file = \"vault-token\"\n\
             [secrets.file]\npath = \"state/secrets.bin\"\nkey_env = \"KEY\"\n"
        );
        let config = load(dir.path(), &text, &[]).unwrap();
        let vault = config.secrets.vault.as_ref().unwrap();
        assert_eq!(
            vault.token_file.as_deref(),
            Some(dir.path().join("vault-token").as_path())
        );
        assert_eq!(
            vault.request_timeout_ms,
            behavry_secrets::vault::DEFAULT_REQUEST_TIMEOUT_MS
        );
        let file = config.secrets.file.as_ref().unwrap();
        assert_eq!(file.path, dir.path().join("state/secrets.bin"));

        for (bad, field) in [
            ("[secrets.file]\npath = \"s\"", "`secrets.file.key_file`"),
            (
                "[secrets.file]\npath = \"s\"\nkey_file = \"k\"\nkey_env = \"K\"",
                "`secrets.file.key_file`",
            ),
            (
                "[secrets.vault]\naddress = \"http://v\"",
                "`secrets.vault.token_file`",
            ),
            // Unknown keys are refused (the store's camelCase names are accepted too: it is
            // the secret store's own config type).
            ("[secrets.file]\npath = \"s\"\nkey_path = \"k\"", "key_path"),
        ] {
            let err = load(dir.path(), bad, &[]).unwrap_err().to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }

    #[test]
    fn opening_the_store_names_the_field_of_a_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileStoreKey::generate().unwrap();
        key.write_key_file(&dir.path().join("right.key")).unwrap();
        EncryptedFileStore::create(dir.path().join("secrets.bin"), key).unwrap();
        FileStoreKey::generate()
            .unwrap()
            .write_key_file(&dir.path().join("wrong.key"))
            .unwrap();
        let section =
            |key: &str| format!("[secrets.file]\npath = \"secrets.bin\"\nkey_file = \"{key}\"\n");
        let right = load(dir.path(), &section("right.key"), &[]).unwrap();
        right.secrets.open(&HashMap::new()).unwrap();

        let wrong = load(dir.path(), &section("wrong.key"), &[]).unwrap();
        let err = wrong.secrets.open(&HashMap::new()).unwrap_err();
        assert_eq!(err.field, "secrets.file.key_file");
        assert!(err.reason.contains("cannot decrypt"), "{}", err.reason);

        let absent = load(dir.path(), &section("absent.key"), &[]).unwrap();
        assert_eq!(
            absent.secrets.open(&HashMap::new()).unwrap_err().field,
            "secrets.file.key_file"
        );

        let no_env = load(
            dir.path(),
            "[secrets.file]\npath = \"secrets.bin\"\nkey_env = \"SECRETS_KEY\"",
            &[],
        )
        .unwrap();
        assert_eq!(
            no_env.secrets.open(&HashMap::new()).unwrap_err().field,
            "secrets.file.key_env"
        );

        let vault = load(
            dir.path(),
            "[secrets.vault]\naddress = \"http://127.0.0.1:1\"\ntoken_env = \"VAULT_TOKEN\"",
            &[],
        )
        .unwrap();
        let err = vault.secrets.open(&HashMap::new()).unwrap_err();
        assert_eq!(err.field, "secrets.vault.token_env");
    }

    fn exchange(name: &str, resource: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.to_owned(),
            resource: resource.to_owned(),
            credential: CredentialSource::Exchange,
            scopes: Vec::new(),
            token_ttl_secs: DEFAULT_UPSTREAM_TOKEN_TTL_SECS,
            claims: BTreeMap::new(),
            secret: None,
            header: DEFAULT_SECRET_HEADER.to_owned(),
            prefix: None,
            cache_secs: DEFAULT_SECRET_CACHE_SECS,
        }
    }

    fn secret(reference: &str, header: &str) -> UpstreamConfig {
        UpstreamConfig {
            credential: CredentialSource::Secret,
            secret: Some(reference.to_owned()),
            header: header.to_owned(),
            ..exchange("keyed", "https://keyed.example/mcp")
        }
    }

    #[test]
    fn accepts_exchange_and_secret_upstreams() {
        let list = [
            exchange("files", "https://files.example/mcp"),
            secret("file:upstream/keyed#api_key", "x-api-key"),
        ];
        validate_upstreams(&list).unwrap();
        assert_eq!(list[1].secret_prefix(), "");
        assert_eq!(
            secret("file:a#b", "authorization").secret_prefix(),
            "Bearer "
        );
    }

    #[test]
    fn refuses_bad_resource_indicators() {
        for bad in [
            "files",
            "ftp://files.example",
            "https://",
            "https:///mcp",
            "https://files.example/mcp#frag",
            "https://files.example/m cp",
        ] {
            let err = exchange("files", bad).validate("u.").unwrap_err();
            assert_eq!(err.field, "u.resource", "{bad}");
        }
    }

    #[test]
    fn refuses_reserved_claims() {
        for name in ["sub", "aud", "act", "may_act", "scope", "client_id", "exp"] {
            let mut upstream = exchange("files", "https://files.example/mcp");
            upstream.claims.insert(name.to_owned(), "x".to_owned());
            let err = upstream.validate("u.").unwrap_err();
            assert_eq!(err.field, format!("u.claims.{name}"));
        }
        let mut upstream = exchange("files", "https://files.example/mcp");
        upstream
            .claims
            .insert("tenant".to_owned(), "blue".to_owned());
        upstream.validate("u.").unwrap();
    }

    #[test]
    fn secret_upstreams_need_a_valid_reference_and_header() {
        let mut missing = secret("file:a#b", "x-api-key");
        missing.secret = None;
        assert_eq!(missing.validate("u.").unwrap_err().field, "u.secret");
        assert_eq!(
            secret("nowhere:a#b", "x-api-key")
                .validate("u.")
                .unwrap_err()
                .field,
            "u.secret"
        );
        for header in ["X-Api-Key", "", "host", "bad header"] {
            assert_eq!(
                secret("file:a#b", header).validate("u.").unwrap_err().field,
                "u.header",
                "{header}"
            );
        }
        let mut both = exchange("files", "https://files.example/mcp");
        both.secret = Some("file:a#b".to_owned());
        assert_eq!(both.validate("u.").unwrap_err().field, "u.secret");
    }

    #[test]
    fn names_and_resources_are_unique() {
        let twice = [
            exchange("files", "https://a.example/mcp"),
            exchange("files", "https://b.example/mcp"),
        ];
        assert_eq!(
            validate_upstreams(&twice).unwrap_err().field,
            "upstreams[1].name"
        );
        let same_resource = [
            exchange("a", "https://a.example/mcp"),
            exchange("b", "https://a.example/mcp"),
        ];
        assert_eq!(
            validate_upstreams(&same_resource).unwrap_err().field,
            "upstreams[1].resource"
        );
    }
}
