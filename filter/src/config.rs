//! Plugin configuration: the JSON Envoy hands the filter in `configuration`.
//!
//! One serde convention (camelCase, unknown fields rejected), defaults named below, and
//! [`FilterConfig::from_json`] validates everything once at start: a bad config is refused with
//! a message that names the field, and Envoy then refuses to load the filter.

use std::sync::Arc;

use behavry_core::dlp::{CustomDetectorConfig, DlpConfig, FindingKey, Scanner};
use behavry_core::limits::Limits;

use crate::resource_metadata::ProtectedResource;
use serde::Deserialize;

/// Default deadline for an authz-sidecar decision, in milliseconds.
pub const DEFAULT_AUTHZ_TIMEOUT_MS: u64 = 500;
/// Default period of the audit shipping timer, in milliseconds.
pub const DEFAULT_AUDIT_FLUSH_MS: u64 = 100;
/// Default largest number of events in one batch to the audit-sink.
pub const DEFAULT_AUDIT_MAX_BATCH: usize = 500;
/// Default deadline for one batch delivery to the audit-sink, in milliseconds.
pub const DEFAULT_AUDIT_TIMEOUT_MS: u64 = 2_000;
/// Default upper bound of one batch to the audit-sink, in bytes (the sink takes up to 16 MiB).
pub const DEFAULT_AUDIT_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Default bound of the audit backlog: events queued in Envoy and not yet acknowledged by the
/// sink (about 100 MB at 1 KB an event). At it, new governed calls fail closed.
pub const DEFAULT_AUDIT_MAX_QUEUED: u64 = 100_000;
/// Largest deadline accepted for a callout, in milliseconds: proxy-wasm passes timeouts as
/// 32-bit milliseconds, and a longer wait is a misconfiguration, not a policy.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Default period of the revocation-list poll, in milliseconds.
pub const DEFAULT_REVOCATION_POLL_MS: u64 = 1_000;
/// Default `inline.pollIntervalMs`: how stale a worker's decision table may get.
pub const DEFAULT_INLINE_POLL_MS: u64 = 1_000;
/// Default `inline.cacheEntries` (per worker).
pub const DEFAULT_INLINE_CACHE_ENTRIES: usize = 10_000;
/// Largest `inline.cacheEntries`.
pub const MAX_INLINE_CACHE_ENTRIES: usize = 1_000_000;
/// Default name of the Envoy shared queue that carries audit events.
pub const DEFAULT_AUDIT_QUEUE: &str = "behavry.audit";
/// Default `payload_in_metadata` key of Envoy's `jwt_authn` filter.
pub const DEFAULT_JWT_METADATA_KEY: &str = "jwt_payload";
/// Default `header_in_metadata` key of Envoy's `jwt_authn` filter (the token's JOSE header).
pub const DEFAULT_JWT_HEADER_METADATA_KEY: &str = "jwt_header";
/// Default `forward_payload_header` of Envoy's `jwt_authn` filter: the verified payload,
/// base64url, from which the filter reads `act`, `scope` and `exp`.
pub const DEFAULT_JWT_PAYLOAD_HEADER: &str = "x-behavry-jwt-payload";
/// Default authority of calls to the credentials endpoint.
pub const DEFAULT_CREDENTIALS_AUTHORITY: &str = "behavry-authz";
/// Default deadline for an upstream credential from the authz-sidecar, in milliseconds (a token
/// exchange or a secret store read sits behind it).
pub const DEFAULT_CREDENTIALS_TIMEOUT_MS: u64 = 1_000;

