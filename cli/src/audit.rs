//! `behavry audit ...`
use std::path::Path;
use std::process::ExitCode;

/// Verify the audit log in `db`; exit 0 when the chain is intact, 1 naming the first bad record.
pub fn verify(_db: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("audit verification is not built yet")
}
