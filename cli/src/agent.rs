//! `behavry agent ...`: manage the authz-sidecar's agent registry and revocation list through
//! its admin API (`/admin/v1/agents`, `/admin/v1/revocations`, see docs/identity.md).
//!
//! The admin credential comes from `--admin-token`, `--admin-token-file` or
//! `BEHAVRY_AUTHZ_ADMIN_TOKEN` (the variable the sidecar reads too). Public keys are read here
//! from PEM or JWK files and sent as public JWKs; private keys are refused before anything is
//! sent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use behavry_authz::config::ENV_ADMIN_TOKEN;
use behavry_authz::{ServerGrant, parse_public_key};
use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, Args)]
pub struct AdminConnection {
    /// Base URL of the authz-sidecar.
    #[arg(
        long,
        global = true,
        env = "BEHAVRY_AUTHZ_URL",
        default_value = "http://127.0.0.1:9911"
    )]
    url: String,
    /// The admin credential (prefer the environment variable or --admin-token-file: a command
    /// line is visible to other local users).
    #[arg(long, global = true, env = ENV_ADMIN_TOKEN, hide_env_values = true)]
    admin_token: Option<String>,
    /// A file holding the admin credential.
    #[arg(long, global = true, conflicts_with = "admin_token")]
    admin_token_file: Option<PathBuf>,
    /// Print the admin API's JSON answer instead of a summary.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// The `behavry agent` subcommands.
