//! The authz-sidecar's configuration: one TOML file, environment overrides, validated once at load.
//!
//! Convention: snake_case TOML keys, unknown keys rejected (`deny_unknown_fields`) so a typo is an
//! error at start and not a silently ignored setting. Every default is a named constant below.
//! Relative paths (`key_file`, `policy_dir`, `registry_file`, `admin_token_file`) resolve against
//! the folder of the config file, so the sidecar and `behavry token mint` find the same files
//! whatever their working directory.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::upstream::{SecretsConfigExt as _, UpstreamConfig};

/// Config file used when neither `--config` nor `BEHAVRY_AUTHZ_CONFIG` is given.
pub const DEFAULT_CONFIG_FILE: &str = "authz.toml";
/// Default `listen`: loopback only; the sidecar sits next to Envoy.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9911";
/// Default `issuer` (token `iss`, checked by Envoy's `jwt_authn`).
pub const DEFAULT_ISSUER: &str = "behavry-authz";
/// Default `audience` (token `aud`, checked by Envoy's `jwt_authn`).
pub const DEFAULT_AUDIENCE: &str = "behavry-gateway";
/// Default `key_file`: generated at first start when missing.
pub const DEFAULT_KEY_FILE: &str = "state/authz-signing-key.pem";
/// Default `policy_dir`: the Rego bundle.
pub const DEFAULT_POLICY_DIR: &str = "policies";
/// Default `token_ttl_secs`: short-lived tokens, five minutes.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 300;
/// Upper bound for `token_ttl_secs` and for a ttl asked of the minter: fifteen minutes. Agent
/// tokens are bearer tokens (RFC 6750 §5.3: "issue short-lived bearer tokens"); a stolen one must
/// stop working soon, since revocation is not in place yet.
pub const MAX_TOKEN_TTL_SECS: u64 = 900;
/// Default `registry_file`: the SQLite agent registry, used when `database_url` is not set.
pub const DEFAULT_REGISTRY_FILE: &str = "state/authz-registry.db";
/// Shortest admin credential accepted: 32 characters (e.g. `openssl rand -base64 32` gives 44),
/// so the bearer secret cannot be guessed online.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;
/// The scope an agent holds when its enrollment names none.
pub const DEFAULT_AGENT_SCOPE: &str = "mcp";
/// Default `decision_timeout_ms`: the wall-clock budget of one Rego evaluation.
pub const DEFAULT_DECISION_TIMEOUT_MS: u64 = 50;
/// Default `policy_reload_ms`: how often the policy folder is checked for changes (0 = never).
pub const DEFAULT_POLICY_RELOAD_MS: u64 = 1000;
/// Shortest non-zero `policy_reload_ms`: each poll reads every policy file.
pub const MIN_POLICY_RELOAD_MS: u64 = 100;
/// Longest accepted agent id, server name, tool name, etc. in the config.
pub const MAX_NAME_LEN: usize = 256;

/// Environment variable naming the config file.
pub const ENV_CONFIG: &str = "BEHAVRY_AUTHZ_CONFIG";
/// Environment override of `listen`.
pub const ENV_LISTEN: &str = "BEHAVRY_AUTHZ_LISTEN";
/// Environment override of `key_file`.
pub const ENV_KEY_FILE: &str = "BEHAVRY_AUTHZ_KEY_FILE";
/// Environment override of `policy_dir`.
pub const ENV_POLICY_DIR: &str = "BEHAVRY_AUTHZ_POLICY_DIR";
/// Environment override of `policy_reload_ms`.
pub const ENV_POLICY_RELOAD_MS: &str = "BEHAVRY_AUTHZ_POLICY_RELOAD_MS";
/// Environment override of `issuer`.
pub const ENV_ISSUER: &str = "BEHAVRY_AUTHZ_ISSUER";
/// Environment override of `audience`.
pub const ENV_AUDIENCE: &str = "BEHAVRY_AUTHZ_AUDIENCE";
/// Environment variable holding the admin credential itself (wins over `admin_token_file`).
pub const ENV_ADMIN_TOKEN: &str = "BEHAVRY_AUTHZ_ADMIN_TOKEN";
/// Environment variable holding the proxy credential itself (wins over `proxy_token_file`).
pub const ENV_PROXY_TOKEN: &str = "BEHAVRY_AUTHZ_PROXY_TOKEN";
/// Environment override of `database_url`.
pub const ENV_DATABASE_URL: &str = "BEHAVRY_AUTHZ_DATABASE_URL";
/// Environment override of `public_url`.
pub const ENV_PUBLIC_URL: &str = "BEHAVRY_AUTHZ_PUBLIC_URL";
/// Environment override of `audit_url`.
pub const ENV_AUDIT_URL: &str = "BEHAVRY_AUTHZ_AUDIT_URL";

/// Where environment overrides come from: the process env in the binary, a map in tests (so tests
/// never touch the process environment).
pub trait EnvSource {
    /// The value of variable `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Why a config could not be loaded. Every message names the file or the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown field, wrong type...).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The TOML error, which names the field and line.
        message: String,
    },
    /// A field has a value that is not allowed.
    #[error("invalid config field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `agents[1].id`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// One field of an agent enrollment (from the config or the admin API) that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field `{field}`: {reason}")]
