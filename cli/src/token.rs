//! `behavry token ...`
use std::path::Path;
use std::process::ExitCode;

/// Mint a token for `agent` with the key and issuer of the authz-sidecar config at `config`.
pub fn mint(_agent: &str, _config: &Path, _ttl: Option<u64>) -> anyhow::Result<ExitCode> {
    anyhow::bail!("token minting is not built yet")
}
