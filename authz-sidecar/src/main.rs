//! `behavry-authz-sidecar`: the authz-sidecar process. Thin: parse flags, set up logging, load the
//! config, and hand over to [`behavry_authz::run`] until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use behavry_authz::config::{DEFAULT_CONFIG_FILE, ENV_CONFIG};
use behavry_authz::{Config, ProcessEnv};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Behavry authz-sidecar: Rego decisions, agent tokens and JWKS for Envoy.
#[derive(Debug, Parser)]
#[command(name = "behavry-authz-sidecar", version)]
struct Args {
    /// The TOML config file (relative paths inside it resolve against its folder).
    #[arg(long, env = ENV_CONFIG, default_value = DEFAULT_CONFIG_FILE)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let result = match Config::load(&args.config, &ProcessEnv) {
        Ok(config) => behavry_authz::run(&config, shutdown_signal()).await,
        Err(err) => Err(err.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("authz-sidecar cannot run: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes and `docker stop` send).
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
