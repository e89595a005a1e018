//! The hash chain: canonical event bytes, the chain hash, and verification over stored records.
//!
//! Pure code, no I/O: the sink uses it when appending, and `behavry audit verify` uses it offline
//! over the rows of a database file.
//!
//! Definition (see `docs/audit.md`):
//!
//! ```text
//! canonical(e) = RFC 8785 (JCS) bytes of e's JSON
//! hash(1)      = SHA-256(0x00 * 32     || canonical(e1))
//! hash(n)      = SHA-256(hash(n - 1)   || canonical(en))
//! ```
//!
//! Any change to a stored body, hash, order, or the removal or insertion of a record in the middle
//! of the log breaks the equation at the first altered record, and [`ChainVerifier`] names it.
//! Truncation of the tail (or a rewrite of the whole tail) is only detectable against a head
//! recorded elsewhere; signed checkpoints will provide that.

use behavry_core::wire::AuditEvent;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Length in bytes of a chain hash (SHA-256).
pub const HASH_LEN: usize = 32;

/// A chain hash.
pub type ChainHash = [u8; HASH_LEN];

/// `prevHash` of the first record: 32 zero bytes.
pub const GENESIS_PREV_HASH: ChainHash = [0; HASH_LEN];

/// Errors of canonicalization.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// The value could not be turned into JSON (never expected for [`AuditEvent`]).
    #[error("event cannot be serialized as JSON: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The canonical bytes of an event: the JSON Canonicalization Scheme (RFC 8785) form of its JSON
/// ([`behavry_core::jcs`]): members sorted by UTF-16 code units, no whitespace, strings and
/// numbers written as ECMAScript writes them. An integer beyond 2^53 in the arguments becomes the
/// nearest double, as RFC 8785 §3.2.2.3 reads every number; `timeMs` is refused above 2^53 at
/// ingestion so that it survives exactly.
pub fn canonical_bytes(event: &AuditEvent) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(event)?;
    Ok(canonical_value_bytes(&value))
}

/// The canonical bytes of any JSON value (see [`canonical_bytes`]).
pub fn canonical_value_bytes(value: &Value) -> Vec<u8> {
    behavry_core::jcs::canonical_json(value).into_bytes()
}

/// `SHA-256(prev_hash || canonical)`: the hash of one record given the previous record's hash.
pub fn chain_hash(prev_hash: &ChainHash, canonical: &[u8]) -> ChainHash {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical);
    hasher.finalize().into()
}

/// One record as stored, with every column taken as found (hashes may have any length, so that a
/// tampered row is reported rather than refused on load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Position in the log, 1-based, gapless.
    pub seq: i64,
    /// `eventId` column.
    pub event_id: String,
    /// `traceId` column (indexed for trace lookup).
    pub trace_id: String,
    /// Event kind column (`intent`, `decision`, `outcome`).
    pub kind: String,
    /// `timeMs` column.
    pub time_ms: i64,
    /// Canonical body bytes.
    pub body: Vec<u8>,
    /// The previous record's hash (32 zero bytes for the first).
    pub prev_hash: Vec<u8>,
    /// `SHA-256(prev_hash || body)`.
    pub hash: Vec<u8>,
}

/// Size and head of an intact chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Number of records.
    pub size: u64,
    /// Hash of the last record, or [`GENESIS_PREV_HASH`] for an empty log.
    pub head_hash: ChainHash,
}