// Parsed once per process: the size of the `Enroll` variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Enroll a new agent.
    Enroll {
        /// Agent id (token `sub` and `client_id`): ASCII letters, digits, - _ . : @
        #[arg(long)]
        id: String,
        /// Who is responsible for it.
        #[arg(long)]
        owner: Option<String>,
        /// A role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A scope it may be issued (repeatable; default: mcp).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A tool it may call, as SERVER:TOOL (repeatable).
        #[arg(long = "tool", value_name = "SERVER:TOOL")]
        tools: Vec<String>,
        /// A resource it may read, as SERVER:URI (repeatable).
        #[arg(long = "resource", value_name = "SERVER:URI")]
        resources: Vec<String>,
        /// A prompt it may get, as SERVER:PROMPT (repeatable).
        #[arg(long = "prompt", value_name = "SERVER:PROMPT")]
        prompts: Vec<String>,
        /// A public key file, PEM (SubjectPublicKeyInfo) or JWK (repeatable).
        #[arg(long = "public-key", value_name = "FILE")]
        public_keys: Vec<PathBuf>,
        /// The key id of the (single) --public-key (default: its RFC 7638 thumbprint).
        #[arg(long)]
        kid: Option<String>,
        /// An agent that may act for this one through token exchange (RFC 8693 `may_act`;
        /// repeatable).
        #[arg(long = "may-act", value_name = "ID")]
        may_act: Vec<String>,
        /// A Kubernetes service account whose token may be exchanged for this agent's token,
        /// as system:serviceaccount:NAMESPACE:NAME (repeatable).
        #[arg(long = "service-account", value_name = "SUB")]
        service_accounts: Vec<String>,
        /// An MCP client the agent is enrolled to use, e.g. claude-code (repeatable).
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// Enroll disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List the enrolled agents.
    List,
    /// Show one agent.
    Get {
        /// Agent id.
        id: String,
    },
    /// Disable an agent: no more tokens, every decision for it denies.
    Disable {
        /// Agent id.
        id: String,
    },
    /// Enable a disabled agent.
    Enable {
        /// Agent id.
        id: String,
    },
    /// Delete an agent and its keys.
    Delete {
        /// Agent id.
        id: String,
    },
    /// Register another public key for an agent.
    AddKey {
        /// Agent id.
        id: String,
        /// The public key file, PEM (SubjectPublicKeyInfo) or JWK.
        #[arg(long = "public-key", value_name = "FILE")]
        public_key: PathBuf,
        /// Its key id (default: the JWK's kid or the RFC 7638 thumbprint).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Remove one of an agent's public keys.
    RemoveKey {
        /// Agent id.
        id: String,
        /// The key id.
        #[arg(long)]
        kid: String,
    },
    /// Revoke one access token: the proxy refuses it although it still verifies.
    RevokeToken {
        /// The token's `jti` claim (it may start with `-`: base64url ids do).
        #[arg(long, allow_hyphen_values = true)]
        jti: String,
        /// The token's `exp` claim, seconds since the epoch (default: the longest token lifetime
        /// from now); the revocation is dropped after it.
        #[arg(long, value_name = "UNIX")]
        expires_at: Option<i64>,
    },
    /// Revoke every token of an agent until they expire (to cut it off for good, disable it).
    RevokeAgent {
        /// Agent id.
        id: String,
        /// Until when, seconds since the epoch (default: the longest token lifetime from now).
        #[arg(long, value_name = "UNIX")]
        expires_at: Option<i64>,
    },
    /// List the revocations in force (tokens, and disabled, deleted or revoked agents).
    Revocations,
}

/// Run one `behavry agent` subcommand.
pub fn run(connection: &AdminConnection, command: AgentCommand) -> anyhow::Result<ExitCode> {
    let (method, path, body) = request_for(command)?;
    let client = AdminClient::new(connection)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime.block_on(client.send(method.clone(), &path, body))?;
    let text = if connection.json {
        serde_json::to_string_pretty(&answer.unwrap_or(Value::Null))?
    } else {
        summarize(&method, &path, answer.as_ref())
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

const AGENTS: &str = "/admin/v1/agents";
const REVOCATIONS: &str = "/admin/v1/revocations";

/// The admin API call for `command`.
fn request_for(command: AgentCommand) -> anyhow::Result<(reqwest::Method, String, Option<Value>)> {
    use reqwest::Method;
    let agent_path = |id: &str| format!("{AGENTS}/{}", encode_segment(id));
    Ok(match command {
        AgentCommand::Enroll {
            id,
            owner,
            roles,
            scopes,
            tools,
            resources,
            prompts,
            public_keys,
            kid,
            may_act,
            service_accounts,
            clients,
            disabled,
        } => {
            if kid.is_some() && public_keys.len() != 1 {
                bail!("--kid names the key of exactly one --public-key");
            }
            let keys = public_keys
                .iter()
                .map(|path| read_public_jwk(path, kid.as_deref()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let servers = grants(&tools, &resources, &prompts)?;
            let mut body = serde_json::Map::new();
            body.insert("id".to_owned(), Value::from(id));
            body.insert("roles".to_owned(), Value::from(roles));
            body.insert("servers".to_owned(), serde_json::to_value(servers)?);
            body.insert("keys".to_owned(), Value::from(keys));
            body.insert("enabled".to_owned(), Value::from(!disabled));
            body.insert("mayAct".to_owned(), Value::from(may_act));
            body.insert("serviceAccounts".to_owned(), Value::from(service_accounts));
            body.insert("clients".to_owned(), Value::from(clients));
            if let Some(owner) = owner {
                body.insert("owner".to_owned(), Value::from(owner));
            }
            // Without --scope the sidecar's default (`mcp`) applies.
            if !scopes.is_empty() {
                body.insert("scopes".to_owned(), Value::from(scopes));
            }
            (Method::POST, AGENTS.to_owned(), Some(Value::Object(body)))
        }
        AgentCommand::List => (Method::GET, AGENTS.to_owned(), None),
        AgentCommand::Get { id } => (Method::GET, agent_path(&id), None),
        AgentCommand::Disable { id } => {
            (Method::POST, format!("{}/disable", agent_path(&id)), None)
        }
        AgentCommand::Enable { id } => (Method::POST, format!("{}/enable", agent_path(&id)), None),
        AgentCommand::Delete { id } => (Method::DELETE, agent_path(&id), None),
        AgentCommand::AddKey {
            id,
            public_key,
            kid,
        } => {
            let jwk = read_public_jwk(&public_key, kid.as_deref())?;
            (Method::POST, format!("{}/keys", agent_path(&id)), Some(jwk))
        }
        AgentCommand::RemoveKey { id, kid } => (
            Method::DELETE,
            format!("{}/keys/{}", agent_path(&id), encode_segment(&kid)),
            None,
        ),
        AgentCommand::RevokeToken { jti, expires_at } => (
            Method::POST,
            REVOCATIONS.to_owned(),
            Some(revocation_body("tokenId", jti, expires_at)),
        ),
        AgentCommand::RevokeAgent { id, expires_at } => (
            Method::POST,
            REVOCATIONS.to_owned(),
            Some(revocation_body("agent", id, expires_at)),
        ),
        AgentCommand::Revocations => (Method::GET, REVOCATIONS.to_owned(), None),
    })
}

/// Body of `POST /admin/v1/revocations`; without `expiresAt` the sidecar's default applies.
fn revocation_body(target: &str, id: String, expires_at: Option<i64>) -> Value {
    let mut body = serde_json::Map::new();
    body.insert(target.to_owned(), Value::from(id));
    if let Some(expires_at) = expires_at {
        body.insert("expiresAt".to_owned(), Value::from(expires_at));
    }
    Value::Object(body)
}

/// `SERVER:NAME` flags grouped into per-server grants (split at the first `:`, so resource URIs
/// keep theirs).
fn grants(
    tools: &[String],
    resources: &[String],
    prompts: &[String],
) -> anyhow::Result<BTreeMap<String, ServerGrant>> {
    let mut servers: BTreeMap<String, ServerGrant> = BTreeMap::new();
    for (flag, values) in [
        ("--tool", tools),
        ("--resource", resources),
        ("--prompt", prompts),
    ] {
        for value in values {
            let Some((server, name)) = value
                .split_once(':')
                .filter(|(s, n)| !s.is_empty() && !n.is_empty())
            else {
                bail!("{flag} `{value}` must be SERVER:NAME");
            };
            let grant = servers.entry(server.to_owned()).or_default();
            let list = match flag {
                "--tool" => &mut grant.tools,
                "--resource" => &mut grant.resources,
                _ => &mut grant.prompts,
            };
            list.push(name.to_owned());
        }
    }
    Ok(servers)
}

/// The public JWK of a PEM or JWK file, validated locally (private keys refused).
fn read_public_jwk(path: &Path, kid: Option<&str>) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read public key file {}", path.display()))?;
    let key = parse_public_key(&text, kid)
        .with_context(|| format!("public key file {}", path.display()))?;
    Ok(serde_json::to_value(key.jwk())?)
}

/// Percent-encode a path segment (RFC 3986 §3.3): everything but unreserved characters.
pub(crate) fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub(crate) struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// A credential kept in a file (trimmed).
pub(crate) fn read_credential_file(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?
        .trim()
        .to_owned())
}

impl AdminClient {
    pub(crate) fn new(connection: &AdminConnection) -> anyhow::Result<AdminClient> {
        let token = match (&connection.admin_token, &connection.admin_token_file) {
            (Some(token), _) => token.trim().to_owned(),
            (None, Some(path)) => read_credential_file(path, "admin token")?,
            (None, None) => bail!(
                "no admin credential: pass --admin-token-file, --admin-token or set {ENV_ADMIN_TOKEN}"
            ),
        };
        AdminClient::with_token(connection, token)
    }

    /// A client of `connection`'s sidecar that presents `token` instead of the admin credential.
    pub(crate) fn with_token(
        connection: &AdminConnection,
        token: String,
    ) -> anyhow::Result<AdminClient> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(AdminClient {
            http,
            base: connection.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Send one request; a non-2xx answer is an error naming the status and the API's message.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the authz-sidecar admin API at {url}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("cannot read the answer of {url}"))?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let code = json
                .as_ref()
                .and_then(|j| field(j, "error").as_str())
                .unwrap_or("error");
            let message = json
                .as_ref()
                .and_then(|j| field(j, "message").as_str())
                .map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_owned,
                );
            bail!("admin API answered {status} {code}: {message}");
        }
        Ok(json)
    }
}

/// A short human summary of an answer.
fn summarize(method: &reqwest::Method, path: &str, answer: Option<&Value>) -> String {
    let Some(answer) = answer else {
        let id = path.rsplit('/').next().unwrap_or_default();
        return if *method == reqwest::Method::DELETE {
            format!("deleted agent {id}")
        } else {
            "done".to_owned()
        };
    };
    if path == REVOCATIONS {
        return describe_revocations(answer);
    }
    if let Some(agents) = field(answer, "agents").as_array() {
        if agents.is_empty() {
            return "no agents enrolled".to_owned();
        }
        return agents
            .iter()
            .map(|agent| {
                format!(
                    "{}\t{}\towner={}\troles={}\tkeys={}",
                    field(agent, "id").as_str().unwrap_or("?"),
                    state_word(agent),
                    field(agent, "owner").as_str().unwrap_or("-"),
                    join(field(agent, "roles")),
                    field(agent, "keys").as_array().map_or(0, Vec::len),
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    describe(answer)
}

/// One line per revocation in force: `token <jti> until <exp>`, `agent <id> <reason> [until ..]`.
fn describe_revocations(answer: &Value) -> String {
    let mut lines = vec![format!(
        "revocation list version {}",
        field(answer, "version").as_u64().unwrap_or(0)
    )];
    for token in field(answer, "tokens").as_array().into_iter().flatten() {
        lines.push(format!(
            "token\t{}\tuntil {}",
            field(token, "tokenId").as_str().unwrap_or("?"),
            field(token, "expiresAt").as_i64().unwrap_or(0),
        ));
    }
    for agent in field(answer, "agents").as_array().into_iter().flatten() {
        let until = field(agent, "expiresAt")
            .as_i64()
            .map_or_else(|| "until enabled".to_owned(), |t| format!("until {t}"));
        lines.push(format!(
            "agent\t{}\t{}\t{until}",
            field(agent, "agent").as_str().unwrap_or("?"),
            field(agent, "reason").as_str().unwrap_or("?"),
        ));
    }
    lines.join("\n")
}

/// A member of a JSON object, `null` when absent (never panics).
fn field<'v>(value: &'v Value, name: &str) -> &'v Value {
    value.get(name).unwrap_or(&Value::Null)
}

fn state_word(agent: &Value) -> &'static str {
    if field(agent, "enabled").as_bool().unwrap_or(false) {
        "enabled"
    } else {
        "disabled"
    }
}

fn join(list: &Value) -> String {
    let items: Vec<&str> = list
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

fn describe(agent: &Value) -> String {
    let mut lines = vec![
        format!(
            "agent {} ({})",
            field(agent, "id").as_str().unwrap_or("?"),
            state_word(agent)
        ),
        format!(
            "  owner:  {}",
            field(agent, "owner").as_str().unwrap_or("-")
        ),
        format!("  roles:  {}", join(field(agent, "roles"))),
        format!("  scopes: {}", join(field(agent, "scopes"))),
    ];
    for (label, name) in [
        ("may act", "mayAct"),
        ("service accounts", "serviceAccounts"),
        ("clients", "clients"),
    ] {
        if field(agent, name)
            .as_array()
            .is_some_and(|list| !list.is_empty())
        {
            lines.push(format!("  {label}: {}", join(field(agent, name))));
        }
    }
    if let Some(servers) = field(agent, "servers").as_object() {
        for (server, grant) in servers {
            lines.push(format!(
                "  server {server}: tools {} · resources {} · prompts {}",
                join(field(grant, "tools")),
                join(field(grant, "resources")),
                join(field(grant, "prompts")),
            ));
        }
    }
    if let Some(keys) = field(agent, "keys").as_array() {
        for key in keys {
            lines.push(format!(
                "  key {} ({})",
                field(key, "kid").as_str().unwrap_or("?"),
                field(key, "alg").as_str().unwrap_or("?"),
            ));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_group_by_server_and_keep_uri_colons() {
        let servers = grants(
            &[
                "everything:echo".to_owned(),
                "everything:get-sum".to_owned(),
            ],
            &["everything:demo://resource/1".to_owned()],
            &["other:p".to_owned()],
        )
        .unwrap();
        assert_eq!(servers["everything"].tools, ["echo", "get-sum"]);
        assert_eq!(servers["everything"].resources, ["demo://resource/1"]);
        assert_eq!(servers["other"].prompts, ["p"]);
        for bad in ["echo", ":echo", "everything:"] {
            let err = grants(&[bad.to_owned()], &[], &[]).unwrap_err();
            assert!(err.to_string().contains("SERVER:NAME"), "{bad}: {err}");
        }
    }

    #[test]
    fn private_keys_are_refused_before_sending() {
        let dir = std::env::temp_dir().join(format!("behavry-cli-agent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.pem");
        std::fs::write(
            &path,
            include_str!("../../authz-sidecar/testdata/test-signing-key.pem"),
        )
        .unwrap();
        let err = read_public_jwk(&path, None).unwrap_err();
        assert!(format!("{err:#}").contains("private key"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kid_needs_exactly_one_key_and_segments_are_encoded() {
        let command = AgentCommand::Enroll {
            id: "a".to_owned(),
            owner: None,
            roles: vec![],
            scopes: vec![],
            tools: vec![],
            resources: vec![],
            prompts: vec![],
            public_keys: vec![],
            kid: Some("k".to_owned()),
            may_act: vec![],
            service_accounts: vec![],
            clients: vec![],
            disabled: false,
        };
        assert!(request_for(command).is_err());
        let (_, path, _) = request_for(AgentCommand::RemoveKey {
            id: "a@b".to_owned(),
            kid: "k/1".to_owned(),
        })
        .unwrap();
        assert_eq!(path, "/admin/v1/agents/a%40b/keys/k%2F1");
    }

    #[test]
    fn a_jti_may_start_with_a_hyphen() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            command: AgentCommand,
        }
        let cli =
            Cli::try_parse_from(["behavry", "revoke-token", "--jti", "-zgn5FLoJrpyQ"]).unwrap();
        let (_, _, body) = request_for(cli.command).unwrap();
        assert_eq!(body.unwrap()["tokenId"], "-zgn5FLoJrpyQ");
    }

    #[test]
    fn enroll_sends_delegation_fields() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            command: AgentCommand,
        }
        let cli = Cli::try_parse_from([
            "behavry",
            "enroll",
            "--id",
            "worker",
            "--may-act",
            "orchestrator",
            "--may-act",
            "planner",
            "--service-account",
            "system:serviceaccount:agents:worker",
            "--client",
            "claude-code",
        ])
        .unwrap();
        let (method, path, body) = request_for(cli.command).unwrap();
        assert_eq!((method, path.as_str()), (reqwest::Method::POST, AGENTS));
        let body = body.unwrap();
        assert_eq!(
            body["mayAct"],
            serde_json::json!(["orchestrator", "planner"])
        );
        assert_eq!(
            body["serviceAccounts"],
            serde_json::json!(["system:serviceaccount:agents:worker"])
        );
        assert_eq!(body["clients"], serde_json::json!(["claude-code"]));
        let described = describe(&serde_json::json!({
            "id": "worker", "enabled": true, "mayAct": ["orchestrator"], "clients": [],
        }));
        assert!(described.contains("may act: orchestrator"), "{described}");
        assert!(!described.contains("clients"), "{described}");
    }

    #[test]
    fn revocations_are_sent_to_the_revocation_route() {
        let (method, path, body) = request_for(AgentCommand::RevokeToken {
            jti: "abc".to_owned(),
            expires_at: Some(1_700_000_000),
        })
        .unwrap();
        assert_eq!(
            (method, path.as_str()),
            (reqwest::Method::POST, REVOCATIONS)
        );
        assert_eq!(
            body,
            Some(serde_json::json!({"tokenId": "abc", "expiresAt": 1_700_000_000}))
        );
        let (_, _, body) = request_for(AgentCommand::RevokeAgent {
            id: "mallory".to_owned(),
            expires_at: None,
        })
        .unwrap();
        assert_eq!(body, Some(serde_json::json!({"agent": "mallory"})));
        let summary = summarize(
            &reqwest::Method::GET,
            REVOCATIONS,
            Some(&serde_json::json!({
                "version": 7,
                "tokens": [{"tokenId": "abc", "expiresAt": 5, "revokedAt": 1}],
                "agents": [{"agent": "old", "reason": "disabled", "expiresAt": null, "revokedAt": 1}],
            })),
        );
        assert_eq!(
            summary,
            "revocation list version 7\ntoken\tabc\tuntil 5\nagent\told\tdisabled\tuntil enabled"
        );
    }
}