pub struct InvalidField {
    /// Dotted path of the field, e.g. `agents[1].roles[0]` or `roles[0]`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidField {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<InvalidField> for ConfigError {
    fn from(err: InvalidField) -> Self {
        ConfigError::Invalid {
            field: err.field,
            reason: err.reason,
        }
    }
}

/// The config file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Socket address to listen on. Default [`DEFAULT_LISTEN`].
    #[serde(default = "default_listen")]
    listen: String,
    /// Token `iss`. Default [`DEFAULT_ISSUER`].
    #[serde(default = "default_issuer")]
    issuer: String,
    /// Token `aud`. Default [`DEFAULT_AUDIENCE`].
    #[serde(default = "default_audience")]
    audience: String,
    /// PKCS#8 PEM RSA private key. Default [`DEFAULT_KEY_FILE`].
    #[serde(default = "default_key_file")]
    key_file: PathBuf,
    /// Token lifetime. Default [`DEFAULT_TOKEN_TTL_SECS`].
    #[serde(default = "default_token_ttl_secs")]
    token_ttl_secs: u64,
    /// Folder of the Rego bundle. Default [`DEFAULT_POLICY_DIR`].
    #[serde(default = "default_policy_dir")]
    policy_dir: PathBuf,
    /// Budget of one evaluation. Default [`DEFAULT_DECISION_TIMEOUT_MS`].
    #[serde(default = "default_decision_timeout_ms")]
    decision_timeout_ms: u64,
    /// Poll period of the policy folder for hot reload, 0 = off. Default
    /// [`DEFAULT_POLICY_RELOAD_MS`].
    #[serde(default = "default_policy_reload_ms")]
    policy_reload_ms: u64,
    /// Agents seeded into the registry at start when absent. Default: none.
    #[serde(default)]
    agents: Vec<AgentEnrollment>,
    /// File holding the admin API's bearer credential. Default: none (admin API disabled).
    #[serde(default)]
    admin_token_file: Option<PathBuf>,
    /// PostgreSQL registry (`postgres://...`). Default: none (SQLite at `registry_file`).
    #[serde(default)]
    database_url: Option<String>,
    /// SQLite registry file. Default [`DEFAULT_REGISTRY_FILE`].
    #[serde(default = "default_registry_file")]
    registry_file: PathBuf,
    /// Base URL clients reach the sidecar at. Default: `http://<listen>`.
    #[serde(default)]
    public_url: Option<String>,
    /// Upstream MCP servers with their own credential. Default: none.
    #[serde(default)]
    upstreams: Vec<UpstreamConfig>,
    /// File holding the credential the filter presents at `POST /v1/credentials`. Default: none
    /// (endpoint disabled; then no `[[upstreams]]` may be configured).
    #[serde(default)]
    proxy_token_file: Option<PathBuf>,
    /// `[secrets]`: the secret store backends of `secret` upstreams. Default: none.
    #[serde(default)]
    secrets: crate::upstream::SecretsConfig,
    /// `[token_exchange]` (RFC 8693). Default: `max_delegation_depth = 3`.
    #[serde(default)]
    token_exchange: crate::token_exchange::TokenExchangeConfig,
    /// `[kubernetes]`: service-account token exchange. Default: none (such tokens refused).
    #[serde(default)]
    kubernetes: Option<crate::kubernetes::KubernetesFile>,
    /// `[blast_radius]`: budget windows and where the counters live. Default: `1m` and `1h` in
    /// memory.
    #[serde(default)]
    blast_radius: crate::blast_radius::BlastRadiusConfig,
    /// How long a held call waits for a human, and how long an approval or a rejection stands.
    #[serde(default = "default_approval_ttl_secs")]
    approval_ttl_secs: u64,
    /// `[[approvers]]`: the people who decide held calls, each with their own credential.
    /// Default: none (the admin credential decides, with the name it gives).
    #[serde(default)]
    approvers: Vec<crate::approvals::ApproverEntry>,
    /// Base URL of the audit-sink that records policy changes. Default: none (logged only).
    #[serde(default)]
    audit_url: Option<String>,
    /// `[pins]`: trust on first use (default) or strict, per server.
    #[serde(default)]
    pins: crate::pins::PinsConfig,
    /// Which regorus evaluator decides: `auto` (default), `interpreter` or `vm`.
    #[serde(default)]
    policy_engine: crate::policy::PolicyEngine,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}
fn default_issuer() -> String {
    DEFAULT_ISSUER.to_owned()
}
fn default_audience() -> String {
    DEFAULT_AUDIENCE.to_owned()
}
fn default_key_file() -> PathBuf {
    PathBuf::from(DEFAULT_KEY_FILE)
}
fn default_registry_file() -> PathBuf {
    PathBuf::from(DEFAULT_REGISTRY_FILE)
}
fn default_agent_scopes() -> Vec<String> {
    vec![DEFAULT_AGENT_SCOPE.to_owned()]
}
fn default_approval_ttl_secs() -> u64 {
    crate::approvals::DEFAULT_APPROVAL_TTL_SECS
}
/// Longest an approval may stand: a week.
pub const MAX_APPROVAL_TTL_SECS: u64 = 7 * 24 * 3600;
fn default_policy_dir() -> PathBuf {
    PathBuf::from(DEFAULT_POLICY_DIR)
}
fn default_token_ttl_secs() -> u64 {
    DEFAULT_TOKEN_TTL_SECS
}
fn default_decision_timeout_ms() -> u64 {
    DEFAULT_DECISION_TIMEOUT_MS
}
fn default_policy_reload_ms() -> u64 {
    DEFAULT_POLICY_RELOAD_MS
}

