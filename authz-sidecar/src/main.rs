//! `behavry-authz-sidecar`: the authz-sidecar process. Thin: parse flags, set up logging, load the
//! config, and hand over to [`behavry_authz::run`] until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use behavry_authz::config::{DEFAULT_CONFIG_FILE, ENV_CONFIG};
use behavry_authz::{Config, ProcessEnv};
use clap::Parser;

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
    behavry_service::init_logging();
    let result = match Config::load(&args.config, &ProcessEnv) {
        Ok(config) => behavry_authz::run(&config, behavry_service::shutdown_signal()).await,
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
