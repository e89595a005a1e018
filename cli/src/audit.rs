//! `behavry audit ...`: checks of the audit-sink's log, exports, and its checkpoint key.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use behavry_audit::checkpoint::{NoteSigner, NoteVerifier};
use behavry_audit::export::{ExportError, ExportSummary, ExportVerifier};
use behavry_audit::{AuditStore, Failure, LogVerifier, Summary, VerifyOutcome, verify_database};

/// Where the log to verify is.
#[derive(Debug, Clone)]
pub enum Source {
    /// The sink's SQLite file (read-only).
    Db(PathBuf),
    /// An export file (`-` for standard input).
    Export(PathBuf),
    /// A running sink: its export is fetched whole.
    Url(String),
}

/// What `verify` holds the log to.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Verifier keys (`<name>+<id>+<key>`).
    pub keys: Vec<String>,
    /// Files holding verifier keys, one a line.
    pub key_files: Vec<PathBuf>,
    /// Checkpoint notes the verifier kept.
    pub checkpoints: Vec<PathBuf>,
    /// Check sequence, links, hashes, tree and checkpoints, not each body's form.
    pub quick: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

impl Trust {
    fn verifiers(&self) -> anyhow::Result<Vec<NoteVerifier>> {
        let mut keys = self.keys.clone();
        for path in &self.key_files {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read key file {}", path.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        keys.iter()
            .map(|key| {
                NoteVerifier::parse(key).with_context(|| format!("bad verifier key {key:?}"))
            })
            .collect()
    }

    fn kept(&self) -> anyhow::Result<Vec<String>> {
        self.checkpoints
            .iter()
            .map(|path| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read checkpoint {}", path.display()))
            })
            .collect()
    }
}

/// Verify the log at `source`: exit 0 when intact, 1 naming the first bad record, 2 when it
/// could not be checked.
pub fn verify(source: &Source, trust: &Trust) -> anyhow::Result<ExitCode> {
    let keys = trust.verifiers()?;
    if keys.is_empty() && !trust.checkpoints.is_empty() {
        bail!("a kept checkpoint is checked with the log's key: add --key or --key-file");
    }
    let mut log = LogVerifier::new(keys).hashes_only(trust.quick);
    let kept = trust.kept()?;
    let outcome = match source {
        Source::Db(db) => {
            for note in &kept {
                if let Err(failure) = log.keep(note) {
                    return Ok(report(Err(failure)));
                }
            }
            let outcome = runtime()?
                .block_on(verify_database(db, log))
                .with_context(|| format!("cannot verify {}", db.display()))?;
            match outcome {
                VerifyOutcome::Intact(summary) => Ok(summary),
                VerifyOutcome::Broken(failure) => Err(failure),
            }
        }
        Source::Export(path) => {
            let verifier = ExportVerifier::new(log, kept);
            let summary = if path.as_os_str() == "-" {
                verify_lines(verifier, std::io::stdin().lock())
            } else {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot open export {}", path.display()))?;
                verify_lines(verifier, BufReader::new(file))
            };
            export_outcome(summary)?
        }
        Source::Url(url) => {
            let verifier = ExportVerifier::new(log, kept);
            export_outcome(runtime()?.block_on(verify_remote(url, verifier))?)?
        }
    };
    Ok(report(outcome))
}

/// An export verification as a log outcome; what the export cannot prove is an error.
fn export_outcome(
    result: Result<ExportSummary, ExportError>,
) -> anyhow::Result<Result<Summary, Failure>> {
    match result {
        Ok(summary) => Ok(Ok(summary.log)),
        Err(ExportError::Failed(failure)) => Ok(Err(failure)),
        Err(ExportError::Unverifiable(why)) => bail!("cannot verify: {why}"),
    }
}

fn verify_lines(
    mut verifier: ExportVerifier,
    reader: impl BufRead,
) -> Result<ExportSummary, ExportError> {
    for line in reader.lines() {
        let line = line.map_err(|err| {
            ExportError::Unverifiable(behavry_audit::export::Unverifiable(format!(
                "cannot read the export: {err}"
            )))
        })?;
        verifier.line(&line)?;
    }
    verifier.finish()
}

/// Fetches `GET {url}/v1/log/export` and verifies it as it arrives.
async fn verify_remote(
    url: &str,
    mut verifier: ExportVerifier,
) -> anyhow::Result<Result<ExportSummary, ExportError>> {
    let endpoint = format!(
        "{}{}",
        url.trim_end_matches('/'),
        behavry_audit::api::EXPORT_PATH
    );
    let mut response = reqwest::get(&endpoint)
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("{endpoint} answered {status}: {body}");
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading {endpoint}"))?
    {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line));
            if let Err(err) = verifier.line(&text) {
                return Ok(Err(err));
            }
        }
    }
    if !pending.is_empty()
        && let Err(err) = verifier.line(&String::from_utf8_lossy(&pending))
    {
        return Ok(Err(err));
    }
    Ok(verifier.finish())
}

