//! The sink process: command-line/environment settings, listening, graceful shutdown.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{AppState, app};
use crate::checkpoint::NoteSigner;
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
    /// Ed25519 private key (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`) that signs the
    /// log's checkpoints; none are signed without it.
    #[arg(long, env = "BEHAVRY_AUDIT_CHECKPOINT_KEY")]
    pub checkpoint_key: Option<PathBuf>,
    /// The log's name in its checkpoints and the key's name in their signatures (unique per log;
    /// no spaces or `+`).
    #[arg(long, env = "BEHAVRY_AUDIT_ORIGIN", default_value = DEFAULT_ORIGIN)]
    pub origin: String,
    /// A checkpoint is signed once this many records were appended since the last one...
    #[arg(long, env = "BEHAVRY_AUDIT_CHECKPOINT_EVERY", default_value_t = 1000)]
    pub checkpoint_every: u64,
    /// ... or this many milliseconds passed with records appended since.
    #[arg(
        long,
        env = "BEHAVRY_AUDIT_CHECKPOINT_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub checkpoint_interval_ms: u64,
}

/// Default origin of the log's checkpoints.
pub const DEFAULT_ORIGIN: &str = "behavry.local/audit";

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
    /// The checkpoint key or origin is unusable.
    #[error("checkpoint signing: {0}")]
    CheckpointKey(String),
}

/// The signer of `--checkpoint-key`, if given.
fn checkpoint_signer(args: &SinkArgs) -> Result<Option<NoteSigner>, SinkError> {
    let Some(path) = &args.checkpoint_key else {
        return Ok(None);
    };
    NoteSigner::from_pem_file(&args.origin, path)
        .map(Some)
        .map_err(SinkError::CheckpointKey)
}

/// Signs checkpoints for as long as the sink runs: after `every` records or `interval` with
/// records appended, whichever comes first (checked each second or each interval, the shorter).
async fn sign_checkpoints(
    store: AuditStore,
    signer: NoteSigner,
    origin: String,
    every: u64,
    interval: Duration,
) {
    let tick = interval
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(10));
    let mut last_signed = std::time::Instant::now();
    let mut signed_size = 0u64;
    loop {
        tokio::time::sleep(tick).await;
        let size = match store.head().await {
            Ok(head) => head.size,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the log's size for a checkpoint");
                continue;
            }
        };
        let due = size > signed_size
            && (size - signed_size >= every.max(1) || last_signed.elapsed() >= interval);
        if !due {
            continue;
        }
        match store.sign_checkpoint(&signer, &origin).await {
            Ok(Some(checkpoint)) => {
                tracing::info!(size = checkpoint.size, "checkpoint signed");
                signed_size = checkpoint.size;
                last_signed = std::time::Instant::now();
            }
            Ok(None) => signed_size = size,
            Err(err) => tracing::error!(error = %err, "checkpoint not signed"),
        }
    }
}

/// Open the log, listen, print `audit-sink listening on ADDR` (the bound address, also logged) on
/// stdout, and serve until `shutdown` completes; then finish in-flight requests
/// (so no acknowledged batch is cut short) and close the database.
pub async fn run(
    args: &SinkArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SinkError> {
    let signer = checkpoint_signer(args)?;
    let store = AuditStore::open(&args.db).await?;
    let signing = signer.map(|signer| {
        tokio::spawn(sign_checkpoints(
            store.clone(),
            signer,
            args.origin.clone(),
            args.checkpoint_every,
            Duration::from_millis(args.checkpoint_interval_ms),
        ))
    });
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
    let served = axum::serve(listener, app(AppState::new(store.clone())))
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(signing) = signing {
        signing.abort();
    }
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

    #[test]
    fn a_bad_checkpoint_key_or_origin_stops_the_sink_with_a_reason() {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("log.key");
        let args = |path: &std::path::Path, origin: &str| SinkArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            db: dir.path().join("audit.db"),
            checkpoint_key: Some(path.to_owned()),
            origin: origin.into(),
            checkpoint_every: 1,
            checkpoint_interval_ms: 10,
        };
        let missing = checkpoint_signer(&args(&key, DEFAULT_ORIGIN)).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        std::fs::write(&key, "not a key").unwrap();
        let garbage = checkpoint_signer(&args(&key, DEFAULT_ORIGIN)).unwrap_err();
        assert!(
            garbage.to_string().contains("not an Ed25519 PKCS#8 key"),
            "{garbage}"
        );
        let pem = ed25519_dalek::SigningKey::from_bytes(&[3; 32])
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        std::fs::write(&key, pem.as_bytes()).unwrap();
        let spaced = checkpoint_signer(&args(&key, "my log")).unwrap_err();
        assert!(spaced.to_string().contains("--origin"), "{spaced}");
        assert!(
            checkpoint_signer(&args(&key, DEFAULT_ORIGIN))
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn the_sink_signs_a_checkpoint_once_records_arrive() {
        use crate::checkpoint::NoteVerifier;
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let signer = NoteSigner::new(DEFAULT_ORIGIN, key.clone()).unwrap();
        let verifier = NoteVerifier::parse(&signer.verifier_key()).unwrap();
        let task = tokio::spawn(sign_checkpoints(
            store.clone(),
            signer,
            DEFAULT_ORIGIN.into(),
            2,
            Duration::from_millis(20),
        ));
        let events: Vec<_> = (1..=3)
            .map(|t| crate::chain::tests::sample_event(t, behavry_core::wire::AuditKind::Intent))
            .collect();
        let body: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        store
            .append_batch(&crate::ingest::parse_batch(body.as_bytes()).unwrap())
            .await
            .unwrap();
        // Bounded wait for the task's next round (it signs within one tick).
        let mut note = None;
        for _ in 0..500 {
            note = store.latest_checkpoint().await.unwrap();
            if note.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let checkpoint = verifier
            .open_checkpoint(&note.expect("a checkpoint"))
            .unwrap();
        assert_eq!(
            (checkpoint.origin.as_str(), checkpoint.size),
            (DEFAULT_ORIGIN, 3)
        );
        assert_eq!(Some(checkpoint.root), store.tree_head(3).await.unwrap());
    }

    #[tokio::test]
    async fn serves_until_shutdown_and_closes_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let args = SinkArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            db: dir.path().join("audit.db"),
            checkpoint_key: None,
            origin: DEFAULT_ORIGIN.into(),
            checkpoint_every: 1000,
            checkpoint_interval_ms: 10_000,
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
