//! The audit log as NDJSON, with what it takes to verify it offline: every record's exact
//! canonical bytes and hashes, the signed checkpoints where the records reach their sizes, the
//! tree's frontier before a range that does not start at the first record, and RFC 9162 proofs
//! (a consistency proof to the first checkpoint past the range, and on request each record's
//! inclusion proof in the checkpoint that first covers it). See docs/audit.md "Export".
//!
//! ```text
//! {"type":"header","format":"behavry-audit-export/1","from":1,"to":3,"logSize":5}
//! {"type":"record","seq":1,"prevHash":"00…","hash":"…","body":"{\"agent\":…}"}
//! {"type":"checkpoint","note":"behavry.local/audit\n1\n…\n\n— behavry.local/audit …\n"}
//! …
//! {"type":"consistency","from":3,"to":5,"proof":["…"]}
//! {"type":"checkpoint","note":"…5…"}
//! ```

use std::collections::BTreeMap;

use behavry_core::merkle::{self, Frontier, Hash};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::{ChainHead, StoredRecord};
use crate::verify::{Failure, Holder, LogVerifier, Summary};

/// The `format` of an export's header.
pub const FORMAT: &str = "behavry-audit-export/1";

/// A record's inclusion proof in the checkpoint of `size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inclusion {
    /// The size of the checkpoint it leads to.
    pub size: u64,
    /// RFC 9162 §2.1.3.1 audit path, hex.
    pub proof: Vec<String>,
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum ExportLine {
    /// First line: the range and the log's size when exported.
    Header {
        /// [`FORMAT`].
        format: String,
        /// The first record's seq.
        from: u64,
        /// The last record's seq (`from - 1` for an empty range).
        to: u64,
        /// The log's size when exported.
        log_size: u64,
    },
    /// The records before the range: their chain head and tree frontier (only when `from > 1`).
    Prefix {
        /// `from - 1`.
        size: u64,
        /// Hex chain hash of record `size`.
        head_hash: String,
        /// Hex hashes of [`Frontier::ids`]`(size)`, largest subtree first.
        frontier: Vec<String>,
    },
    /// A record as stored.
    Record {
        /// Its seq.
        seq: u64,
        /// Hex hash of the previous record.
        prev_hash: String,
        /// Hex `SHA-256(prevHash || body)`.
        hash: String,
        /// The canonical body, exactly as hashed.
        body: String,
        /// Its inclusion proof, when asked for and a checkpoint covers it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inclusion: Option<Inclusion>,
    },
    /// A signed checkpoint, right after the record that reaches its size.
    Checkpoint {
        /// The signed note.
        note: String,
    },
    /// RFC 9162 §2.1.4.1 proof that the checkpoint on the next line extends the tree of the
    /// records so far (it lies past the range).
    Consistency {
        /// The records so far.
        from: u64,
        /// The next checkpoint's size.
        to: u64,
        /// Hex hashes.
        proof: Vec<String>,
    },
}