/// One agent's enrollment: `[[agents]]` in the config (seeds of the registry), and the body of
/// `POST /admin/v1/agents` (minus keys). Public keys are held by the registry only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEnrollment {
    /// Agent id: the token's `sub` and `client_id`.
    pub id: String,
    /// Who is responsible for the agent (team, person). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Roles, visible to policy at `data.behavry.agents[id].roles`. Default: none.
    #[serde(default)]
    pub roles: Vec<String>,
    /// OAuth scopes the agent may be issued (RFC 6749 §3.3). Default: `["mcp"]`.
    #[serde(default = "default_agent_scopes")]
    pub scopes: Vec<String>,
    /// What the agent may use, per logical MCP server name (`[agents.servers.<name>]`).
    #[serde(default)]
    pub servers: BTreeMap<String, ServerGrant>,
    /// Agents that may act for this one through token exchange (RFC 8693 §4.4 `may_act`).
    /// Default: none. Written `mayAct` in admin API JSON (camelCase like the rest of it).
    #[serde(default, rename(serialize = "mayAct"), alias = "mayAct")]
    pub may_act: Vec<String>,
    /// Kubernetes service accounts (`system:serviceaccount:<ns>:<name>`) whose projected tokens
    /// this agent may exchange for its own token (RFC 8693 §2.1, `[kubernetes]`). Default: none.
    /// `serviceAccounts` in admin API JSON.
    #[serde(
        default,
        rename(serialize = "serviceAccounts"),
        alias = "serviceAccounts"
    )]
    pub service_accounts: Vec<String>,
    /// MCP clients the agent is enrolled to use (e.g. `claude-code`). Default: none.
    #[serde(default)]
    pub clients: Vec<String>,
}

impl AgentEnrollment {
    /// An enrollment with only an id: no owner, no roles, scope `mcp`, no servers.
    pub fn new(id: impl Into<String>) -> Self {
        AgentEnrollment {
            id: id.into(),
            owner: None,
            roles: Vec::new(),
            scopes: default_agent_scopes(),
            servers: BTreeMap::new(),
            may_act: Vec::new(),
            service_accounts: Vec::new(),
            clients: Vec::new(),
        }
    }

    /// Check every field; `prefix` is prepended to field names in errors (e.g. `agents[1].`).
    pub fn validate(&self, prefix: &str) -> Result<(), InvalidField> {
        check_agent_id(&format!("{prefix}id"), &self.id)?;
        if let Some(owner) = &self.owner {
            check_name(&format!("{prefix}owner"), owner)?;
        }
        for (index, role) in self.roles.iter().enumerate() {
            check_name(&format!("{prefix}roles[{index}]"), role)?;
        }
        if self.scopes.is_empty() {
            return Err(InvalidField::new(
                format!("{prefix}scopes"),
                "must name at least one scope",
            ));
        }
        for (index, scope) in self.scopes.iter().enumerate() {
            check_scope_token(&format!("{prefix}scopes[{index}]"), scope)?;
        }
        for (server, grant) in &self.servers {
            let server_prefix = format!("{prefix}servers.{server}");
            check_name(&server_prefix, server)?;
            for (list_name, list) in [
                ("tools", &grant.tools),
                ("resources", &grant.resources),
                ("prompts", &grant.prompts),
            ] {
                for (item_index, item) in list.iter().enumerate() {
                    check_name(&format!("{server_prefix}.{list_name}[{item_index}]"), item)?;
                }
            }
        }
        for (index, actor) in self.may_act.iter().enumerate() {
            let field = format!("{prefix}may_act[{index}]");
            check_agent_id(&field, actor)?;
            // RFC 8693 §4.4: `may_act` names another party; an agent acting for itself is no
            // delegation.
            if *actor == self.id {
                return Err(InvalidField::new(field, "an agent cannot act for itself"));
            }
        }
        for (index, account) in self.service_accounts.iter().enumerate() {
            crate::kubernetes::check_service_account(
                &format!("{prefix}service_accounts[{index}]"),
                account,
            )?;
        }
        for (index, client) in self.clients.iter().enumerate() {
            check_name(&format!("{prefix}clients[{index}]"), client)?;
        }
        Ok(())
    }
}

/// Where the agent registry lives.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    /// A SQLite file (created on first start).
    Sqlite(PathBuf),
    /// A PostgreSQL database URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl std::fmt::Debug for RegistryLocation {
    // A database URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryLocation::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            RegistryLocation::Postgres(_) => f.write_str("Postgres(<url redacted>)"),
        }
    }
}

/// The admin API's bearer credential. Compared in constant time (see `admin`); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminCredential(String);

impl AdminCredential {
    /// Wrap a credential; it must be at least [`MIN_ADMIN_TOKEN_LEN`] characters of visible
    /// ASCII (RFC 6750 §2.1 `b64token` characters are a subset).
    pub fn new(token: impl Into<String>) -> Result<AdminCredential, String> {
        let token = token.into();
        if token.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(format!(
                "the admin credential must be at least {MIN_ADMIN_TOKEN_LEN} characters, got {}",
                token.len()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin credential must be visible ASCII without spaces".to_owned());
        }
        Ok(AdminCredential(token))
    }

    /// The secret bytes, for the constant-time comparison only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// SHA-256 of the credential: what a presented credential is compared with.
    pub fn digest(&self) -> [u8; 32] {
        crate::bearer::presented_digest(&self.0)
    }
}

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminCredential(<redacted>)")
    }
}

