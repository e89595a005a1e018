//! `behavry-scripted-server`: runs the scripted upstream MCP server on a loopback address.
//!
//! Prints `scripted-server listening on ADDR` on stdout once the socket accepts connections,
//! so a test harness can start it with `--listen 127.0.0.1:0` and read the real port.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

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
}

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
