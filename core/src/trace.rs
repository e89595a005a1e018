//! W3C Trace Context `traceparent` header (W3C Recommendation "Trace Context", §3.2).
//!
//! Behavry links the intent, decision and outcome events of one call by trace id. When the agent
//! sends a `traceparent`, the call joins the agent's trace; otherwise the filter starts one.
//!
//! Format (§3.2.2): `version "-" trace-id "-" parent-id "-" trace-flags`, all lowercase hex
//! (§3.2.2: "vendors MUST ... not parse ... uppercase"), version `00` is 55 characters long.
//! The all-zero trace-id and parent-id are invalid (§3.2.2.3, §3.2.2.4), and so is version `ff`
//! (§3.2.2.1). A higher version is parsed as §3.2.4 asks: the first four fields as for `00`, and
//! anything after them must start with `-`.

use std::fmt;

/// A parsed `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, not all zero: the caller's span.
    pub parent_id: String,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// Not `xx-<32 hex>-<16 hex>-xx` (wrong length, separators, or non-lowercase-hex digits).
    #[error("traceparent is malformed: expected 00-<32 hex>-<16 hex>-<2 hex> in lowercase")]
    Malformed,
    /// Version `ff` is forbidden (§3.2.2.1).
    #[error("traceparent version ff is invalid")]
    ForbiddenVersion,
    /// The trace id is all zeros (§3.2.2.3).
    #[error("traceparent trace-id must not be all zeros")]
    ZeroTraceId,
    /// The parent id is all zeros (§3.2.2.4).
    #[error("traceparent parent-id must not be all zeros")]
    ZeroParentId,
}

const SAMPLED: u8 = 0x01;

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

impl TraceParent {
    /// Parses a `traceparent` header value.
    pub fn parse(header: &str) -> Result<TraceParent, TraceParentError> {
        // Fixed layout of the first four fields (§3.2.2): 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55.
        let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) = (
            header.get(0..2),
            header.get(3..35),
            header.get(36..52),
            header.get(53..55),
        ) else {
            return Err(TraceParentError::Malformed);
        };
        let bytes = header.as_bytes();
        let separators_ok = [2, 35, 52].iter().all(|&i| bytes.get(i) == Some(&b'-'));
        if !separators_ok
            || ![version, trace_id, parent_id, flags]
                .iter()
                .all(|f| is_lower_hex(f))
        {
            return Err(TraceParentError::Malformed);
        }
        if version == "ff" {
            return Err(TraceParentError::ForbiddenVersion);
        }
        let rest = header.get(55..).unwrap_or_default();
        let rest_ok = if version == "00" {
            rest.is_empty()
        } else {
            rest.is_empty() || rest.starts_with('-')
        };
        if !rest_ok {
            return Err(TraceParentError::Malformed);
        }
        if is_zero(trace_id) {
            return Err(TraceParentError::ZeroTraceId);
        }
        if is_zero(parent_id) {
            return Err(TraceParentError::ZeroParentId);
        }
        let flags = u8::from_str_radix(flags, 16).map_err(|_| TraceParentError::Malformed)?;
        Ok(TraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags,
        })
    }

    /// Builds a version-00 `traceparent` from raw ids (e.g. fresh random bytes).
    pub fn from_bytes(
        trace_id: [u8; 16],
        parent_id: [u8; 8],
        flags: u8,
    ) -> Result<TraceParent, TraceParentError> {
        if trace_id == [0; 16] {
            return Err(TraceParentError::ZeroTraceId);
        }
        if parent_id == [0; 8] {
            return Err(TraceParentError::ZeroParentId);
        }
        Ok(TraceParent {
            trace_id: lower_hex(&trace_id),
            parent_id: lower_hex(&parent_id),
            flags,
        })
    }

    /// The same trace with a new parent (the span Behavry opens for the call), as sent upstream.
    pub fn with_parent_id(&self, parent_id: [u8; 8]) -> Result<TraceParent, TraceParentError> {
        if parent_id == [0; 8] {
            return Err(TraceParentError::ZeroParentId);
        }
        Ok(TraceParent {
            trace_id: self.trace_id.clone(),
            parent_id: lower_hex(&parent_id),
            flags: self.flags,
        })
    }

    /// Whether the caller sampled this trace (flag bit 0, §3.2.2.5.1).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

fn lower_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Formats as version 00: the version Behavry speaks, whatever version it parsed (§3.2.4: a
/// vendor that does not know a newer version sends the version it knows).
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The example from the W3C Trace Context specification, §3.2.2.
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example_and_formats_it_back() {
        let tp = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id, "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), EXAMPLE);
    }

    #[test]
    fn rejects_malformed_values() {
        let cases = [
            ("", TraceParentError::Malformed),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                TraceParentError::Malformed,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceParentError::Malformed,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                TraceParentError::Malformed,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::Malformed,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                TraceParentError::Malformed,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                TraceParentError::Malformed,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9é2b7-01",
                TraceParentError::Malformed,
            ),
            (
                " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::Malformed,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::ForbiddenVersion,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceParentError::ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceParentError::ZeroParentId,
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(TraceParent::parse(value), Err(expected), "{value:?}");
        }
    }

    #[test]
    fn future_versions_parse_their_known_prefix() {
        let tp =
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra")
                .unwrap();
        assert!(!tp.sampled());
        assert_eq!(
            tp.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        assert_eq!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00x"),
            Err(TraceParentError::Malformed)
        );
    }

    #[test]
    fn builds_from_bytes_and_changes_parent() {
        let tp = TraceParent::from_bytes([0xab; 16], [0x01; 8], 1).unwrap();
        assert_eq!(
            tp.to_string(),
            "00-abababababababababababababababab-0101010101010101-01"
        );
        let child = tp.with_parent_id([0xff; 8]).unwrap();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_eq!(child.parent_id, "ffffffffffffffff");
        assert_eq!(
            TraceParent::from_bytes([0; 16], [1; 8], 0),
            Err(TraceParentError::ZeroTraceId)
        );
        assert_eq!(
            tp.with_parent_id([0; 8]),
            Err(TraceParentError::ZeroParentId)
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = TraceParent::parse(&s);
        }

        #[test]
        fn valid_values_round_trip(trace in "[0-9a-f]{32}", parent in "[0-9a-f]{16}", flags in any::<u8>()) {
            let value = format!("00-{trace}-{parent}-{flags:02x}");
            match TraceParent::parse(&value) {
                Ok(tp) => prop_assert_eq!(tp.to_string(), value),
                Err(e) => prop_assert!(is_zero(&trace) || is_zero(&parent), "{e}"),
            }
        }
    }
}
