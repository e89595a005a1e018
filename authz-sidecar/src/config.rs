//! The authz-sidecar's configuration: one TOML file, environment overrides, validated once at load.
//!
//! Convention: snake_case TOML keys, unknown keys rejected (`deny_unknown_fields`) so a typo is an
//! error at start and not a silently ignored setting. Every default is a named constant below.
//! Relative paths (`key_file`, `policy_dir`) resolve against the folder of the config file, so the
//! sidecar and `behavry token mint` find the same key whatever their working directory.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
/// Upper bound for `token_ttl_secs` and for a ttl asked of the minter: one day. Agent tokens are
/// meant to be short-lived; a longer one is almost certainly a mistake.
pub const MAX_TOKEN_TTL_SECS: u64 = 86_400;
/// Default `decision_timeout_ms`: the wall-clock budget of one Rego evaluation.
pub const DEFAULT_DECISION_TIMEOUT_MS: u64 = 50;
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
/// Environment override of `issuer`.
pub const ENV_ISSUER: &str = "BEHAVRY_AUTHZ_ISSUER";
/// Environment override of `audience`.
pub const ENV_AUDIENCE: &str = "BEHAVRY_AUTHZ_AUDIENCE";

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
    /// Enrolled agents. Default: none (every request is denied).
    #[serde(default)]
    agents: Vec<AgentEnrollment>,
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
fn default_policy_dir() -> PathBuf {
    PathBuf::from(DEFAULT_POLICY_DIR)
}
fn default_token_ttl_secs() -> u64 {
    DEFAULT_TOKEN_TTL_SECS
}
fn default_decision_timeout_ms() -> u64 {
    DEFAULT_DECISION_TIMEOUT_MS
}

/// One enrolled agent (`[[agents]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEnrollment {
    /// Agent id: the token's `sub` and `client_id`.
    pub id: String,
    /// What the agent may use, per logical MCP server name (`[agents.servers.<name>]`).
    #[serde(default)]
    pub servers: BTreeMap<String, ServerGrant>,
}

/// What one agent may use on one MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerGrant {
    /// Tool names it may `tools/call`. Default: none.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource URIs it may `resources/read`. Default: none.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Prompt names it may `prompts/get`. Default: none.
    #[serde(default)]
    pub prompts: Vec<String>,
}

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
    /// Enrolled agents, ids unique.
    pub agents: Vec<AgentEnrollment>,
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
        validate(file, base_dir)
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
}

fn validate(file: ConfigFile, base_dir: &Path) -> Result<Config, ConfigError> {
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
    let mut seen = std::collections::BTreeSet::new();
    for (index, agent) in file.agents.iter().enumerate() {
        check_agent_id(&format!("agents[{index}].id"), &agent.id)?;
        if !seen.insert(agent.id.as_str()) {
            return Err(ConfigError::invalid(
                format!("agents[{index}].id"),
                format!("agent `{}` is enrolled twice", agent.id),
            ));
        }
        for (server, grant) in &agent.servers {
            let prefix = format!("agents[{index}].servers.{server}");
            check_name(&prefix, server)?;
            for (list_name, list) in [
                ("tools", &grant.tools),
                ("resources", &grant.resources),
                ("prompts", &grant.prompts),
            ] {
                for (item_index, item) in list.iter().enumerate() {
                    check_name(&format!("{prefix}.{list_name}[{item_index}]"), item)?;
                }
            }
        }
    }
    Ok(Config {
        listen,
        issuer: file.issuer,
        audience: file.audience,
        key_file: base_dir.join(file.key_file),
        token_ttl_secs: file.token_ttl_secs,
        policy_dir: base_dir.join(file.policy_dir),
        decision_timeout_ms: file.decision_timeout_ms,
        agents: file.agents,
    })
}

fn check_non_blank(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(field, "must not be empty"));
    }
    Ok(())
}

/// Names that end up in policy data and reasons: non-empty, bounded, no control characters.
fn check_name(field: &str, value: &str) -> Result<(), ConfigError> {
    check_non_blank(field, value)?;
    if value.len() > MAX_NAME_LEN {
        return Err(ConfigError::invalid(
            field,
            format!("longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Agent ids become the token `sub`, log fields and map keys: keep them to a plain alphabet.
fn check_agent_id(field: &str, value: &str) -> Result<(), ConfigError> {
    check_name(field, value)?;
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'));
    if !plain {
        return Err(ConfigError::invalid(
            field,
            format!("`{value}` may only contain ASCII letters, digits and - _ . : @"),
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
        assert!(config.policy_dir.join("behavry.rego").is_file());
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
            ("token_ttl_secs = 86401", "`token_ttl_secs`"),
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
    fn missing_file_names_the_path() {
        let err = Config::load(Path::new("/nonexistent/authz.toml"), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/authz.toml"), "{err}");
    }
}
