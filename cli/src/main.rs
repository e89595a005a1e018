//! `behavry`: the operator's command for a Behavry deployment.
//!
//! Thin: every subcommand parses its arguments here and calls into the owning crate
//! (`behavry-authz` for tokens and the agent registry's admin API, `behavry-audit` for the log).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod approvals;
mod audit;
mod key;
mod pins;
mod policy;
mod scan;
mod secret;
mod token;
mod trace;

#[derive(Debug, Parser)]
#[command(
    name = "behavry",
    version,
    about = "Governance for MCP traffic: agents, tokens, audit, traces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// The agent registry and the revocation list, through the authz-sidecar's admin API.
    Agent {
        #[command(flatten)]
        connection: agent::AdminConnection,
        #[command(subcommand)]
        command: agent::AgentCommand,
    },
    /// Calls held for a human approval, through the authz-sidecar's admin API.
    Approvals {
        #[command(flatten)]
        connection: agent::AdminConnection,
        #[command(flatten)]
        approver: approvals::ApproverCredential,
        #[command(subcommand)]
        command: approvals::ApprovalsCommand,
    },
    /// Pinned tool definitions and the changed ones held for a decision (rug pulls), through
    /// the authz-sidecar's admin API.
    Pins {
        #[command(flatten)]
        connection: agent::AdminConnection,
        /// Whose pins (docs/pins.md, "Tenants"): `default` unless named; `list` shows every
        /// tenant's unless named.
        #[arg(long, env = "BEHAVRY_TENANT", global = true)]
        tenant: Option<String>,
        #[command(subcommand)]
        command: pins::PinsCommand,
    },
    /// Agent access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The authz-sidecar's signing key ring.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// The encrypted secrets file of `secret` upstreams (values from stdin, never argv).
    Secret {
        #[command(flatten)]
        location: secret::StoreLocation,
        #[command(subcommand)]
        command: secret::SecretCommand,
    },
    /// Policy bundles.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Run the DLP detectors on a file of labelled cases (JSON lines) and print precision and
    /// recall per detector.
    Scan {
        /// The cases: one `{"text": …, "labels": […], "field"?: …}` per line.
        file: PathBuf,
        /// A DLP config (the filter's `dlp` block as JSON); default: the built-in detectors.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Exit 1 when a detector's precision or recall is below this.
        #[arg(long, default_value_t = 0.95)]
        min: f64,
        /// Print every case the detectors got wrong.
        #[arg(long, short)]
        verbose: bool,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A Decision Trace as a tree (client span, calls, intent → decision → outcome, the
    /// server's requests to the client), each record's inclusion in the newest signed
    /// checkpoint checked. Exit 1 when a proof or the checkpoint's signature fails.
    Trace {
        /// The trace id (32 lowercase hex digits).
        id: String,
        /// The audit-sink.
        #[arg(
            long,
            env = "BEHAVRY_AUDIT_URL",
            default_value = "http://127.0.0.1:9912"
        )]
        url: String,
        /// The log's verifier key (`behavry audit verifier-key`); without one the checkpoint's
        /// signature is not checked.
        #[arg(long = "key", value_name = "VKEY")]
        keys: Vec<String>,
        /// Print the sink's answer as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Find Decision Traces: newest first, every filter given must hold for one record.
    Traces {
        /// The audit-sink.
        #[arg(
            long,
            env = "BEHAVRY_AUDIT_URL",
            default_value = "http://127.0.0.1:9912"
        )]
        url: String,
        #[command(flatten)]
        filters: trace::Filters,
        /// Print the sink's answer as JSON instead.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint an RS256 access token for an enrolled agent and print it.
    Mint {
        /// Agent id, as enrolled in the authz-sidecar config.
        #[arg(long)]
        agent: String,
        /// The authz-sidecar config file (its key and issuer are used).
        #[arg(long, env = "BEHAVRY_AUTHZ_CONFIG", default_value = "authz.toml")]
        config: PathBuf,
        /// Lifetime in seconds (default: the config's token lifetime).
        #[arg(long)]
        ttl: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Make the published next key the signing key; the old one stays published until its
    /// tokens expire. Restart the authz-sidecar afterwards.
    Rotate {
        /// The authz-sidecar config file (its `key_file` names the ring).
        #[arg(long, env = "BEHAVRY_AUTHZ_CONFIG", default_value = "authz.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Run a bundle's Rego `test_` rules and its YAML decision cases (`<DIR>/tests/*.yaml`).
    Test {
        /// The bundle folder.
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// A blast-radius window label the cases have usage for (repeat; default: the
        /// authz-sidecar's default windows).
        #[arg(long = "window", value_name = "LABEL")]
        windows: Vec<String>,
        /// Print passing tests too.
        #[arg(long, short)]
        verbose: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check a log (a database, an export or a running sink): its hash chain, its Merkle tree
    /// recomputed from the records, its signed checkpoints and any checkpoints you kept. Names
    /// the first bad record; exit 1 when the log fails, 2 when it cannot be checked.
    Verify {
        /// The audit-sink's SQLite database file, opened read-only (`BEHAVRY_AUDIT_DB` when no
        /// source is given).
        #[arg(long, group = "source")]
        db: Option<PathBuf>,
        /// An export (`behavry audit export`, `GET /v1/log/export`); `-` reads standard input.
        #[arg(long, group = "source")]
        export: Option<PathBuf>,
        /// A running audit-sink (`http://127.0.0.1:9912`): its whole export is fetched.
        #[arg(long, group = "source")]
        url: Option<String>,
        /// The log's verifier key, `<origin>+<key id>+<key>` (`behavry audit verifier-key`);
        /// checkpoints must be signed by one. Repeat for several.
        #[arg(long = "key", value_name = "VKEY")]
        keys: Vec<String>,
        /// A file of verifier keys, one a line.
        #[arg(long = "key-file", value_name = "PATH")]
        key_files: Vec<PathBuf>,
        /// A checkpoint note kept from an earlier look at the log (`GET /v1/log/checkpoint`):
        /// the log must still hold it. Repeat for several.
        #[arg(long = "checkpoint", value_name = "PATH")]
        checkpoints: Vec<PathBuf>,
        /// Check sequence, links, hashes, the tree and the checkpoints, but do not read each
        /// body again as an event (canonical form, columns): tampering still shows, a writer's
        /// malformed record does not.
        #[arg(long)]
        quick: bool,
    },
    /// Write the log (or the records FROM..=TO) as NDJSON with its checkpoints and proofs.
    Export {
        /// The audit-sink's SQLite database file, opened read-only.
        #[arg(long, env = "BEHAVRY_AUDIT_DB")]
        db: PathBuf,
        /// The first record.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// The last record (default: the log's last).
        #[arg(long)]
        to: Option<u64>,
        /// Give each record its inclusion proof in the first checkpoint that covers it.
        #[arg(long)]
        proofs: bool,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the verifier key of the sink's checkpoint key (what `verify --key` takes).
    VerifierKey {
        /// The Ed25519 PKCS#8 PEM key the sink signs with (`--checkpoint-key`).
        #[arg(long, env = "BEHAVRY_AUDIT_CHECKPOINT_KEY")]
        checkpoint_key: PathBuf,
        /// The log's origin (`--origin` of the sink).
        #[arg(
            long,
            env = "BEHAVRY_AUDIT_ORIGIN",
            default_value = "behavry.local/audit"
        )]
        origin: String,
    },
}

fn run_audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            db,
            export,
            url,
            keys,
            key_files,
            checkpoints,
            quick,
        } => {
            // The sink's own variable names the database only when nothing else is asked
            // for: set on the sink's machine, it must not turn `--export` into a conflict.
            let db = db.or_else(|| std::env::var_os("BEHAVRY_AUDIT_DB").map(PathBuf::from));
            let source = match (export, url, db) {
                (Some(export), _, _) => audit::Source::Export(export),
                (_, Some(url), _) => audit::Source::Url(url),
                (_, _, Some(db)) => audit::Source::Db(db),
                _ => anyhow::bail!("say what to verify: --db, --export or --url"),
            };
            let trust = audit::Trust {
                keys,
                key_files,
                checkpoints,
                quick,
            };
            audit::verify(&source, &trust)
        }
        AuditCommand::Export {
            db,
            from,
            to,
            proofs,
            output,
        } => audit::export(&db, from, to, proofs, output.as_deref()),
        AuditCommand::VerifierKey {
            checkpoint_key,
            origin,
        } => audit::verifier_key(&checkpoint_key, &origin),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent {
            connection,
            command,
        } => agent::run(&connection, command),
        Command::Approvals {
            connection,
            approver,
            command,
        } => approvals::run(&connection, &approver, command),
        Command::Pins {
            connection,
            tenant,
            command,
        } => pins::run(&connection, tenant.as_deref(), command),
        Command::Token {
            command: TokenCommand::Mint { agent, config, ttl },
        } => token::mint(&agent, &config, ttl),
        Command::Key {
            command: KeyCommand::Rotate { config },
        } => key::rotate(&config),
        Command::Secret { location, command } => secret::run(&location, command),
        Command::Policy {
            command:
                PolicyCommand::Test {
                    dir,
                    windows,
                    verbose,
                },
        } => policy::run_test(&dir, &windows, verbose),
        Command::Scan {
            file,
            config,
            min,
            verbose,
        } => scan::run(&file, config.as_deref(), min, verbose),
        Command::Audit { command } => run_audit(command),
        Command::Trace {
            id,
            url,
            keys,
            json,
        } => trace::show(&url, &id, &keys, json),
        Command::Traces { url, filters, json } => trace::search(&url, &filters, json),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("behavry: {err:#}");
            ExitCode::from(2)
        }
    }
}
