//! `behavry-vault-standin`: serves the Vault KV v2 stand-in (see the library docs) so tests and
//! local runs have something that answers like Vault. Not Vault: no Vault server can be
//! installed on the machines this project runs on.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use behavry_vault_standin::StandinState;
use clap::Parser;

/// Test stand-in for the HashiCorp Vault KV v2 HTTP API (in memory, one token, not Vault).
#[derive(Debug, Parser)]
#[command(name = "behavry-vault-standin", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8200")]
    listen: SocketAddr,
    /// The one token accepted in `X-Vault-Token`.
    #[arg(long, env = "BEHAVRY_VAULT_STANDIN_TOKEN", hide_env_values = true)]
    token: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    behavry_service::init_logging();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let address = listener.local_addr()?;
    // Scripts wait for this exact line (and read the port from it) before sending requests.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "vault-standin listening on {address}")?;
    stdout.flush()?;
    behavry_vault_standin::serve(
        listener,
        Arc::new(StandinState::new(args.token)),
        behavry_service::shutdown_signal(),
    )
    .await
}
