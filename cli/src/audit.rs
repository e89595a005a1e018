//! `behavry audit ...`: offline checks of the audit-sink's log.
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use behavry_audit::{VerifyOutcome, verify_database};

/// Verify the audit log in `db`; exit 0 when the chain is intact, 1 naming the first bad record.
///
/// The file is opened read-only and never created; it may be verified while the sink runs (the
/// check reads one consistent snapshot).
pub fn verify(db: &Path) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime
        .block_on(verify_database(db))
        .with_context(|| format!("cannot verify {}", db.display()))?;
    println!("{}", describe(&outcome));
    Ok(match outcome {
        VerifyOutcome::Intact(_) => ExitCode::SUCCESS,
        VerifyOutcome::Broken(_) => ExitCode::from(1),
    })
}

/// The one line `verify` prints.
fn describe(outcome: &VerifyOutcome) -> String {
    match outcome {
        VerifyOutcome::Intact(head) => {
            format!("ok: {} records, head {}", head.size, head.head_hash_hex())
        }
        VerifyOutcome::Broken(broken) => format!(
            "FAILED at record seq={} (event {}): {}",
            broken.seq, broken.event_id, broken.reason
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use behavry_audit::{BreakReason, ChainBreak, ChainHead};

    #[test]
    fn missing_database_is_an_error_and_is_not_created() {
        let path = std::env::temp_dir().join(format!(
            "behavry-audit-verify-missing-{}.db",
            std::process::id()
        ));
        let err = verify(&path).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("does not exist"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!path.exists());
    }

    #[test]
    fn output_lines() {
        let intact = VerifyOutcome::Intact(ChainHead {
            size: 2,
            head_hash: [0xab; 32],
        });
        assert_eq!(
            describe(&intact),
            format!("ok: 2 records, head {}", "ab".repeat(32))
        );
        let broken = VerifyOutcome::Broken(ChainBreak {
            seq: 7,
            event_id: "e7".to_owned(),
            reason: BreakReason::SeqGap {
                expected: 6,
                found: 7,
            },
        });
        assert_eq!(
            describe(&broken),
            "FAILED at record seq=7 (event e7): sequence gap: expected seq 6, found 7 (a record is missing)"
        );
    }
}
