//! `behavry-scripted-server`: runs the scripted upstream MCP server on a loopback address.
//!
//! Prints `scripted-server listening on ADDR` on stdout once the socket accepts connections,
//! so a test harness can start it with `--listen 127.0.0.1:0` and read the real port.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use behavry_scripted_server::upstream_auth::UpstreamAuth;
use behavry_scripted_server::{AllowedHosts, ServerOptions, serve};
use clap::Parser;
use tokio::net::TcpListener;

/// Scripted upstream MCP server (Streamable HTTP) for Behavry end-to-end tests.
#[derive(Debug, Parser)]
#[command(name = "behavry-scripted-server", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (the real one is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Answer MCP POSTs with application/json instead of SSE (runs rmcp stateless: no
    /// sessions, so ask_client cannot reach the client; progress still streams SSE).
    #[arg(long)]
    json_response: bool,
    /// Host header accepted on /mcp (repeatable); replaces the loopback default.
    #[arg(
        long = "allowed-host",
        value_name = "HOST",
        conflicts_with = "any_host"
    )]
    allowed_hosts: Vec<String>,
    /// Accept any Host header on /mcp (no DNS-rebinding protection).
    #[arg(long)]
    any_host: bool,
    /// Demand an RS256 `at+jwt` access token verified with this JWK Set file (with
    /// `--require-issuer` and `--require-audience`).
    #[arg(long, value_name = "FILE", requires_all = ["require_issuer", "require_audience"])]
    require_bearer_jwks: Option<std::path::PathBuf>,
    /// `iss` demanded with `--require-bearer-jwks`.
    #[arg(long, value_name = "ISS")]
    require_issuer: Option<String>,
    /// `aud` (this server's resource URI) demanded with `--require-bearer-jwks`.
    #[arg(long, value_name = "URI")]
    require_audience: Option<String>,
    /// Demand a static key in this (lowercase) header; the key is read from the environment
    /// variable BEHAVRY_SCRIPTED_REQUIRED_KEY.
    #[arg(long, value_name = "NAME", conflicts_with = "require_bearer_jwks")]
    require_header: Option<String>,
}

/// Environment variable holding the key `--require-header` demands.
const REQUIRED_KEY_ENV: &str = "BEHAVRY_SCRIPTED_REQUIRED_KEY";

/// Startup failures of the binary.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the bound address: {0}")]
    LocalAddress(#[source] std::io::Error),
    #[error("cannot announce readiness on stdout: {0}")]
    Announce(#[source] std::io::Error),
    #[error(transparent)]
    Serve(#[from] behavry_scripted_server::ServeError),
    #[error("upstream credential options: {0}")]
    Auth(String),
}

fn upstream_auth(cli: &Cli) -> Result<UpstreamAuth, StartError> {
    if let Some(path) = &cli.require_bearer_jwks {
        let text = std::fs::read_to_string(path)
            .map_err(|err| StartError::Auth(format!("cannot read {}: {err}", path.display())))?;
        let jwks = serde_json::from_str(&text).map_err(|err| {
            StartError::Auth(format!("{} is not a JWK Set: {err}", path.display()))
        })?;
        return Ok(UpstreamAuth::Bearer {
            jwks: std::sync::Arc::new(jwks),
            issuer: cli.require_issuer.clone().unwrap_or_default(),
            audience: cli.require_audience.clone().unwrap_or_default(),
        });
    }
    if let Some(name) = &cli.require_header {
        let value = std::env::var(REQUIRED_KEY_ENV)
            .map_err(|_| StartError::Auth(format!("--require-header needs {REQUIRED_KEY_ENV}")))?;
        return Ok(UpstreamAuth::Header {
            name: name.to_ascii_lowercase(),
            value,
        });
    }
    Ok(UpstreamAuth::Open)
}

#[tokio::main]
async fn main() -> ExitCode {
    behavry_service::init_logging();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("behavry-scripted-server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), StartError> {
    let auth = upstream_auth(&cli)?;
    let allowed_hosts = if cli.any_host {
        AllowedHosts::Any
    } else if cli.allowed_hosts.is_empty() {
        AllowedHosts::Loopback
    } else {
        AllowedHosts::Only(cli.allowed_hosts)
    };
    let options = ServerOptions {
        json_response: cli.json_response,
        allowed_hosts,
        auth,
    };
    let listener = TcpListener::bind(cli.listen)
        .await
        .map_err(|source| StartError::Bind {
            address: cli.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(StartError::LocalAddress)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "scripted-server listening on {address}").map_err(StartError::Announce)?;
    stdout.flush().map_err(StartError::Announce)?;
    drop(stdout);
    serve(listener, &options, behavry_service::shutdown_signal()).await?;
    Ok(())
}