/// Prints the outcome's one line and gives the exit code.
fn report(outcome: Result<Summary, Failure>) -> ExitCode {
    println!("{}", describe(&outcome));
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The one line `verify` prints.
fn describe(outcome: &Result<Summary, Failure>) -> String {
    match outcome {
        Ok(summary) => {
            let checkpoints = match summary.newest_checkpoint {
                None => "no checkpoints".to_owned(),
                Some(newest) => format!(
                    "{} checkpoints (newest of size {newest}), signatures {}",
                    summary.checkpoints,
                    if summary.signatures_checked {
                        "verified"
                    } else {
                        "NOT checked (no --key)"
                    }
                ),
            };
            let range = if summary.first_seq > 1 {
                format!(" (seq {}..={})", summary.first_seq, summary.head.size)
            } else {
                String::new()
            };
            let quick = if summary.bodies_checked {
                ""
            } else {
                " (quick: bodies not read as events)"
            };
            format!(
                "ok: {} records{range}, head {}, root {}; {checkpoints}; {} kept checkpoints matched{quick}",
                summary.head.size + 1 - summary.first_seq,
                summary.head.head_hash_hex(),
                hex::encode(summary.root),
                summary.kept
            )
        }
        Err(Failure::Chain(broken)) => format!(
            "FAILED at record seq={} (event {}): {}",
            broken.seq, broken.event_id, broken.reason
        ),
        Err(failure) => match failure.first_seq() {
            Some(seq) => format!("FAILED at record seq={seq}: {failure}"),
            None => format!("FAILED: {failure}"),
        },
    }
}

/// Write the records `from..=to` of the log in `db` as an export to `output` (standard output
/// when `None`).
pub fn export(
    db: &Path,
    from: u64,
    to: Option<u64>,
    proofs: bool,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    runtime()?.block_on(async {
        let store = AuditStore::open_read_only(db)
            .await
            .with_context(|| format!("cannot open {}", db.display()))?;
        let (lines, mut receiver) = tokio::sync::mpsc::channel::<String>(256);
        let writer = async {
            while let Some(line) = receiver.recv().await {
                out.write_all(line.as_bytes())?;
            }
            out.flush()
        };
        let (exported, written) = tokio::join!(
            async {
                let result = store.export(from, to, proofs, &lines).await;
                drop(lines);
                result
            },
            writer
        );
        store.close().await;
        exported.context("export failed")?;
        written.context("cannot write the export")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Print the verifier key of the checkpoint key in `key` for the log named `origin`.
pub fn verifier_key(key: &Path, origin: &str) -> anyhow::Result<ExitCode> {
    let signer = NoteSigner::from_pem_file(origin, key).map_err(anyhow::Error::msg)?;
    println!("{}", signer.verifier_key());
    Ok(ExitCode::SUCCESS)
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
        let err = verify(&Source::Db(path.clone()), &Trust::default()).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("does not exist"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!path.exists());
    }

    #[test]
    fn output_lines() {
        let intact = Ok(Summary {
            head: ChainHead {
                size: 2,
                head_hash: [0xab; 32],
            },
            root: [0xcd; 32],
            checkpoints: 0,
            newest_checkpoint: None,
            kept: 0,
            signatures_checked: false,
            first_seq: 1,
            bodies_checked: true,
        });
        assert_eq!(
            describe(&intact),
            format!(
                "ok: 2 records, head {}, root {}; no checkpoints; 0 kept checkpoints matched",
                "ab".repeat(32),
                "cd".repeat(32)
            )
        );
        let broken = Err(Failure::Chain(ChainBreak {
            seq: 7,
            event_id: "e7".to_owned(),
            reason: BreakReason::SeqGap {
                expected: 6,
                found: 7,
            },
        }));
        assert_eq!(
            describe(&broken),
            "FAILED at record seq=7 (event e7): sequence gap: expected seq 6, found 7 (a record is missing)"
        );
        let truncated = Err(Failure::Truncated {
            holder: behavry_audit::verify::Holder::Kept,
            size: 9,
            log_size: 5,
        });
        assert_eq!(
            describe(&truncated),
            "FAILED at record seq=6: truncated tail: the kept checkpoint of size 9 covers records the log does not have; it ends at 5, records from seq=6 are missing"
        );
    }
}
