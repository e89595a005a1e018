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

use serde::{Deserialize, Serialize};

use crate::config::{InvalidField, MAX_TOKEN_TTL_SECS, check_name, check_scope_token};

/// Default `token_ttl_secs` of an upstream's exchanged tokens: five minutes.
pub const DEFAULT_UPSTREAM_TOKEN_TTL_SECS: u64 = 300;
/// Default `header` a secret is sent in.
pub const DEFAULT_SECRET_HEADER: &str = "authorization";
/// Default `cache_secs` of a secret: how long the filter may reuse it.
pub const DEFAULT_SECRET_CACHE_SECS: u64 = 60;
/// Claims an upstream's `claims` table cannot set: the ones the token service itself decides
/// (RFC 7519 §4.1 registered claims, RFC 9068 §2.2, RFC 8693 §4.1-§4.4, RFC 7800 `cnf`).
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "client_id", "act", "may_act",
    "cnf", "auth_time", "acr", "amr", "roles", "groups", "entitlements",
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
                behavry_secrets::SecretRef::parse(reference).map_err(|err| {
                    InvalidField::new(format!("{prefix}secret"), err.to_string())
                })?;
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
        || !value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || TCHAR_EXTRA.contains(&b)
        })
    {
        return Err(InvalidField::new(
            field,
            format!("`{value}` is not a lowercase HTTP header name"),
        ));
    }
    if matches!(value, "host" | "content-length" | "transfer-encoding" | "connection") {
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

#[cfg(test)]
mod tests {
    use super::*;

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