/// The validated filter configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterConfig {
    /// MCP routes, longest prefix first.
    pub routes: Vec<McpRoute>,
    pub authz: ClusterTarget,
    pub audit: AuditShipping,
    /// Where the verified JWT payload sits in dynamic metadata.
    pub jwt_metadata_key: String,
    /// Where the verified JWT's JOSE header sits in dynamic metadata (for `typ`).
    pub jwt_header_metadata_key: String,
    /// Request header (lowercase) where `jwt_authn` forwards the verified payload; always removed
    /// before forwarding.
    pub jwt_payload_header: String,
    /// Where upstream credentials come from, for routes with `upstreamCredential`.
    pub credentials: Option<CredentialSource>,
    pub failure_mode: FailureMode,
    pub limits: Limits,
    /// Paths under this prefix that no route lists are refused (404) instead of passing
    /// ungoverned: Envoy's routes and this route table are configured apart, and a path Envoy
    /// routes but the filter does not know must not become a way around it.
    pub guarded_prefix: Option<String>,
    /// RFC 9728 protected-resource metadata served for each route, when set.
    pub protected_resource: Option<ProtectedResource>,
    /// How often each worker polls the authz-sidecar's revocation list.
    pub revocation_poll_ms: u64,
    /// Inline decisions (the published decision table and the decision cache).
    pub inline: InlineDecisions,
    /// Content scanning (docs/dlp.md); off when the `dlp` block is absent.
    pub dlp: Option<Arc<DlpSettings>>,
    /// The tenant whose pinned tool definitions this proxy uses and reports to (docs/pins.md,
    /// "Tenants"); `default` when not configured.
    pub tenant: String,
    /// Whether answers are read for prompt injection (docs/injection.md); on unless
    /// `scanInjection` is `false`.
    pub scan_injection: bool,
}

/// Shortest `dlp.hashKey` accepted: 32 bytes, the HMAC-SHA256 output size (RFC 2104 §3 advises
/// keys no shorter than the hash output).
pub const MIN_DLP_HASH_KEY_BYTES: usize = 32;

/// `dlp`: the compiled detectors and the key of findings' hashes, built once at load and shared
/// by every exchange of the worker.
#[derive(Clone)]
pub struct DlpSettings {
    /// The detector settings as configured.
    pub detectors: DlpConfig,
    /// The compiled detectors.
    pub scanner: Arc<Scanner>,
    /// The HMAC key of findings' hashes.
    pub key: FindingKey,
    key_text: String,
}

// By hand: the key never reaches a log.
impl std::fmt::Debug for DlpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlpSettings")
            .field("detectors", &self.detectors)
            .finish_non_exhaustive()
    }
}

impl PartialEq for DlpSettings {
    fn eq(&self, other: &Self) -> bool {
        self.detectors == other.detectors && self.key_text == other.key_text
    }
}

/// `inline`: decisions made without a callout (docs/policy.md, "Inline decisions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineDecisions {
    /// Whether the table and the cache are used at all (`false`: every decision is a callout).
    pub enabled: bool,
    /// How often each worker fetches the table (and the bundle digest) from the authz cluster.
    pub poll_interval_ms: u64,
    /// Most cached decisions per worker.
    pub cache_entries: usize,
}

/// A path prefix on which MCP traffic to one upstream server arrives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpRoute {
    /// Path prefix, e.g. `/mcp/everything`; matches the prefix itself and anything below it.
    pub path_prefix: String,
    /// Logical server name used in policy and audit.
    pub server: String,
    /// Replace the agent's credential with one issued for this upstream (from the authz-sidecar's
    /// credentials endpoint) on every forwarded request. Default: false.
    #[serde(default)]
    pub upstream_credential: bool,
}

/// The authz-sidecar endpoint that hands out upstream credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialSource {
    pub target: ClusterTarget,
    /// Bearer token the filter authenticates with. A secret: never printed.
    pub proxy_token: String,
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSource")
            .field("target", &self.target)
            .field("proxy_token", &"[REDACTED]")
            .finish()
    }
}

/// An Envoy cluster the filter calls with `dispatch_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    pub cluster: String,
    pub authority: String,
    pub timeout_ms: u64,
}

/// How audit events reach the audit-sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditShipping {
    pub sink: ClusterTarget,
    pub queue_name: String,
    pub flush_interval_ms: u64,
    pub max_batch: usize,
    pub max_batch_bytes: usize,
    /// The most events queued and not yet acknowledged before new governed calls are refused.
    pub max_queued: u64,
    /// At `max_queued`: refuse new governed calls (`Closed`, -32082) or let them run and count
    /// them (`Open`).
    pub when_full: FailureMode,
    /// Commit a call's intent and decision at the sink before the call proceeds (a call whose
    /// records cannot be committed is refused with -32082); outcomes are shipped as usual.
    pub sync: bool,
}

