//! `behavry approvals ...`: the calls policy holds for a human approval (docs/policy.md, "Human
//! approval"), through the authz-sidecar's admin API (`/admin/v1/approvals`). Same connection
//! flags as `behavry agent`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::agent::{AdminClient, AdminConnection, encode_segment};

const APPROVALS: &str = "/admin/v1/approvals";

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
        /// Who approves (recorded, and audited with the call); default: $USER.
        #[arg(long = "as", value_name = "NAME")]
        approver: Option<String>,
    },
    /// Reject a held call: the agent's retries are refused until the rejection expires.
    Reject {
        /// The approval id (`apr_…`).
        id: String,
        /// Who rejects (recorded); default: $USER.
        #[arg(long = "as", value_name = "NAME")]
        approver: Option<String>,
    },
}

/// Run one `behavry approvals` subcommand.
pub fn run(connection: &AdminConnection, command: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    let (method, path, body) = match command {
        ApprovalsCommand::List { status } => {
            let query = status
                .map(|s| format!("?status={}", encode_segment(&s)))
                .unwrap_or_default();
            (reqwest::Method::GET, format!("{APPROVALS}{query}"), None)
        }
        ApprovalsCommand::Approve { id, approver } => decision(&id, "approve", approver)?,
        ApprovalsCommand::Reject { id, approver } => decision(&id, "reject", approver)?,
    };
    let client = AdminClient::new(connection)?;
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

fn decision(
    id: &str,
    verb: &str,
    approver: Option<String>,
) -> anyhow::Result<(reqwest::Method, String, Option<Value>)> {
    let approver = match approver.or_else(|| std::env::var("USER").ok()) {
        Some(name) if !name.trim().is_empty() => name,
        _ => bail!("who decides? pass --as NAME (no $USER to default to)"),
    };
    Ok((
        reqwest::Method::POST,
        format!("{APPROVALS}/{}/{verb}", encode_segment(id)),
        Some(json!({"approver": approver})),
    ))
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
    }
    line
}

/// `text` with control characters (ANSI escapes, line breaks) escaped.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
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
        let (method, path, body) = decision("apr_1/../x", "approve", Some("alice".into())).unwrap();
        assert_eq!(method, reqwest::Method::POST);
        assert_eq!(path, "/admin/v1/approvals/apr_1%2F..%2Fx/approve");
        assert_eq!(body, Some(json!({"approver": "alice"})));
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
