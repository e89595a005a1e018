//! `behavry approvals ...`: the calls policy holds for a human approval (docs/policy.md, "Human
//! approval"), through the authz-sidecar's admin API (`/admin/v1/approvals`). Same connection
//! flags as `behavry agent`; a named approver presents their own credential
//! (`--approver-token-file` or `BEHAVRY_APPROVER_TOKEN`) instead of the admin credential.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::agent::{AdminClient, AdminConnection, encode_segment, read_credential_file};

const APPROVALS: &str = "/admin/v1/approvals";

/// Environment variable holding an approver's own credential.
pub const ENV_APPROVER_TOKEN: &str = "BEHAVRY_APPROVER_TOKEN";

/// A named approver's own credential (`[[approvers]]` in the sidecar config), presented instead
/// of the admin credential when given.
#[derive(Debug, Args)]
pub struct ApproverCredential {
    /// The approver's credential (prefer the environment variable or --approver-token-file).
    #[arg(long, global = true, env = ENV_APPROVER_TOKEN, hide_env_values = true)]
    approver_token: Option<String>,
    /// A file holding the approver's credential (`behavry approvals new-approver` writes one).
    #[arg(long, global = true, conflicts_with = "approver_token")]
    approver_token_file: Option<PathBuf>,
}

impl ApproverCredential {
    fn token(&self) -> anyhow::Result<Option<String>> {
        match (&self.approver_token, &self.approver_token_file) {
            (Some(token), _) => Ok(Some(token.trim().to_owned())),
            (None, Some(path)) => read_credential_file(path, "approver token").map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// The `behavry approvals` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List held calls and approvals that have not expired (newest first).
    List {
        /// Only `pending`, `approved`, `rejected` or `used` ones.
        #[arg(long)]
        status: Option<String>,
    },
    /// Approve a held call: the agent's next identical call goes through, once.
    Approve {
        /// The approval id (`apr_…`).
        id: String,
        /// Who approves (recorded, and audited with the call). With the admin credential, default
        /// $USER; an approver's credential names them.
        #[arg(long = "as", value_name = "NAME")]
        approver: Option<String>,
    },
    /// Reject a held call: the agent's retries are refused until the rejection expires.
    Reject {
        /// The approval id (`apr_…`).
        id: String,
        /// Who rejects (recorded). With the admin credential, default $USER; an approver's
        /// credential names them.
        #[arg(long = "as", value_name = "NAME")]
        approver: Option<String>,
    },
    /// Make a credential for a new named approver: written to a new file (mode 0600), and the
    /// `[[approvers]]` entry (its SHA-256, never the credential) printed for the sidecar config.
    /// Needs no sidecar.
    NewApprover {
        /// The approver's name, as recorded with what they decide.
        name: String,
        /// Where to write the credential (must not exist yet).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
    },
}

/// Run one `behavry approvals` subcommand.
pub fn run(
    connection: &AdminConnection,
    approver: &ApproverCredential,
    command: ApprovalsCommand,
) -> anyhow::Result<ExitCode> {
    let own_credential = approver.token()?;
    let (method, path, body) = match command {
        ApprovalsCommand::List { status } => {
            let query = status
                .map(|s| format!("?status={}", encode_segment(&s)))
                .unwrap_or_default();
            (reqwest::Method::GET, format!("{APPROVALS}{query}"), None)
        }
        ApprovalsCommand::Approve { id, approver } => {
            decision(&id, "approve", approver, own_credential.is_some())?
        }
        ApprovalsCommand::Reject { id, approver } => {
            decision(&id, "reject", approver, own_credential.is_some())?
        }
        ApprovalsCommand::NewApprover { name, token_file } => {
            return new_approver(&name, &token_file);
        }
    };
    let client = match own_credential {
        Some(token) => AdminClient::with_token(connection, token)?,
        None => AdminClient::new(connection)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime
        .block_on(client.send(method, &path, body))?
        .unwrap_or(Value::Null);
    let text = if connection.json {
        serde_json::to_string_pretty(&answer)?
    } else if let Some(list) = answer.as_array() {
        if list.is_empty() {
            "no approvals".to_owned()
        } else {
            list.iter().map(describe).collect::<Vec<_>>().join("\n")
        }
    } else {
        describe(&answer)
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The request deciding approval `id`. An approver's own credential names them (a name given
/// with `--as` must be theirs); with the admin credential the name is `--as`, else $USER.
fn decision(
    id: &str,
    verb: &str,
    approver: Option<String>,
    own_credential: bool,
) -> anyhow::Result<(reqwest::Method, String, Option<Value>)> {
    let body = if own_credential {
        approver.map_or_else(|| json!({}), |name| json!({"approver": name}))
    } else {
        match approver.or_else(|| std::env::var("USER").ok()) {
            Some(name) if !name.trim().is_empty() => json!({"approver": name}),
            _ => bail!("who decides? pass --as NAME (no $USER to default to)"),
        }
    };
    Ok((
        reqwest::Method::POST,
        format!("{APPROVALS}/{}/{verb}", encode_segment(id)),
        Some(body),
    ))
}

/// `behavry approvals new-approver`: the credential to a new file only its owner reads, the
/// config entry to stdout.
fn new_approver(name: &str, token_file: &Path) -> anyhow::Result<ExitCode> {
    let (token, entry) =
        behavry_authz::approvals::new_approver(name).map_err(anyhow::Error::msg)?;
    write_secret_file(token_file, &format!("{token}\n"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "# credential of approver {name} written to {file}: hand it to them, keep it secret\n\
         # add this to the authz-sidecar config and restart it:\n\
         [[approvers]]\nname = {quoted}\ntoken_sha256 = \"{digest}\"",
        name = entry.name,
        file = token_file.display(),
        quoted = serde_json::to_string(&entry.name)?,
        digest = entry.token_sha256,
    )
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Write `secret` to a new file at `path` that only its owner can read (mode 0600 on Unix; on
/// other systems the directory's permissions apply): never over an existing file or through a
/// link, and removed again if it cannot be written whole.
fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    if let Err(err) = file
        .write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
    {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(err).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// One line per approval: id, status, who asks for what, why, and who decided. Every field the
/// agent chose is shown with control characters escaped, so a tool name cannot rewrite the
/// approver's terminal.
fn describe(approval: &Value) -> String {
    let text = |name: &str| {
        approval
            .get(name)
            .and_then(Value::as_str)
            .map_or_else(|| "-".to_owned(), printable)
    };
    let mut line = format!(
        "{}  {:<8}  {} -> {} {} {}  args {}  ({})",
        text("id"),
        text("status"),
        text("agent"),
        text("server"),
        text("method"),
        text("target"),
        approval.get("arguments").cloned().unwrap_or(Value::Null),
        text("reason"),
    );
    if let Some(by) = approval.get("decidedBy").and_then(Value::as_str) {
        line.push_str(&format!("  decided by {}", printable(by)));
        if approval.get("decidedWith").and_then(Value::as_str) == Some("admin") {
            line.push_str(" (named by the admin credential)");
        }
    }
    line
}

/// `text` with control characters (ANSI escapes, line breaks) and invisible ones that reorder or
/// hide text (bidi controls, zero-width characters, Unicode tags) escaped.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let invisible = matches!(c as u32,
                0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2069 | 0xFEFF | 0xE0000..=0xE007F);
            if c.is_control() || invisible {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_name_the_approver_and_encode_the_id() {
        let (method, path, body) =
            decision("apr_1/../x", "approve", Some("alice".into()), false).unwrap();
        assert_eq!(method, reqwest::Method::POST);
        assert_eq!(path, "/admin/v1/approvals/apr_1%2F..%2Fx/approve");
        assert_eq!(body, Some(json!({"approver": "alice"})));
        // An approver's own credential names them: no name is sent unless one is given.
        let (_, _, body) = decision("apr_1", "reject", None, true).unwrap();
        assert_eq!(body, Some(json!({})));
        let (_, _, body) = decision("apr_1", "reject", Some("alice".into()), true).unwrap();
        assert_eq!(body, Some(json!({"approver": "alice"})));
    }

    #[test]
    fn a_secret_file_is_new_and_its_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carol.token");
        write_secret_file(&path, "s3cret\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = write_secret_file(&path, "other\n").unwrap_err().to_string();
        assert!(again.contains("must not exist"), "{again}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret\n");
    }

    #[test]
    fn control_characters_chosen_by_the_agent_are_escaped() {
        let line = describe(&json!({"id": "apr_1", "target": "x\u{1b}[2J\nfake", "agent": "a"}));
        assert!(!line.contains('\u{1b}') && !line.contains('\n'), "{line}");
        assert!(line.contains("x\\u{1b}[2J\\nfake"), "{line}");
    }

    #[test]
    fn a_listed_approval_reads_on_one_line() {
        let line = describe(&json!({
            "id": "apr_1", "status": "pending", "agent": "bot", "server": "files",
            "method": "tools/call", "target": "delete_item", "arguments": {"id": 7},
            "reason": "destructive",
        }));
        assert_eq!(
            line,
            "apr_1  pending   bot -> files tools/call delete_item  args {\"id\":7}  (destructive)"
        );
    }
}