/// What one agent may use on one MCP server: tool names it may `tools/call`, resource URIs it may
/// `resources/read`, prompt names it may `prompts/get` (each default none). The same type as a
/// server's grants in the published decision table.
pub use behavry_core::decision_table::GrantPatterns as ServerGrant;

/// A loaded, validated configuration with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Socket address to listen on.
    pub listen: SocketAddr,
    /// Token `iss`.
    pub issuer: String,
    /// Token `aud`.
    pub audience: String,
    /// Absolute (or config-relative resolved) path of the signing key.
    pub key_file: PathBuf,
    /// Default token lifetime in seconds, in `1..=MAX_TOKEN_TTL_SECS`.
    pub token_ttl_secs: u64,
    /// Folder of the Rego bundle.
    pub policy_dir: PathBuf,
    /// Wall-clock budget of one evaluation, in milliseconds (at least 1).
    pub decision_timeout_ms: u64,
    /// Poll period of `policy_dir` for hot reload in milliseconds; 0 = off, else at least
    /// [`MIN_POLICY_RELOAD_MS`].
    pub policy_reload_ms: u64,
    /// Agents seeded into the registry when absent, ids unique. Also what `behavry token mint`
    /// (offline) accepts.
    pub agents: Vec<AgentEnrollment>,
    /// The admin API's credential; `None` disables the admin API.
    pub admin_token: Option<AdminCredential>,
    /// Where the agent registry lives.
    pub registry: RegistryLocation,
    /// Base URL of the sidecar as clients reach it, without a trailing slash. The token endpoint
    /// is `<public_url>/oauth/token`.
    pub public_url: String,
    /// Upstream MCP servers with their own credential (token exchange or secret), names and
    /// resources unique.
    pub upstreams: Vec<UpstreamConfig>,
    /// The credential of `POST /v1/credentials` (the filter's); `None` disables the endpoint.
    /// Same rules as the admin credential.
    pub proxy_token: Option<AdminCredential>,
    /// The secret store backends, paths resolved (opened at start by `prepare`).
    pub secrets: crate::upstream::SecretsConfig,
    /// Token exchange settings (RFC 8693).
    pub token_exchange: crate::token_exchange::TokenExchangeConfig,
    /// Kubernetes service-account token exchange, with its JWKS loaded; `None` refuses it.
    pub kubernetes: Option<crate::kubernetes::KubernetesConfig>,
    /// `[blast_radius]`: budget windows and counter store.
    pub blast_radius: crate::blast_radius::BlastRadiusConfig,
    /// Lifetime of held calls, approvals and rejections, in seconds.
    pub approval_ttl_secs: u64,
    /// The named approvers (names and credential digests unique); empty: the admin credential
    /// decides held calls.
    pub approvers: Vec<crate::approvals::Approver>,
    /// Base URL of the audit-sink that records policy changes, when set.
    pub audit_url: Option<String>,
    /// Which regorus evaluator decides (docs/policy.md, "Evaluation").
    pub policy_engine: crate::policy::PolicyEngine,
    /// `[pins]`: how servers' tools are first trusted (docs/pins.md).
    pub pins: crate::pins::PinsConfig,
}

impl Config {
    /// Load `path`, apply overrides from `env`, validate.
    pub fn load(path: &Path, env: &dyn EnvSource) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new(""));
        Config::from_toml_str(&text, path, base_dir, env)
    }

    /// Parse `text` (named `origin` in errors), resolving relative paths against `base_dir`.
    pub fn from_toml_str(
        text: &str,
        origin: &Path,
        base_dir: &Path,
        env: &dyn EnvSource,
    ) -> Result<Config, ConfigError> {
        let mut file: ConfigFile = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: origin.to_owned(),
            message: err.to_string(),
        })?;
        apply_env_overrides(&mut file, env);
        if let Some(text) = env.var(ENV_POLICY_RELOAD_MS) {
            file.policy_reload_ms = text.trim().parse().map_err(|_| {
                ConfigError::invalid(
                    ENV_POLICY_RELOAD_MS,
                    format!("must be a number of milliseconds, got {text:?}"),
                )
            })?;
        }
        let admin_token_from_env = env.var(ENV_ADMIN_TOKEN);
        let proxy_token_from_env = env.var(ENV_PROXY_TOKEN);
        validate(file, base_dir, admin_token_from_env, proxy_token_from_env)
    }

    /// The upstream named `name`, if configured.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|upstream| upstream.name == name)
    }

    /// The enrollment of `agent_id`, if enrolled.
    pub fn agent(&self, agent_id: &str) -> Option<&AgentEnrollment> {
        self.agents.iter().find(|agent| agent.id == agent_id)
    }
}

