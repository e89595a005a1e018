//! The sink process: command-line/environment settings, listening, graceful shutdown.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::api::{AppState, app};
use crate::store::{AuditStore, StoreError};

/// Default listen address: loopback only, so exposing the sink is a deliberate choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9912";

/// Default database file, relative to the working directory.
pub const DEFAULT_DB: &str = "behavry-audit.db";

/// Settings of `behavry-audit-sink` (each flag also reads an environment variable).
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(
    name = "behavry-audit-sink",
    version,
    about = "Behavry audit-sink: durable, hash-chained audit log of MCP calls"
)]
pub struct SinkArgs {
    /// Address to listen on (default: 127.0.0.1:9912).
    #[arg(long, env = "BEHAVRY_AUDIT_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// SQLite database file; created with its schema when missing (default: behavry-audit.db).
    #[arg(long, env = "BEHAVRY_AUDIT_DB", default_value = DEFAULT_DB)]
    pub db: PathBuf,
}

/// Errors that stop the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Open the log, listen, print `audit-sink listening on ADDR` (the bound address, also logged) on
/// stdout, and serve until `shutdown` completes; then finish in-flight requests
/// (so no acknowledged batch is cut short) and close the database.
pub async fn run(
    args: &SinkArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SinkError> {
    let store = AuditStore::open(&args.db).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| SinkError::Bind {
            addr: args.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(SinkError::Serve)?;
    tracing::info!(db = %args.db.display(), "audit-sink listening on {local}");
    // Also on stdout, flushed, for scripts that wait for readiness and read the real port. Not
    // `println!`, which panics on a closed stdout; a failed write is ignored since the log says it.
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "audit-sink listening on {local}").and_then(|()| stdout.flush());
    }
    let served = axum::serve(
        listener,
        app(AppState {
            store: store.clone(),
        }),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    store.close().await;
    served.map_err(SinkError::Serve)?;
    tracing::info!("audit-sink stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_are_parsed() {
        let args = SinkArgs::try_parse_from([
            "behavry-audit-sink",
            "--listen",
            "127.0.0.1:0",
            "--db",
            "/tmp/x.db",
        ])
        .unwrap();
        assert_eq!(args.listen, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        assert_eq!(args.db, PathBuf::from("/tmp/x.db"));
    }

    #[test]
    fn bad_listen_address_names_the_flag() {
        let err =
            SinkArgs::try_parse_from(["behavry-audit-sink", "--listen", "localhost"]).unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");
    }

    #[tokio::test]
    async fn serves_until_shutdown_and_closes_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let args = SinkArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            db: dir.path().join("audit.db"),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let args = args.clone();
            async move {
                run(&args, async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(args.db.is_file());
    }
}
