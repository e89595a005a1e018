//! Parsing of an ingestion batch: NDJSON, one [`AuditEvent`] a line, all or nothing.
//!
//! Pure code. Every line is parsed and checked before anything is stored, so a batch with one bad
//! line is refused whole and the sender can fix or drop it without a half-stored batch.

use behavry_core::wire::AuditEvent;

use crate::chain::{self, CanonicalError};

/// One event of a batch, ready to append.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestEvent {
    /// The event as received.
    pub event: AuditEvent,
    /// Its canonical bytes (the stored body, input to the chain hash).
    pub canonical: Vec<u8>,
    /// `time_ms` as stored (SQLite integers are signed 64-bit).
    pub time_ms: i64,
}

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A line is not an audit event (names the 1-based line number).
    #[error("line {line}: {message}")]
    BadLine {
        /// 1-based line number in the body, counting blank lines.
        line: usize,
        /// The serde error, or the rule that was broken.
        message: String,
    },
    /// An event could not be canonicalized.
    #[error("line {line}: {source}")]
    Canonical {
        /// 1-based line number.
        line: usize,
        /// Cause.
        source: CanonicalError,
    },
}

/// Whether `value` is a W3C trace id: 32 lowercase hex digits (W3C Trace Context §3.2.2.3), not
/// all zero.
pub fn is_trace_id(value: &str) -> bool {
    value.len() == 32
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && value.bytes().any(|b| b != b'0')
}

/// Parse an NDJSON batch. Blank lines (only whitespace) are ignored; `\r\n` endings are accepted.
pub fn parse_batch(body: &[u8]) -> Result<Vec<IngestEvent>, IngestError> {
    let mut events = Vec::new();
    for (index, raw_line) in body.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        if raw_line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let event: AuditEvent =
            serde_json::from_slice(raw_line).map_err(|err| IngestError::BadLine {
                line,
                message: err.to_string(),
            })?;
        let time_ms = check_event(&event).map_err(|message| IngestError::BadLine {
            line,
            message: message.to_owned(),
        })?;
        let canonical = chain::canonical_bytes(&event)
            .map_err(|source| IngestError::Canonical { line, source })?;
        events.push(IngestEvent {
            event,
            canonical,
            time_ms,
        });
    }
    Ok(events)
}

/// Rules serde cannot express; returns `time_ms` as stored.
fn check_event(event: &AuditEvent) -> Result<i64, &'static str> {
    if event.event_id.is_empty() {
        return Err("eventId must not be empty");
    }
    // Trace lookup only accepts well-formed trace ids, so an event with another would be stored
    // but unreachable.
    if !is_trace_id(&event.trace_id) {
        return Err("traceId must be 32 lowercase hex digits, not all zero");
    }
    // RFC 8785 §3.2.2.3 writes every number as a double: above 2^53 the stored body would no
    // longer hold this exact time.
    if event.time_ms > MAX_EXACT_INTEGER {
        return Err("timeMs must be at most 2^53 (RFC 8785 numbers are doubles)");
    }
    i64::try_from(event.time_ms).map_err(|_| "timeMs is out of range")
}

/// The largest integer every RFC 8785 number (an IEEE 754 double) holds exactly: 2^53.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::sample_event;
    use behavry_core::wire::AuditKind;

    #[test]
    fn blank_lines_and_crlf_are_accepted() {
        let first = serde_json::to_string(&sample_event(1, AuditKind::Intent)).unwrap();
        let second = serde_json::to_string(&sample_event(2, AuditKind::Outcome)).unwrap();
        let body = format!("\n{first}\r\n  \n{second}");
        let events = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].event.kind, AuditKind::Outcome);
        assert!(parse_batch(b"").unwrap().is_empty());
    }

    #[test]
    fn bad_line_is_named_by_number() {
        let good = serde_json::to_string(&sample_event(1, AuditKind::Intent)).unwrap();
        let body = format!("{good}\n\n{{\"eventId\":\"x\"}}\n{good}");
        match parse_batch(body.as_bytes()).unwrap_err() {
            IngestError::BadLine { line, message } => {
                assert_eq!(line, 3);
                assert!(message.contains("missing field"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_field_and_bad_trace_id_are_refused() {
        let mut value = serde_json::to_value(sample_event(1, AuditKind::Intent)).unwrap();
        value["extra"] = serde_json::json!(1);
        let err = parse_batch(value.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");

        let mut event = sample_event(1, AuditKind::Intent);
        event.trace_id = "ABC".to_owned();
        let err = parse_batch(serde_json::to_string(&event).unwrap().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("traceId"), "{err}");
    }

    #[test]
    fn time_beyond_two_to_the_53_is_refused() {
        let mut event = sample_event(1, AuditKind::Intent);
        event.time_ms = MAX_EXACT_INTEGER;
        let stored = parse_batch(serde_json::to_string(&event).unwrap().as_bytes()).unwrap();
        assert_eq!(stored[0].time_ms, 9_007_199_254_740_992);
        event.time_ms = MAX_EXACT_INTEGER + 1;
        let err = parse_batch(serde_json::to_string(&event).unwrap().as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("timeMs must be at most 2^53"),
            "{err}"
        );
    }

    #[test]
    fn trace_id_shape() {
        assert!(is_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!is_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736"));
        assert!(!is_trace_id("00000000000000000000000000000000"));
        assert!(!is_trace_id("4bf92f3577b34da6a3ce929d0e0e473"));
        assert!(!is_trace_id("4bf92f3577b34da6a3ce929d0e0e473g"));
    }
}
