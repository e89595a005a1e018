//! `behavry-audit-sink`: the audit-sink process. Thin: settings, logging, signals; the service is
//! in the `behavry_audit` library.

use std::process::ExitCode;

use behavry_audit::server::{self, SinkArgs};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    behavry_service::init_logging();
    let args = SinkArgs::parse();
    match server::run(&args, behavry_service::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("audit-sink failed: {err}");
            ExitCode::FAILURE
        }
    }
}