impl ChainHead {
    /// The head hash as lowercase hex (64 zeros for an empty log).
    pub fn head_hash_hex(&self) -> String {
        hex::encode(self.head_hash)
    }
}

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakReason {
    /// A record is missing before this one (deleted), or the log does not start at 1.
    #[error("sequence gap: expected seq {expected}, found {found} (a record is missing)")]
    SeqGap {
        /// The seq that should come next.
        expected: u64,
        /// The seq found.
        found: i64,
    },
    /// The record links to a different predecessor than the one before it (reordered or inserted
    /// records, or a deleted record with the sequence renumbered).
    #[error(
        "prevHash {found} does not match the previous record's hash {expected} (records reordered, inserted or removed)"
    )]
    PrevHashMismatch {
        /// Hex of the previous record's hash.
        expected: String,
        /// Hex of the stored `prevHash`.
        found: String,
    },
    /// The stored hash is not `SHA-256(prevHash || body)`: the body or the hash was altered.
    #[error(
        "stored hash {stored} does not match SHA-256(prevHash || body) = {computed} (body or hash altered)"
    )]
    HashMismatch {
        /// Hex of the stored hash.
        stored: String,
        /// Hex of the recomputed hash.
        computed: String,
    },
    /// The stored body is not JSON.
    #[error("body is not valid JSON: {0}")]
    BodyNotJson(String),
    /// The stored body is JSON but not in canonical form.
    #[error("body is not in canonical form (re-canonicalized bytes differ)")]
    BodyNotCanonical,
    /// The stored body is not an audit event.
    #[error("body is not an audit event: {0}")]
    BodyNotEvent(String),
    /// An indexed column disagrees with the body it was taken from.
    #[error("column {column} is {column_value:?} but the body says {body_value:?}")]
    ColumnMismatch {
        /// Column name.
        column: &'static str,
        /// What the column holds.
        column_value: String,
        /// What the body holds.
        body_value: String,
    },
}

/// The first bad record found by verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record seq={seq} (event {event_id}): {reason}")]
pub struct ChainBreak {
    /// Stored seq of the bad record.
    pub seq: i64,
    /// Stored event id of the bad record.
    pub event_id: String,
    /// What is wrong.
    pub reason: BreakReason,
}

/// Checks records one by one, in seq order, so that a log of any size verifies in constant memory.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    size: u64,
    head_hash: ChainHash,
    /// Whether each body is read again as an event (canonical form, columns); see
    /// [`ChainVerifier::hashes_only`].
    bodies: bool,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// A verifier expecting the first record (seq 1).
    pub fn new() -> Self {
        Self {
            size: 0,
            head_hash: GENESIS_PREV_HASH,
            bodies: true,
        }
    }

    /// A verifier expecting the record after `head` (whose records were checked elsewhere).
    pub fn resume(head: ChainHead) -> Self {
        Self {
            size: head.size,
            head_hash: head.head_hash,
            bodies: true,
        }
    }

    /// Checks sequence, links and hashes only, not each body's form (canonical JSON, an event,
    /// columns that match): what makes tampering evident, at a fraction of the cost. A body a
    /// writer got wrong then goes unnoticed; an edited one does not (its hash changes).
    pub fn hashes_only(mut self, hashes_only: bool) -> Self {
        self.bodies = !hashes_only;
        self
    }

    /// Check the next record; on success it becomes the head.
    pub fn check(&mut self, record: &StoredRecord) -> Result<(), ChainBreak> {
        self.check_reason(record).map_err(|reason| ChainBreak {
            seq: record.seq,
            event_id: record.event_id.clone(),
            reason,
        })
    }

    fn check_reason(&mut self, record: &StoredRecord) -> Result<(), BreakReason> {
        let expected_seq = self.size + 1;
        if u64::try_from(record.seq).ok() != Some(expected_seq) {
            return Err(BreakReason::SeqGap {
                expected: expected_seq,
                found: record.seq,
            });
        }
        if record.prev_hash.as_slice() != self.head_hash.as_slice() {
            return Err(BreakReason::PrevHashMismatch {
                expected: hex::encode(self.head_hash),
                found: hex::encode(&record.prev_hash),
            });
        }
        let computed = chain_hash(&self.head_hash, &record.body);
        if record.hash.as_slice() != computed.as_slice() {
            return Err(BreakReason::HashMismatch {
                stored: hex::encode(&record.hash),
                computed: hex::encode(computed),
            });
        }
        if !self.bodies {
            self.size = expected_seq;
            self.head_hash = computed;
            return Ok(());
        }
        // The hash covers the body, so past this point a bad body means a bad writer, not an
        // edit; still report it, since the sink promises canonical bodies and true columns.
        let value: Value = serde_json::from_slice(&record.body)
            .map_err(|err| BreakReason::BodyNotJson(err.to_string()))?;
        let recanonical = canonical_value_bytes(&value);
        if recanonical != record.body {
            return Err(BreakReason::BodyNotCanonical);
        }
        let event = AuditEvent::deserialize(&value)
            .map_err(|err| BreakReason::BodyNotEvent(err.to_string()))?;
        check_column("event_id", &record.event_id, &event.event_id)?;
        check_column("trace_id", &record.trace_id, &event.trace_id)?;
        check_column("kind", &record.kind, event.kind.as_str())?;
        if u64::try_from(record.time_ms).ok() != Some(event.time_ms) {
            return Err(BreakReason::ColumnMismatch {
                column: "time_ms",
                column_value: record.time_ms.to_string(),
                body_value: event.time_ms.to_string(),
            });
        }
        self.size = expected_seq;
        self.head_hash = computed;
        Ok(())
    }

    /// Size and head hash of the records checked so far.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            size: self.size,
            head_hash: self.head_hash,
        }
    }
}

