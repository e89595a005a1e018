//! Scanning and redacting JSON documents string by string.
//!
//! serde_json has already decoded escapes (`\u0041`, surrogate pairs), so a secret written with
//! escapes is found like any other; each finding is named by the RFC 6901 pointer of the string
//! that holds it. Object member names are context (a value under `"password"` is judged as a
//! password) but are not themselves scanned or redacted.

use super::{DetectorRef, Finding, Scanner};
use serde_json::Value;

/// A finding inside a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFinding {
    /// RFC 6901 pointer of the string that holds it (`""` for a document that is one string).
    pub pointer: String,
    /// Which detector found it.
    pub detector: DetectorRef,
    /// Byte offsets into the decoded string.
    pub start: usize,
    /// End of the span (exclusive).
    pub end: usize,
}

/// Every finding in `doc`, in document order.
pub fn scan_json(scanner: &Scanner, doc: &Value) -> Vec<JsonFinding> {
    let mut out = Vec::new();
    let mut pointer = String::new();
    walk(scanner, doc, None, &mut pointer, &mut out);
    out
}

fn walk(
    scanner: &Scanner,
    value: &Value,
    name: Option<&str>,
    pointer: &mut String,
    out: &mut Vec<JsonFinding>,
) {
    match value {
        Value::String(s) => {
            let found = match name {
                Some(name) => scanner.scan_field(name, s),
                None => scanner.scan_text(s),
            };
            out.extend(found.into_iter().map(|f: Finding| JsonFinding {
                pointer: pointer.clone(),
                detector: f.detector,
                start: f.start,
                end: f.end,
            }));
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&index.to_string());
                // An array element keeps its parent's name: `"tokens": ["…", "…"]`.
                walk(scanner, item, name, pointer, out);
                pointer.truncate(len);
            }
        }
        Value::Object(members) => {
            for (key, member) in members {
                let len = pointer.len();
                crate::pointer::push_segment(pointer, key);
                walk(scanner, member, Some(key), pointer, out);
                pointer.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Replaces every finding's span with `[REDACTED:<detector id>]`. Findings must come from
/// [`scan_json`] on this same document; one whose pointer or span no longer fits is skipped.
/// Returns how many spans were replaced.
pub fn redact_json(scanner: &Scanner, doc: &mut Value, findings: &[JsonFinding]) -> usize {
    let mut replaced = 0;
    let mut by_pointer: Vec<&JsonFinding> = findings.iter().collect();
    // Same string together, last span first, so earlier offsets stay valid while replacing.
    by_pointer.sort_by(|a, b| a.pointer.cmp(&b.pointer).then(b.start.cmp(&a.start)));
    for finding in by_pointer {
        let Some(Value::String(s)) = doc.pointer_mut(&finding.pointer) else {
            continue;
        };
        let Some(id) = scanner.detector(finding.detector).map(|d| d.id.as_str()) else {
            continue;
        };
        if finding.start <= finding.end && s.get(finding.start..finding.end).is_some() {
            s.replace_range(finding.start..finding.end, &format!("[REDACTED:{id}]"));
            replaced += 1;
        }
    }
    replaced
}