fn apply_env_overrides(file: &mut ConfigFile, env: &dyn EnvSource) {
    if let Some(listen) = env.var(ENV_LISTEN) {
        file.listen = listen;
    }
    if let Some(key_file) = env.var(ENV_KEY_FILE) {
        file.key_file = PathBuf::from(key_file);
    }
    if let Some(policy_dir) = env.var(ENV_POLICY_DIR) {
        file.policy_dir = PathBuf::from(policy_dir);
    }
    if let Some(issuer) = env.var(ENV_ISSUER) {
        file.issuer = issuer;
    }
    if let Some(audience) = env.var(ENV_AUDIENCE) {
        file.audience = audience;
    }
    if let Some(database_url) = env.var(ENV_DATABASE_URL) {
        file.database_url = Some(database_url);
    }
    if let Some(audit_url) = env.var(ENV_AUDIT_URL) {
        file.audit_url = Some(audit_url);
    }
    if let Some(public_url) = env.var(ENV_PUBLIC_URL) {
        file.public_url = Some(public_url);
    }
}

/// The `[[approvers]]`, checked: names and credentials unique, and no approver's credential the
/// admin's or the proxy's (`others`), which would make one secret two roles.
fn approvers(
    entries: &[crate::approvals::ApproverEntry],
    others: &[Option<&AdminCredential>],
) -> Result<Vec<crate::approvals::Approver>, ConfigError> {
    let other_digests: Vec<[u8; 32]> = others
        .iter()
        .flatten()
        .map(|credential| credential.digest())
        .collect();
    let mut approvers: Vec<crate::approvals::Approver> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let field = format!("approvers[{index}]");
        let approver = crate::approvals::Approver::from_entry(entry)
            .map_err(|reason| ConfigError::invalid(field.clone(), reason))?;
        let reused = |digest: &[u8; 32]| approver.holds(digest);
        if approvers.iter().any(|a| a.name() == approver.name()) {
            return Err(ConfigError::invalid(
                field,
                format!("approver `{}` is named twice", approver.name()),
            ));
        }
        if approvers.iter().any(|a| a.same_credential(&approver)) {
            return Err(ConfigError::invalid(
                field,
                format!(
                    "approver `{}` shares another approver's credential",
                    approver.name()
                ),
            ));
        }
        if other_digests.iter().any(reused) {
            return Err(ConfigError::invalid(
                field,
                format!(
                    "approver `{}` has the admin or the proxy credential: give each person their own",
                    approver.name()
                ),
            ));
        }
        approvers.push(approver);
    }
    Ok(approvers)
}