impl ExportLine {
    /// The line as NDJSON (with its newline).
    pub fn to_ndjson(&self) -> String {
        // A tagged enum of strings and numbers always serializes.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Hex of each hash.
pub fn hex_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// Why an export could not be checked at all (as opposed to a log that fails).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unverifiable(pub String);

/// Checks an export line by line in constant memory (except inclusion proofs waiting for their
/// checkpoint); see [`LogVerifier`] for what is checked.
#[derive(Debug)]
pub struct ExportVerifier {
    log: LogVerifier,
    kept: Vec<String>,
    header: Option<(u64, u64, u64)>,
    line: usize,
    /// A consistency proof waiting for the checkpoint after it: (to, proof).
    extension: Option<(u64, Vec<Hash>)>,
    /// Whether a checkpoint past the last record was read (nothing may follow).
    sealed: bool,
    /// Inclusion proofs waiting for their checkpoint, by its size: (seq, leaf, proof).
    inclusions: BTreeMap<u64, Vec<(u64, Hash, Vec<Hash>)>>,
    proofs_checked: u64,
}

/// A verified export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// What the log showed.
    pub log: Summary,
    /// The range's last seq and the log's size when exported.
    pub to: u64,
    /// The log's size when exported.
    pub log_size: u64,
    /// Inclusion proofs checked.
    pub inclusion_proofs: u64,
}

/// What stops an export's verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The log fails.
    #[error(transparent)]
    Failed(#[from] Failure),
    /// The export cannot prove what was asked.
    #[error(transparent)]
    Unverifiable(#[from] Unverifiable),
}

impl ExportVerifier {
    /// A verifier holding the export to `log`'s keys and to `kept` checkpoint notes.
    pub fn new(log: LogVerifier, kept: Vec<String>) -> ExportVerifier {
        ExportVerifier {
            log,
            kept,
            header: None,
            line: 0,
            extension: None,
            sealed: false,
            inclusions: BTreeMap::new(),
            proofs_checked: 0,
        }
    }

    fn malformed(&self, message: impl std::fmt::Display) -> ExportError {
        Failure::Malformed(format!("export line {}: {message}", self.line)).into()
    }

    /// Checks the next line (blank lines are skipped).
    pub fn line(&mut self, text: &str) -> Result<(), ExportError> {
        self.line += 1;
        if text.trim().is_empty() {
            return Ok(());
        }
        let line: ExportLine =
            serde_json::from_str(text).map_err(|err| self.malformed(format!("{err}")))?;
        if self.sealed {
            return Err(self.malformed("nothing may follow a checkpoint past the last record"));
        }
        match (line, self.header) {
            (
                ExportLine::Header {
                    format,
                    from,
                    to,
                    log_size,
                },
                None,
            ) => {
                if format != FORMAT {
                    return Err(
                        Unverifiable(format!("not a {FORMAT} export (format {format:?})")).into(),
                    );
                }
                if from == 0 || to.saturating_add(1) < from || to > log_size {
                    return Err(
                        self.malformed(format!("range {from}..={to} of a log of {log_size}"))
                    );
                }
                self.header = Some((from, to, log_size));
                if from == 1 {
                    self.hold_to_kept()?;
                }
                Ok(())
            }
            (_, None) | (ExportLine::Header { .. }, Some(_)) => {
                Err(self.malformed("the header must be the first line, and only it"))
            }
            (
                ExportLine::Prefix {
                    size,
                    head_hash,
                    frontier,
                },
                Some((from, _, _)),
            ) => {
                if size.checked_add(1) != Some(from) || self.log.size() != 0 {
                    return Err(self.malformed(
                        "the prefix must come right after the header and end before `from`",
                    ));
                }
                let head_hash = parse_hash(&head_hash).map_err(|m| self.malformed(m))?;
                let nodes = frontier
                    .iter()
                    .map(|h| parse_hash(h))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| self.malformed(m))?;
                let tree = Frontier::from_nodes(size, nodes)
                    .ok_or_else(|| self.malformed("the frontier does not fit the prefix's size"))?;
                self.log.resume(ChainHead { size, head_hash }, tree)?;
                self.hold_to_kept()
            }
            (
                ExportLine::Record {
                    seq,
                    prev_hash,
                    hash,
                    body,
                    inclusion,
                },
                Some((from, to, _)),
            ) => {
                if from > 1 && self.log.size() == 0 {
                    return Err(self.malformed("a range after the first record needs its prefix"));
                }
                if seq > to {
                    return Err(
                        self.malformed(format!("record {seq} is past the range's end {to}"))
                    );
                }
                let record = stored_record(seq, body, &prev_hash, &hash);
                let leaf = merkle::leaf_hash(&record.body);
                self.log.record(&record)?;
                if let Some(Inclusion { size, proof }) = inclusion {
                    let proof = proof
                        .iter()
                        .map(|h| parse_hash(h))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|m| self.malformed(m))?;
                    if size < seq {
                        return Err(self.malformed(format!(
                            "record {seq}'s inclusion proof is for a tree of {size}"
                        )));
                    }
                    self.inclusions
                        .entry(size)
                        .or_default()
                        .push((seq, leaf, proof));
                }
                Ok(())
            }
            (ExportLine::Consistency { from, to, proof }, Some(_)) => {
                if from != self.log.size() || to <= from || self.extension.is_some() {
                    return Err(self.malformed(format!(
                        "a consistency proof from {from} to {to} after record {}",
                        self.log.size()
                    )));
                }
                let proof = proof
                    .iter()
                    .map(|h| parse_hash(h))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| self.malformed(m))?;
                self.extension = Some((to, proof));
                Ok(())
            }
            (ExportLine::Checkpoint { note }, Some(_)) => {
                let checkpoint = match self.extension.take() {
                    // Inside the range: right after the record that reaches its size.
                    None => self.log.log_checkpoint(&note)?,
                    // Past the range: joined to the records by the proof before it.
                    Some((to, proof)) => {
                        let checkpoint = self.log.extending_checkpoint(&note, &proof)?;
                        if checkpoint.size != to {
                            return Err(self.malformed(format!(
                                "the consistency proof is to {to}, the checkpoint has size {}",
                                checkpoint.size
                            )));
                        }
                        self.sealed = true;
                        let log_size = self.header.map_or(0, |(_, _, log_size)| log_size);
                        if checkpoint.size > log_size {
                            // Signed over records the log says it never had.
                            return Err(Failure::Truncated {
                                holder: Holder::Log,
                                size: checkpoint.size,
                                log_size,
                            }
                            .into());
                        }
                        checkpoint
                    }
                };
                self.check_inclusions(checkpoint.size, &checkpoint.root)
            }
        }
    }

    /// Kept checkpoints are held to the records once the export's start is known; one it cannot
    /// reach is unverifiable with this export.
    fn hold_to_kept(&mut self) -> Result<(), ExportError> {
        let Some((from, to, log_size)) = self.header else {
            return Ok(());
        };
        for note in std::mem::take(&mut self.kept) {
            let checkpoint = self.log.open(Holder::Kept, &note, "given")?;
            if checkpoint.size + 1 < from || (checkpoint.size > to && to < log_size) {
                return Err(Unverifiable(format!(
                    "the kept checkpoint of size {} lies outside this export (records {from}..={to} of {log_size}); export a range that reaches it",
                    checkpoint.size
                ))
                .into());
            }
            self.log.keep(&note)?;
        }
        Ok(())
    }

    fn check_inclusions(&mut self, size: u64, root: &Hash) -> Result<(), ExportError> {
        for (seq, leaf, proof) in self.inclusions.remove(&size).unwrap_or_default() {
            if !merkle::verify_inclusion(&leaf, seq - 1, size, &proof, root) {
                return Err(Failure::Inclusion { seq, size }.into());
            }
            self.proofs_checked += 1;
        }
        Ok(())
    }

    /// Checks the end: every record of the range present, every inclusion proof met its
    /// checkpoint, and what [`LogVerifier::finish`] checks.
    pub fn finish(self) -> Result<ExportSummary, ExportError> {
        let Some((_, to, log_size)) = self.header else {
            return Err(Failure::Malformed("the export is empty: no header".into()).into());
        };
        if self.extension.is_some() {
            return Err(Failure::Malformed(
                "the export ends with a consistency proof and no checkpoint".into(),
            )
            .into());
        }
        if let Some((size, waiting)) = self.inclusions.iter().next() {
            let seq = waiting.first().map_or(0, |(seq, _, _)| *seq);
            return Err(Failure::Malformed(format!(
                "record {seq}'s inclusion proof is for a checkpoint of size {size} the export does not hold"
            ))
            .into());
        }
        let size = self.log.size();
        if size < to {
            // The header promised more records than came: the tail of the range was cut.
            return Err(Failure::RangeCut { to, size }.into());
        }
        let proofs = self.proofs_checked;
        let log = self.log.finish()?;
        Ok(ExportSummary {
            log,
            to,
            log_size,
            inclusion_proofs: proofs,
        })
    }
}

fn parse_hash(text: &str) -> Result<Hash, String> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| Hash::try_from(bytes).ok())
        .ok_or_else(|| format!("{text:?} is not 64 hex digits"))
}

/// A record as an export carries it; the columns a database indexes are taken from the body
/// (the chain check holds the body to them), hashes that do not parse are kept as found so the
/// chain check names the record.
fn stored_record(seq: u64, body: String, prev_hash: &str, hash: &str) -> StoredRecord {
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    StoredRecord {
        seq: i64::try_from(seq).unwrap_or(i64::MAX),
        event_id: text("eventId"),
        trace_id: text("traceId"),
        kind: text("kind"),
        time_ms: value
            .get("timeMs")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
        body: body.into_bytes(),
        prev_hash: hex::decode(prev_hash).unwrap_or_default(),
        hash: hex::decode(hash).unwrap_or_default(),
    }
}