/// What happens when the authz-sidecar cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// Deny with a clear JSON-RPC error (the default).
    Closed,
    /// Let the call through, and say so in the audit log.
    Open,
}

// No `Debug`: it holds the proxy token.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    routes: Vec<McpRoute>,
    authz: RawCluster,
    audit: RawAudit,
    #[serde(default)]
    jwt_metadata_key: Option<String>,
    #[serde(default)]
    jwt_header_metadata_key: Option<String>,
    #[serde(default)]
    jwt_payload_header: Option<String>,
    #[serde(default)]
    credentials: Option<RawCredentials>,
    #[serde(default)]
    failure_mode: Option<FailureMode>,
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    guarded_prefix: Option<String>,
    #[serde(default)]
    protected_resource: Option<ProtectedResource>,
    #[serde(default)]
    revocation: Option<RawRevocation>,
    #[serde(default)]
    inline: Option<RawInline>,
    #[serde(default)]
    dlp: Option<RawDlp>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    scan_injection: Option<bool>,
}

// No `Debug`: it holds the hash key.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDlp {
    hash_key: String,
    #[serde(default)]
    disabled: Vec<String>,
    #[serde(default)]
    private_ranges: Option<Vec<String>>,
    #[serde(default)]
    custom: Vec<CustomDetectorConfig>,
}