fn check_column(
    column: &'static str,
    column_value: &str,
    body_value: &str,
) -> Result<(), BreakReason> {
    if column_value == body_value {
        Ok(())
    } else {
        Err(BreakReason::ColumnMismatch {
            column,
            column_value: column_value.to_owned(),
            body_value: body_value.to_owned(),
        })
    }
}

/// Verify a whole sequence of records, in seq order.
pub fn verify_chain<'a>(
    records: impl IntoIterator<Item = &'a StoredRecord>,
) -> Result<ChainHead, ChainBreak> {
    let mut verifier = ChainVerifier::new();
    for record in records {
        verifier.check(record)?;
    }
    Ok(verifier.head())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use behavry_core::wire::{AuditKind, RequestFacts};
    use serde_json::json;

    pub(crate) fn sample_event(trace: u8, kind: AuditKind) -> AuditEvent {
        let trace_id = format!("{trace:032x}");
        AuditEvent {
            event_id: format!("{trace_id}-00f067aa0ba902b7-{}", kind.as_str()),
            trace_id,
            span_id: "00f067aa0ba902b7".to_owned(),
            parent_span_id: None,
            kind,
            time_ms: 1_760_000_000_000 + u64::from(trace),
            agent: Some("agent-a".to_owned()),
            delegation: Vec::new(),
            request: RequestFacts {
                server: "files".to_owned(),
                method: "tools/call".to_owned(),
                tool: Some("read_file".to_owned()),
                arguments: Some(json!({"path": "/tmp/x", "a": [1, 2.5, null]})),
                ..RequestFacts::default()
            },
            detail: json!({"zeta": 1, "alpha": {"y": true, "b": "é\"\n"}}),
        }
    }

    fn build_chain(events: &[AuditEvent]) -> Vec<StoredRecord> {
        let mut prev = GENESIS_PREV_HASH;
        let mut records = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let body = canonical_bytes(event).unwrap();
            let hash = chain_hash(&prev, &body);
            records.push(StoredRecord {
                seq: i64::try_from(index).unwrap() + 1,
                event_id: event.event_id.clone(),
                trace_id: event.trace_id.clone(),
                kind: event.kind.as_str().to_owned(),
                time_ms: i64::try_from(event.time_ms).unwrap(),
                body,
                prev_hash: prev.to_vec(),
                hash: hash.to_vec(),
            });
            prev = hash;
        }
        records
    }

    #[test]
    fn canonical_bytes_sort_keys_at_every_depth_without_whitespace() {
        let value = json!({"b": 1, "a": {"d": [ {"z": 0, "y": 1} ], "c": "x"}});
        let bytes = canonical_value_bytes(&value);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"a":{"c":"x","d":[{"y":1,"z":0}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_bytes_are_rfc_8785() {
        // Members by UTF-16 code units (U+1F600 before U+FB33), numbers as ECMAScript writes
        // doubles, an integer beyond 2^53 as the nearest double.
        let value: Value = serde_json::from_str(
            r#"{"\ufb33":1.0,"\ud83d\ude00":1e21,"n":[9007199254740993,0.000001,-0.0]}"#,
        )
        .unwrap();
        let bytes = canonical_value_bytes(&value);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "{\"n\":[9007199254740992,0.000001,0],\"\u{1f600}\":1e+21,\"\u{fb33}\":1}"
        );
        let reparsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(canonical_value_bytes(&reparsed), bytes);
    }

    #[test]
    fn canonical_bytes_are_a_fixed_point() {
        let event = sample_event(7, AuditKind::Decision);
        let bytes = canonical_bytes(&event).unwrap();
        let reparsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(canonical_value_bytes(&reparsed), bytes);
        let back: AuditEvent = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn chain_hash_is_sha256_of_prev_then_body() {
        // SHA-256 of 32 zero bytes followed by "{}", computed independently with `sha256sum`.
        let hash = chain_hash(&GENESIS_PREV_HASH, b"{}");
        assert_eq!(
            hex::encode(hash),
            "fb1634c4e6cd4b1f1afe3ce2d6ef080f7ac5d1f357d723ad4dfca782733b62db"
        );
    }

    #[test]
    fn intact_chain_verifies_with_its_head() {
        let events: Vec<_> = (1..=3)
            .map(|t| sample_event(t, AuditKind::Intent))
            .collect();
        let records = build_chain(&events);
        let head = verify_chain(&records).unwrap();
        assert_eq!(head.size, 3);
        assert_eq!(head.head_hash.as_slice(), records[2].hash.as_slice());
        assert_eq!(verify_chain(&[]).unwrap().head_hash, GENESIS_PREV_HASH);
    }

    #[test]
    fn column_that_disagrees_with_body_is_named() {
        let events: Vec<_> = (1..=2)
            .map(|t| sample_event(t, AuditKind::Intent))
            .collect();
        let mut records = build_chain(&events);
        records[1].trace_id = "f".repeat(32);
        let broken = verify_chain(&records).unwrap_err();
        assert_eq!(broken.seq, 2);
        assert!(matches!(
            broken.reason,
            BreakReason::ColumnMismatch {
                column: "trace_id",
                ..
            }
        ));
    }

    #[test]
    fn non_canonical_body_with_matching_hash_is_reported() {
        let events = [sample_event(1, AuditKind::Outcome)];
        let mut records = build_chain(&events);
        let mut pretty = serde_json::to_vec_pretty(&events[0]).unwrap();
        pretty.push(b'\n');
        records[0].hash = chain_hash(&GENESIS_PREV_HASH, &pretty).to_vec();
        records[0].body = pretty;
        let broken = verify_chain(&records).unwrap_err();
        assert_eq!(broken.reason, BreakReason::BodyNotCanonical);
        // Checking hashes only, the writer's slip goes unseen; an edit would not.
        let mut quick = ChainVerifier::new().hashes_only(true);
        assert!(quick.check(&records[0]).is_ok());
        let mut edited = records[0].clone();
        edited.body[3] ^= 1;
        let mut quick = ChainVerifier::new().hashes_only(true);
        assert!(matches!(
            quick.check(&edited).unwrap_err().reason,
            BreakReason::HashMismatch { .. }
        ));
    }

    #[test]
    fn log_not_starting_at_one_is_a_gap() {
        let events = [sample_event(1, AuditKind::Intent)];
        let mut records = build_chain(&events);
        records[0].seq = 2;
        let broken = verify_chain(&records).unwrap_err();
        assert_eq!(
            broken.reason,
            BreakReason::SeqGap {
                expected: 1,
                found: 2
            }
        );
    }
}