fn validate(
    file: ConfigFile,
    base_dir: &Path,
    admin_token_from_env: Option<String>,
    proxy_token_from_env: Option<String>,
) -> Result<Config, ConfigError> {
    let listen: SocketAddr = file.listen.parse().map_err(|err| {
        ConfigError::invalid(
            "listen",
            format!("`{}` is not a socket address (ip:port): {err}", file.listen),
        )
    })?;
    check_non_blank("issuer", &file.issuer)?;
    check_non_blank("audience", &file.audience)?;
    if file.key_file.as_os_str().is_empty() {
        return Err(ConfigError::invalid("key_file", "must not be empty"));
    }
    if file.policy_dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid("policy_dir", "must not be empty"));
    }
    if file.token_ttl_secs == 0 || file.token_ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(ConfigError::invalid(
            "token_ttl_secs",
            format!(
                "must be between 1 and {MAX_TOKEN_TTL_SECS}, got {}",
                file.token_ttl_secs
            ),
        ));
    }
    if file.decision_timeout_ms == 0 {
        return Err(ConfigError::invalid(
            "decision_timeout_ms",
            "must be at least 1",
        ));
    }
    if file.policy_reload_ms != 0 && file.policy_reload_ms < MIN_POLICY_RELOAD_MS {
        return Err(ConfigError::invalid(
            "policy_reload_ms",
            format!(
                "must be 0 (off) or at least {MIN_POLICY_RELOAD_MS}, got {}",
                file.policy_reload_ms
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, agent) in file.agents.iter().enumerate() {
        agent.validate(&format!("agents[{index}]."))?;
        if !seen.insert(agent.id.as_str()) {
            return Err(ConfigError::invalid(
                format!("agents[{index}].id"),
                format!("agent `{}` is enrolled twice", agent.id),
            ));
        }
    }
    let admin_token = match (admin_token_from_env, &file.admin_token_file) {
        (Some(token), _) => Some(
            AdminCredential::new(token.trim())
                .map_err(|reason| ConfigError::invalid(ENV_ADMIN_TOKEN, reason))?,
        ),
        (None, Some(path)) => {
            let path = base_dir.join(path);
            let text = std::fs::read_to_string(&path).map_err(|err| {
                ConfigError::invalid(
                    "admin_token_file",
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            Some(
                AdminCredential::new(text.trim())
                    .map_err(|reason| ConfigError::invalid("admin_token_file", reason))?,
            )
        }
        (None, None) => None,
    };
    let registry = match file.database_url {
        Some(url) => {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::invalid(
                    "database_url",
                    "must be a PostgreSQL URL (postgres://...); for SQLite set `registry_file`",
                ));
            }
            RegistryLocation::Postgres(url)
        }
        None => {
            if file.registry_file.as_os_str().is_empty() {
                return Err(ConfigError::invalid("registry_file", "must not be empty"));
            }
            RegistryLocation::Sqlite(base_dir.join(&file.registry_file))
        }
    };
    let public_url = match file.public_url {
        Some(url) => check_public_url(&url)?,
        None => format!("http://{listen}"),
    };
    crate::upstream::validate_upstreams(&file.upstreams)?;
    let proxy_token = read_proxy_credential(
        proxy_token_from_env,
        file.proxy_token_file.as_deref(),
        base_dir,
    )?;
    // The filter's credential must not open the admin API as well.
    if proxy_token.is_some() && proxy_token == admin_token {
        return Err(ConfigError::invalid(
            "proxy_token_file",
            "the proxy credential must differ from the admin credential",
        ));
    }
    let secrets = file.secrets.clone().resolved(base_dir);
    secrets.validate()?;
    crate::upstream::check_upstream_needs(&file.upstreams, &secrets, proxy_token.is_some())?;
    file.token_exchange.validate()?;
    if !(1..=MAX_APPROVAL_TTL_SECS).contains(&file.approval_ttl_secs) {
        return Err(ConfigError::invalid(
            "approval_ttl_secs",
            format!("must be 1 to {MAX_APPROVAL_TTL_SECS} seconds"),
        ));
    }
    let approvers = approvers(
        &file.approvers,
        &[admin_token.as_ref(), proxy_token.as_ref()],
    )?;
    file.blast_radius
        .validate()
        .map_err(|err| ConfigError::invalid("blast_radius", err.to_string()))?;
    let kubernetes = match &file.kubernetes {
        Some(section) => Some(section.load(base_dir)?),
        None => None,
    };
    Ok(Config {
        listen,
        issuer: file.issuer,
        audience: file.audience,
        key_file: base_dir.join(file.key_file),
        token_ttl_secs: file.token_ttl_secs,
        policy_dir: base_dir.join(file.policy_dir),
        decision_timeout_ms: file.decision_timeout_ms,
        policy_reload_ms: file.policy_reload_ms,
        agents: file.agents,
        admin_token,
        registry,
        public_url,
        upstreams: file.upstreams,
        proxy_token,
        secrets,
        token_exchange: file.token_exchange,
        kubernetes,
        blast_radius: file.blast_radius,
        approval_ttl_secs: file.approval_ttl_secs,
        approvers,
        policy_engine: file.policy_engine,
        pins: file.pins.load_keys(base_dir)?,
        audit_url: match &file.audit_url {
            Some(url) => Some(check_url("audit_url", url)?),
            None => None,
        },
    })
}

/// The proxy credential from [`ENV_PROXY_TOKEN`] or `proxy_token_file`, checked like the admin
/// credential.
fn read_proxy_credential(
    from_env: Option<String>,
    token_file: Option<&Path>,
    base_dir: &Path,
) -> Result<Option<AdminCredential>, ConfigError> {
    let (field, text) = match (from_env, token_file) {
        (Some(token), _) => (ENV_PROXY_TOKEN, token),
        (None, Some(path)) => {
            let path = base_dir.join(path);
            let text = std::fs::read_to_string(&path).map_err(|err| {
                ConfigError::invalid(
                    "proxy_token_file",
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            ("proxy_token_file", text)
        }
        (None, None) => return Ok(None),
    };
    let credential =
        AdminCredential::new(text.trim()).map_err(|reason| ConfigError::invalid(field, reason))?;
    Ok(Some(credential))
}

/// `public_url` becomes the token endpoint URL that client assertions name as `aud`
/// (RFC 7523 §3 item 3) and the RFC 8414 metadata URLs: an absolute http(s) URL without query or
/// fragment (RFC 8414 §2), kept without a trailing slash.
fn check_public_url(url: &str) -> Result<String, ConfigError> {
    check_url("public_url", url)
}

/// An `http(s)://host[...]` base URL without query or fragment, trailing `/` removed.
fn check_url(field: &str, url: &str) -> Result<String, ConfigError> {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Err(ConfigError::invalid(
            field,
            format!("`{url}` must start with https:// or http://"),
        ));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(ConfigError::invalid(field, "names no host"));
    }
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::invalid(
            field,
            "must not contain a query, a fragment or whitespace",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn check_non_blank(field: &str, value: &str) -> Result<(), InvalidField> {
    if value.trim().is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    Ok(())
}

/// Names that end up in policy data and reasons: non-empty, bounded, no control characters.
pub(crate) fn check_name(field: &str, value: &str) -> Result<(), InvalidField> {
    check_non_blank(field, value)?;
    if value.len() > MAX_NAME_LEN {
        return Err(InvalidField::new(
            field,
            format!("longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Agent ids become the token `sub`, log fields, URL path segments and map keys: keep them to a
/// plain alphabet.
pub(crate) fn check_agent_id(field: &str, value: &str) -> Result<(), InvalidField> {
    check_name(field, value)?;
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'));
    if !plain {
        return Err(InvalidField::new(
            field,
            format!("`{value}` may only contain ASCII letters, digits and - _ . : @"),
        ));
    }
    Ok(())
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )` (visible ASCII except `"` and
/// `\`; no spaces, since scopes are space-delimited).
pub(crate) fn check_scope_token(field: &str, value: &str) -> Result<(), InvalidField> {
    let valid = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
    if !valid {
        return Err(InvalidField::new(
            field,
            format!("`{value}` is not a scope token (RFC 6749 §3.3)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(
            text,
            Path::new("/etc/behavry/authz.toml"),
            Path::new("/etc/behavry"),
            &env(&[]),
        )
    }

    fn error_text(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const EXAMPLE: &str = r#"
listen = "127.0.0.1:9911"
issuer = "behavry-authz"
audience = "behavry-gateway"
key_file = "state/authz-signing-key.pem"
token_ttl_secs = 300
policy_dir = "../policies"
[[agents]]
id = "demo-agent"
[agents.servers.everything]
tools = ["echo", "get-sum"]
"#;

    #[test]
    fn defaults_apply_to_an_empty_file() {
        let config = parse("").unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.issuer, DEFAULT_ISSUER);
        assert_eq!(config.audience, DEFAULT_AUDIENCE);
        assert_eq!(config.token_ttl_secs, DEFAULT_TOKEN_TTL_SECS);
        assert_eq!(config.decision_timeout_ms, DEFAULT_DECISION_TIMEOUT_MS);
        assert_eq!(
            config.key_file,
            Path::new("/etc/behavry").join(DEFAULT_KEY_FILE)
        );
        assert!(config.agents.is_empty());
    }

    #[test]
    fn example_parses_and_resolves_paths_against_the_config_folder() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(
            config.key_file,
            Path::new("/etc/behavry/state/authz-signing-key.pem")
        );
        assert_eq!(config.policy_dir, Path::new("/etc/behavry/../policies"));
        let agent = config.agent("demo-agent").unwrap();
        assert_eq!(agent.servers["everything"].tools, ["echo", "get-sum"]);
        assert!(agent.servers["everything"].resources.is_empty());
        assert!(config.agent("someone-else").is_none());
    }

    #[test]
    fn absolute_paths_are_kept() {
        let config = parse("key_file = \"/var/lib/behavry/key.pem\"").unwrap();
        assert_eq!(config.key_file, Path::new("/var/lib/behavry/key.pem"));
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("authz.example.toml");
        let config = Config::load(&path, &env(&[])).unwrap();
        assert!(config.agent("demo-agent").is_some());
        assert!(config.policy_dir.join("authz.rego").is_file());
    }

    #[test]
    fn unknown_field_is_rejected_by_name() {
        let message = error_text("listen_addr = \"127.0.0.1:1\"");
        assert!(message.contains("listen_addr"), "{message}");
        let message = error_text("[[agents]]\nid = \"a\"\n[agents.servers.s]\ntool = [\"x\"]");
        assert!(message.contains("tool"), "{message}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let message = error_text("token_ttl_secs = \"long\"");
        assert!(message.contains("token_ttl_secs"), "{message}");
    }

    #[test]
    fn bad_values_name_the_field() {
        for (text, field) in [
            ("listen = \"localhost\"", "`listen`"),
            ("issuer = \" \"", "`issuer`"),
            ("audience = \"\"", "`audience`"),
            ("key_file = \"\"", "`key_file`"),
            ("policy_dir = \"\"", "`policy_dir`"),
            ("token_ttl_secs = 0", "`token_ttl_secs`"),
            ("token_ttl_secs = 901", "`token_ttl_secs`"),
            ("database_url = \"mysql://x\"", "`database_url`"),
            ("registry_file = \"\"", "`registry_file`"),
            ("public_url = \"ftp://x\"", "`public_url`"),
            ("public_url = \"http://x/?a=b\"", "`public_url`"),
            (
                "admin_token_file = \"/nonexistent/admin-token\"",
                "`admin_token_file`",
            ),
            ("[[agents]]\nid = \"a\"\nscopes = []", "`agents[0].scopes`"),
            (
                "[[agents]]\nid = \"a\"\nscopes = [\"a b\"]",
                "`agents[0].scopes[0]`",
            ),
            (
                "[[agents]]\nid = \"a\"\nroles = [\"\"]",
                "`agents[0].roles[0]`",
            ),
            ("decision_timeout_ms = 0", "`decision_timeout_ms`"),
            ("[[agents]]\nid = \"\"", "`agents[0].id`"),
            ("[[agents]]\nid = \"has space\"", "`agents[0].id`"),
            (
                "[[agents]]\nid = \"a\"\n[[agents]]\nid = \"a\"",
                "`agents[1].id`",
            ),
            (
                "[[agents]]\nid = \"a\"\n[agents.servers.s]\ntools = [\"ok\", \"\"]",
                "`agents[0].servers.s.tools[1]`",
            ),
        ] {
            let message = error_text(text);
            assert!(message.contains(field), "{text:?} gave {message}");
        }
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let overrides = env(&[
            (ENV_LISTEN, "127.0.0.1:4000"),
            (ENV_KEY_FILE, "/keys/k.pem"),
            (ENV_POLICY_DIR, "rego"),
            (ENV_ISSUER, "iss-from-env"),
            (ENV_AUDIENCE, "aud-from-env"),
        ]);
        let config = Config::from_toml_str(
            EXAMPLE,
            Path::new("/etc/behavry/authz.toml"),
            Path::new("/etc/behavry"),
            &overrides,
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(config.key_file, Path::new("/keys/k.pem"));
        assert_eq!(config.policy_dir, Path::new("/etc/behavry/rego"));
        assert_eq!(config.issuer, "iss-from-env");
        assert_eq!(config.audience, "aud-from-env");
    }

    #[test]
    fn env_override_is_validated_too() {
        let overrides = env(&[(ENV_LISTEN, "nowhere")]);
        let err =
            Config::from_toml_str("", Path::new("a.toml"), Path::new(""), &overrides).unwrap_err();
        assert!(err.to_string().contains("`listen`"), "{err}");
    }

    #[test]
    fn identity_defaults() {
        let config = parse("[[agents]]\nid = \"a\"").unwrap();
        assert_eq!(config.admin_token, None);
        assert_eq!(
            config.registry,
            RegistryLocation::Sqlite(Path::new("/etc/behavry").join(DEFAULT_REGISTRY_FILE))
        );
        assert_eq!(config.public_url, "http://127.0.0.1:9911");
        let agent = config.agent("a").unwrap();
        assert_eq!(agent.scopes, [DEFAULT_AGENT_SCOPE]);
        assert_eq!(agent.owner, None);
        assert!(agent.roles.is_empty());
    }

    #[test]
    fn approvers_are_checked() {
        let digest = |token: &str| crate::bearer::presented_digest(token);
        let alice = hex::encode(digest("alice-approver-credential-0123456789"));
        let bob = hex::encode(digest("bob-approver-credential-0123456789ab"));
        let entry = |name: &str, sha: &str| {
            format!("[[approvers]]\nname = \"{name}\"\ntoken_sha256 = \"{sha}\"\n")
        };
        let config = parse(&(entry("alice", &alice) + &entry("bob", &bob))).unwrap();
        let names: Vec<&str> = config.approvers.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert!(config.approvers[0].holds(&digest("alice-approver-credential-0123456789")));

        for (text, expected) in [
            (
                entry("alice", &alice) + &entry("alice", &bob),
                "named twice",
            ),
            (
                entry("alice", &alice) + &entry("bob", &alice),
                "shares another",
            ),
            (entry("alice", "abc"), "64 hexadecimal"),
            (entry(" ", &alice), "printable"),
            (
                entry("alice", &alice).replace("token_sha256", "token"),
                "unknown field",
            ),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }

        // The admin credential is not an approver's.
        let dir = tempfile::tempdir().unwrap();
        let admin = "an-admin-credential-0123456789abcdef";
        std::fs::write(dir.path().join("admin-token"), admin).unwrap();
        let text = format!(
            "admin_token_file = \"admin-token\"\n{}",
            entry("alice", &hex::encode(digest(admin)))
        );
        let err =
            Config::from_toml_str(&text, &dir.path().join("authz.toml"), dir.path(), &env(&[]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("admin or the proxy credential"), "{err}");
    }

    #[test]
    fn admin_token_comes_from_the_file_or_the_env() {
        let dir = tempfile::tempdir().unwrap();
        let token = "t".repeat(MIN_ADMIN_TOKEN_LEN);
        std::fs::write(dir.path().join("admin-token"), format!("{token}\n")).unwrap();
        let text = "admin_token_file = \"admin-token\"";
        let from_file =
            Config::from_toml_str(text, Path::new("a.toml"), dir.path(), &env(&[])).unwrap();
        assert_eq!(from_file.admin_token.unwrap().expose(), token.as_bytes());

        let other = "e".repeat(MIN_ADMIN_TOKEN_LEN + 5);
        let from_env = Config::from_toml_str(
            text,
            Path::new("a.toml"),
            dir.path(),
            &env(&[(ENV_ADMIN_TOKEN, &other)]),
        )
        .unwrap();
        assert_eq!(from_env.admin_token.unwrap().expose(), other.as_bytes());

        std::fs::write(dir.path().join("admin-token"), "short").unwrap();
        let err = Config::from_toml_str(text, Path::new("a.toml"), dir.path(), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`admin_token_file`") && err.contains("at least"),
            "{err}"
        );
        // The secret is never printed.
        let config = Config::from_toml_str(
            "",
            Path::new("a.toml"),
            dir.path(),
            &env(&[(ENV_ADMIN_TOKEN, &other)]),
        )
        .unwrap();
        assert!(!format!("{config:?}").contains(&other));
    }

    #[test]
    fn postgres_url_and_public_url_are_taken() {
        let config = parse(
            "database_url = \"postgres://u:secret@db/behavry\"\npublic_url = \"https://authz.example/\"",
        )
        .unwrap();
        assert_eq!(
            config.registry,
            RegistryLocation::Postgres("postgres://u:secret@db/behavry".to_owned())
        );
        assert!(!format!("{:?}", config.registry).contains("secret"));
        assert_eq!(config.public_url, "https://authz.example");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Config::load(Path::new("/nonexistent/authz.toml"), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/authz.toml"), "{err}");
    }
    #[test]
    fn policy_reload_ms_defaults_overrides_and_bounds() {
        assert_eq!(
            parse("").unwrap().policy_reload_ms,
            DEFAULT_POLICY_RELOAD_MS
        );
        assert_eq!(parse("policy_reload_ms = 0").unwrap().policy_reload_ms, 0);
        let from_env = Config::from_toml_str(
            "policy_reload_ms = 5000",
            Path::new("/etc/behavry/authz.toml"),
            Path::new("/etc/behavry"),
            &env(&[(ENV_POLICY_RELOAD_MS, "250")]),
        )
        .unwrap();
        assert_eq!(from_env.policy_reload_ms, 250);
        let err = Config::from_toml_str(
            "",
            Path::new("/etc/behavry/authz.toml"),
            Path::new("/etc/behavry"),
            &env(&[(ENV_POLICY_RELOAD_MS, "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(ENV_POLICY_RELOAD_MS), "{err}");
        let err = error_text("policy_reload_ms = 5");
        assert!(err.contains("`policy_reload_ms`"), "{err}");
    }
}