impl RawDlp {
    fn settings(self) -> Result<DlpSettings, ConfigError> {
        if self.hash_key.len() < MIN_DLP_HASH_KEY_BYTES
            || !self.hash_key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(field(
                "dlp.hashKey",
                format!("must be at least {MIN_DLP_HASH_KEY_BYTES} visible ASCII characters"),
            ));
        }
        let defaults = DlpConfig::default();
        let detectors = DlpConfig {
            disabled: self.disabled,
            private_ranges: self.private_ranges.unwrap_or(defaults.private_ranges),
            custom: self.custom,
        };
        let scanner = Scanner::new(&detectors).map_err(|e| field("dlp", e.to_string()))?;
        Ok(DlpSettings {
            detectors,
            scanner: Arc::new(scanner),
            key: FindingKey::new(self.hash_key.as_bytes()),
            key_text: self.hash_key,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawInline {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    poll_interval_ms: Option<u64>,
    #[serde(default)]
    cache_entries: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRevocation {
    #[serde(default)]
    poll_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCluster {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCredentials {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    proxy_token: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAudit {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    queue_name: Option<String>,
    #[serde(default)]
    flush_interval_ms: Option<u64>,
    #[serde(default)]
    max_batch: Option<usize>,
    #[serde(default)]
    max_batch_bytes: Option<usize>,
    #[serde(default)]
    max_queued: Option<u64>,
    #[serde(default)]
    when_full: Option<FailureMode>,
    #[serde(default)]
    sync: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    max_json_depth: Option<usize>,
    #[serde(default)]
    max_sse_event_bytes: Option<usize>,
}

/// Why a configuration was refused. The message always names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("behavry filter configuration is missing")]
    Missing,
    #[error("behavry filter configuration is not valid: {0}")]
    Syntax(String),
    #[error("behavry filter configuration field `{field}` {problem}")]
    Field { field: String, problem: String },
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

fn non_empty(name: &str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        return Err(field(name, "must not be empty"));
    }
    Ok(value)
}

fn timeout(name: &str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    match value {
        Some(0) => Err(field(name, "must be greater than 0")),
        Some(v) if v > MAX_TIMEOUT_MS => {
            Err(field(name, format!("must be at most {MAX_TIMEOUT_MS} ms")))
        }
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn positive_usize(name: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value {
        Some(0) => Err(field(name, "must be greater than 0")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

impl FilterConfig {
    /// Parse and validate the plugin configuration bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::Missing);
        }
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                ConfigError::Syntax(e.into_inner().to_string())
            } else {
                field(path, format!("is not valid: {}", e.into_inner()))
            }
        })?;

        if raw.routes.is_empty() {
            return Err(field("routes", "must list at least one MCP route"));
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, route) in raw.routes.into_iter().enumerate() {
            let prefix_field = format!("routes[{i}].pathPrefix");
            if !route.path_prefix.starts_with('/') {
                return Err(field(prefix_field, "must start with '/'"));
            }
            if route.path_prefix.len() > 1 && route.path_prefix.ends_with('/') {
                return Err(field(prefix_field, "must not end with '/'"));
            }
            let server = non_empty(&format!("routes[{i}].server"), route.server)?;
            if routes
                .iter()
                .any(|r: &McpRoute| r.path_prefix == route.path_prefix)
            {
                return Err(field(prefix_field, "is listed twice"));
            }
            if route.upstream_credential && raw.credentials.is_none() {
                return Err(field(
                    format!("routes[{i}].upstreamCredential"),
                    "needs a `credentials` section",
                ));
            }
            routes.push(McpRoute {
                path_prefix: route.path_prefix,
                server,
                upstream_credential: route.upstream_credential,
            });
        }
        // Longest prefix first, so the most specific route wins.
        routes.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));

        let authz = ClusterTarget {
            cluster: non_empty("authz.cluster", raw.authz.cluster)?,
            authority: non_empty(
                "authz.authority",
                raw.authz
                    .authority
                    .unwrap_or_else(|| "behavry-authz".to_string()),
            )?,
            timeout_ms: timeout(
                "authz.timeoutMs",
                raw.authz.timeout_ms,
                DEFAULT_AUTHZ_TIMEOUT_MS,
            )?,
        };
        let audit = AuditShipping {
            sink: ClusterTarget {
                cluster: non_empty("audit.cluster", raw.audit.cluster)?,
                authority: non_empty(
                    "audit.authority",
                    raw.audit
                        .authority
                        .unwrap_or_else(|| "behavry-audit".to_string()),
                )?,
                timeout_ms: timeout(
                    "audit.timeoutMs",
                    raw.audit.timeout_ms,
                    DEFAULT_AUDIT_TIMEOUT_MS,
                )?,
            },
            queue_name: non_empty(
                "audit.queueName",
                raw.audit
                    .queue_name
                    .unwrap_or_else(|| DEFAULT_AUDIT_QUEUE.to_string()),
            )?,
            flush_interval_ms: timeout(
                "audit.flushIntervalMs",
                raw.audit.flush_interval_ms,
                DEFAULT_AUDIT_FLUSH_MS,
            )?,
            max_batch: positive_usize(
                "audit.maxBatch",
                raw.audit.max_batch,
                DEFAULT_AUDIT_MAX_BATCH,
            )?,
            max_batch_bytes: positive_usize(
                "audit.maxBatchBytes",
                raw.audit.max_batch_bytes,
                DEFAULT_AUDIT_MAX_BATCH_BYTES,
            )?,
            max_queued: match raw.audit.max_queued {
                Some(0) => return Err(field("audit.maxQueued", "must be greater than 0")),
                Some(n) => n,
                None => DEFAULT_AUDIT_MAX_QUEUED,
            },
            when_full: raw.audit.when_full.unwrap_or(FailureMode::Closed),
            sync: raw.audit.sync,
        };
        let credentials = match raw.credentials {
            None => None,
            Some(c) => Some(CredentialSource {
                target: ClusterTarget {
                    cluster: non_empty("credentials.cluster", c.cluster)?,
                    authority: non_empty(
                        "credentials.authority",
                        c.authority
                            .unwrap_or_else(|| DEFAULT_CREDENTIALS_AUTHORITY.to_string()),
                    )?,
                    timeout_ms: timeout(
                        "credentials.timeoutMs",
                        c.timeout_ms,
                        DEFAULT_CREDENTIALS_TIMEOUT_MS,
                    )?,
                },
                // RFC 6750 §2.1: a b64token is visible ASCII; anything else could split the
                // Authorization header. The value itself is never echoed.
                proxy_token: if !c.proxy_token.is_empty()
                    && c.proxy_token.bytes().all(|b| b.is_ascii_graphic())
                {
                    c.proxy_token
                } else {
                    return Err(field(
                        "credentials.proxyToken",
                        "must be non-empty visible ASCII",
                    ));
                },
            }),
        };
        let jwt_payload_header = non_empty(
            "jwtPayloadHeader",
            raw.jwt_payload_header
                .unwrap_or_else(|| DEFAULT_JWT_PAYLOAD_HEADER.to_string()),
        )?;
        // RFC 9110 §5.1 token characters, lowercase as Envoy keys its header map.
        if !jwt_payload_header
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            return Err(field("jwtPayloadHeader", "must be a lowercase header name"));
        }
        let defaults = Limits::default();
        let limits = match raw.limits {
            None => defaults,
            Some(l) => Limits {
                max_body_bytes: positive_usize(
                    "limits.maxBodyBytes",
                    l.max_body_bytes,
                    defaults.max_body_bytes,
                )?,
                max_json_depth: positive_usize(
                    "limits.maxJsonDepth",
                    l.max_json_depth,
                    defaults.max_json_depth,
                )?,
                max_sse_event_bytes: positive_usize(
                    "limits.maxSseEventBytes",
                    l.max_sse_event_bytes,
                    defaults.max_sse_event_bytes,
                )?,
            },
        };
        limits
            .validate()
            .map_err(|e| field("limits", e.to_string()))?;
        Ok(FilterConfig {
            routes,
            authz,
            audit,
            jwt_metadata_key: non_empty(
                "jwtMetadataKey",
                raw.jwt_metadata_key
                    .unwrap_or_else(|| DEFAULT_JWT_METADATA_KEY.to_string()),
            )?,
            jwt_header_metadata_key: non_empty(
                "jwtHeaderMetadataKey",
                raw.jwt_header_metadata_key
                    .unwrap_or_else(|| DEFAULT_JWT_HEADER_METADATA_KEY.to_string()),
            )?,
            jwt_payload_header,
            credentials,
            failure_mode: raw.failure_mode.unwrap_or(FailureMode::Closed),
            limits,
            guarded_prefix: raw.guarded_prefix,
            tenant: match raw.tenant {
                None => behavry_core::pins::DEFAULT_TENANT.to_owned(),
                Some(tenant) if behavry_core::pins::is_tenant_name(&tenant) => tenant,
                Some(_) => {
                    return Err(field(
                        "tenant",
                        format!(
                            "must be 1 to {} ASCII letters, digits, `.`, `_` or `-`",
                            behavry_core::pins::MAX_TENANT_CHARS
                        ),
                    ));
                }
            },
            scan_injection: raw.scan_injection.unwrap_or(true),
            protected_resource: raw.protected_resource,
            revocation_poll_ms: timeout(
                "revocation.pollIntervalMs",
                raw.revocation.and_then(|r| r.poll_interval_ms),
                DEFAULT_REVOCATION_POLL_MS,
            )?,
            inline: InlineDecisions {
                enabled: raw.inline.as_ref().and_then(|i| i.enabled).unwrap_or(true),
                poll_interval_ms: timeout(
                    "inline.pollIntervalMs",
                    raw.inline.as_ref().and_then(|i| i.poll_interval_ms),
                    DEFAULT_INLINE_POLL_MS,
                )?,
                cache_entries: match raw.inline.as_ref().and_then(|i| i.cache_entries) {
                    None => DEFAULT_INLINE_CACHE_ENTRIES,
                    Some(n) if n <= MAX_INLINE_CACHE_ENTRIES => n,
                    Some(_) => {
                        return Err(field(
                            "inline.cacheEntries",
                            format!("must be at most {MAX_INLINE_CACHE_ENTRIES}"),
                        ));
                    }
                },
            },
            dlp: raw.dlp.map(RawDlp::settings).transpose()?.map(Arc::new),
        })
    }

    /// The `Authorization` value the filter shows the authz-sidecar on every call it makes to
    /// it (decisions, the decision table, revocations, credentials): the proxy credential of
    /// `credentials.proxyToken`, when configured (RFC 6750 §2.1).
    pub fn authz_authorization(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .map(|source| format!("Bearer {}", source.proxy_token))
    }

    /// Whether `path` lies under the guarded prefix (at a segment boundary).
    pub fn is_guarded(&self, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.guarded_prefix.as_deref().is_some_and(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// The MCP route a request path belongs to, if any. The query string is ignored, and a
    /// prefix matches only at a segment boundary (`/mcp/a` does not match `/mcp/ab`).
    pub fn route_for(&self, path: &str) -> Option<&McpRoute> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.routes.iter().find(|r| {
            path.strip_prefix(r.path_prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "routes": [{"pathPrefix": "/mcp/everything", "server": "everything"}],
        "authz": {"cluster": "behavry_authz"},
        "audit": {"cluster": "behavry_audit"}
    }"#;

    #[test]
    fn minimal_config_gets_named_defaults() {
        let config = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
        assert_eq!(config.authz.timeout_ms, DEFAULT_AUTHZ_TIMEOUT_MS);
        assert_eq!(config.audit.queue_name, DEFAULT_AUDIT_QUEUE);
        assert_eq!(config.audit.max_batch, DEFAULT_AUDIT_MAX_BATCH);
        assert_eq!(config.audit.max_queued, DEFAULT_AUDIT_MAX_QUEUED);
        assert_eq!(config.audit.when_full, FailureMode::Closed);
        assert!(!config.audit.sync);
        assert_eq!(config.jwt_metadata_key, DEFAULT_JWT_METADATA_KEY);
        assert_eq!(config.failure_mode, FailureMode::Closed);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.tenant, behavry_core::pins::DEFAULT_TENANT);
        assert!(config.scan_injection);
    }

    #[test]
    fn tenant_is_a_plain_name() {
        let with = |tenant: &str| {
            let mut raw: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
            raw["tenant"] = serde_json::json!(tenant);
            FilterConfig::from_json(raw.to_string().as_bytes())
        };
        assert_eq!(with("blue-2.prod").unwrap().tenant, "blue-2.prod");
        for bad in ["", "a&b=c", "blue team", "ä"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("tenant"), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_section_is_read_and_its_token_never_printed() {
        let json = r#"{
            "routes": [{"pathPrefix": "/m", "server": "s", "upstreamCredential": true},
                       {"pathPrefix": "/n", "server": "n"}],
            "authz": {"cluster": "a"}, "audit": {"cluster": "b"},
            "credentials": {"cluster": "authz", "proxyToken": "s3cr3t-proxy-token"}
        }"#;
        let config = FilterConfig::from_json(json.as_bytes()).unwrap();
        let credentials = config.credentials.as_ref().unwrap();
        assert_eq!(credentials.target.cluster, "authz");
        assert_eq!(credentials.target.authority, DEFAULT_CREDENTIALS_AUTHORITY);
        assert_eq!(
            credentials.target.timeout_ms,
            DEFAULT_CREDENTIALS_TIMEOUT_MS
        );
        assert_eq!(credentials.proxy_token, "s3cr3t-proxy-token");
        assert!(config.route_for("/m").unwrap().upstream_credential);
        assert!(!config.route_for("/n").unwrap().upstream_credential);
        assert!(!format!("{config:?}").contains("s3cr3t"));
        assert_eq!(config.jwt_payload_header, DEFAULT_JWT_PAYLOAD_HEADER);
    }

    #[test]
    fn routes_match_on_segment_boundaries() {
        let json = r#"{
            "routes": [{"pathPrefix": "/mcp", "server": "root"},
                       {"pathPrefix": "/mcp/everything", "server": "everything"}],
            "authz": {"cluster": "a"}, "audit": {"cluster": "b"}
        }"#;
        let config = FilterConfig::from_json(json.as_bytes()).unwrap();
        let server = |p: &str| config.route_for(p).map(|r| r.server.as_str());
        assert_eq!(server("/mcp/everything"), Some("everything"));
        assert_eq!(server("/mcp/everything?x=1"), Some("everything"));
        assert_eq!(server("/mcp/everything/sub"), Some("everything"));
        assert_eq!(server("/mcp/everythingelse"), Some("root"));
        assert_eq!(server("/mcpx"), None);
        assert_eq!(server("/healthz"), None);
    }

    #[test]
    fn guarded_prefix_covers_unlisted_paths_below_it() {
        let json = r#"{
            "routes": [{"pathPrefix": "/mcp/a", "server": "a"}],
            "authz": {"cluster": "a"}, "audit": {"cluster": "b"}, "guardedPrefix": "/mcp"
        }"#;
        let config = FilterConfig::from_json(json.as_bytes()).unwrap();
        assert!(config.is_guarded("/mcp/unlisted"));
        assert!(config.is_guarded("/mcp"));
        assert!(!config.is_guarded("/mcpx"));
        assert!(!config.is_guarded("/other"));
    }

    #[test]
    fn dlp_section_compiles_the_detectors_and_never_prints_the_key() {
        let base = r#""routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b""#;
        let config = FilterConfig::from_json(format!("{{{base}}}}}").as_bytes()).unwrap();
        assert!(config.dlp.is_none(), "no section, no scanning");
        let json = format!(
            r#"{{{base}}}, "dlp": {{"hashKey": "k3y-0123456789abcdef0123456789abcdef", "disabled": ["phone"],
                "custom": [{{"id": "ticket", "pattern": "TCK-[0-9]{{6}}"}}]}}}}"#
        );
        let config = FilterConfig::from_json(json.as_bytes()).unwrap();
        let dlp = config.dlp.as_ref().unwrap();
        assert_eq!(dlp.detectors.disabled, vec!["phone".to_owned()]);
        assert!(dlp.scanner.detectors().iter().any(|d| d.id == "ticket"));
        assert_eq!(
            dlp.detectors.private_ranges,
            DlpConfig::default().private_ranges
        );
        assert!(!format!("{config:?}").contains("k3y-"));
        for (dlp, needle) in [
            (
                r#"{"hashKey": "short"}"#,
                "`dlp.hashKey` must be at least 32",
            ),
            (
                r#"{"hashKey": "k3y-0123456789abcdef0123456789abcdef", "disabled": ["nope"]}"#,
                "no built-in detector `nope`",
            ),
            (
                r#"{"hashKey": "k3y-0123456789abcdef0123456789abcdef", "custom": [{"id": "x", "pattern": "("}]}"#,
                "pattern refused",
            ),
            (
                r#"{"hashKey": "k3y-0123456789abcdef0123456789abcdef", "privateRanges": ["10/8"]}"#,
                "privateRanges",
            ),
            (
                r#"{"hashKey": "k3y-0123456789abcdef0123456789abcdef", "unknown": 1}"#,
                "dlp",
            ),
            (r#"{"disabled": []}"#, "hashKey"),
        ] {
            let err = FilterConfig::from_json(format!("{{{base}}}, \"dlp\": {dlp}}}").as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("", "missing"),
            ("{", "not valid"),
            (
                r#"{"routes": [], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}}"#,
                "`routes`",
            ),
            (
                r#"{"routes": [{"pathPrefix": "mcp", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}}"#,
                "`routes[0].pathPrefix`",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": " "}], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}}"#,
                "`routes[0].server`",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": ""}, "audit": {"cluster": "b"}}"#,
                "`authz.cluster`",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a", "timeoutMs": 0}, "audit": {"cluster": "b"}}"#,
                "`authz.timeoutMs`",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b", "maxBatch": 0}}"#,
                "`audit.maxBatch`",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b", "maxQueued": 0}}"#,
                "`audit.maxQueued`",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b", "whenFull": "drop"}}"#,
                "whenFull",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a", "timeoutMs": 4294967296}, "audit": {"cluster": "b"}}"#,
                "`authz.timeoutMs` must be at most",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}, "limits": {"maxJsonDepth": 0}}"#,
                "`limits.maxJsonDepth`",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}, "failureMode": "sometimes"}"#,
                "failureMode",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}, "surprise": 1}"#,
                "surprise",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s", "upstreamCredential": true}], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}}"#,
                "`routes[0].upstreamCredential` needs a `credentials` section",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}, "credentials": {"cluster": "a", "proxyToken": "has space"}}"#,
                "`credentials.proxyToken`",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}, "credentials": {"cluster": "a", "proxyToken": ""}}"#,
                "`credentials.proxyToken`",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}, "credentials": {"cluster": "a"}}"#,
                "proxyToken",
            ),
            (
                r#"{"routes": [{"pathPrefix": "/m", "server": "s"}], "authz": {"cluster": "a"}, "audit": {"cluster": "b"}, "jwtPayloadHeader": "X-Payload"}"#,
                "`jwtPayloadHeader`",
            ),
        ];
        for (json, needle) in cases {
            let err = FilterConfig::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
