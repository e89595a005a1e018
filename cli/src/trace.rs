//! `behavry trace <id>` and `behavry traces`: Decision Traces from the audit-sink, rendered as
//! trees in the terminal with each record's proof status.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use behavry_audit::api::{SearchResponse, TraceEntry, TraceResponse};
use behavry_audit::chain::canonical_bytes;
use behavry_audit::checkpoint::{Checkpoint, NoteVerifier, unverified_checkpoint};
use behavry_core::merkle;
use serde_json::Value;

/// Search filters of `behavry traces`, as the sink's `GET /v1/traces` takes them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filters {
    /// The agent (token subject).
    #[arg(long)]
    pub agent: Option<String>,
    /// The upstream server's name.
    #[arg(long)]
    pub server: Option<String>,
    /// The tool, prompt name or resource URI.
    #[arg(long)]
    pub tool: Option<String>,
    /// The MCP session id.
    #[arg(long)]
    pub session: Option<String>,
    /// `allow` or `deny`.
    #[arg(long)]
    pub decision: Option<String>,
    /// From this time: milliseconds since the epoch, or an age (`30m`, `2h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (same forms).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many traces (1 to 500, default 50).
    #[arg(long)]
    pub limit: Option<u32>,
    /// The next page, as the previous one printed.
    #[arg(long)]
    pub before: Option<u64>,
}

fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let response = reqwest::get(url)
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("reading {url}"))?;
        if !status.is_success() {
            bail!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body).with_context(|| format!("{url} did not answer as expected"))
    })
}

/// `30m`, `2h`, `7d`, `45s` before `now_ms`, or milliseconds since the epoch as they are.
fn time_ms(text: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let unit = text.char_indices().last().map_or(0, |(index, _)| index);
    let (number, unit) = text.split_at(unit);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{text:?} is neither milliseconds since the epoch nor an age like 30m, 2h, 7d"),
    };
    let number: i64 = number
        .parse()
        .with_context(|| format!("{text:?}: the age must be a whole number"))?;
    Ok(now_ms.saturating_sub(number.saturating_mul(seconds).saturating_mul(1000)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `behavry traces`: the traces matching `filters`, newest first, one a line.
pub fn search(url: &str, filters: &Filters, json: bool) -> anyhow::Result<ExitCode> {
    let now = now_ms();
    let mut query = Vec::new();
    for (name, value) in [
        ("agent", &filters.agent),
        ("server", &filters.server),
        ("tool", &filters.tool),
        ("session", &filters.session),
        ("decision", &filters.decision),
    ] {
        if let Some(value) = value {
            query.push(format!("{name}={}", encode(value)));
        }
    }
    for (name, value) in [("since", &filters.since), ("until", &filters.until)] {
        if let Some(value) = value {
            query.push(format!("{name}={}", time_ms(value, now)?));
        }
    }
    if let Some(limit) = filters.limit {
        query.push(format!("limit={limit}"));
    }
    if let Some(before) = filters.before {
        query.push(format!("before={before}"));
    }
    let endpoint = format!(
        "{}{}?{}",
        url.trim_end_matches('/'),
        behavry_core::wire::TRACES_PATH,
        query.join("&")
    );
    let found: SearchResponse = get_json(&endpoint)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(ExitCode::SUCCESS);
    }
    if found.traces.is_empty() {
        println!("no traces match");
    }
    for trace in &found.traces {
        println!(
            "{}  {}  {:<5}  {} → {} {} {}{}",
            trace.trace_id,
            utc(trace.start_ms),
            trace.decision.as_deref().unwrap_or("-"),
            trace.agent.as_deref().unwrap_or("(no agent)"),
            trace.server.as_deref().unwrap_or("?"),
            trace.method.as_deref().unwrap_or("?"),
            trace.tool.as_deref().unwrap_or(""),
            trace
                .session_id
                .as_deref()
                .map(|s| format!("  session {s}"))
                .unwrap_or_default()
        );
    }
    if let Some(next) = found.next {
        println!("more: add --before {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a query value (RFC 3986 §2.1: everything but unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// What the trace's records prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// In the checkpoint, by its inclusion proof.
    Included,
    /// The inclusion proof does not lead to the checkpoint's root.
    Failed,
    /// Appended after the newest checkpoint.
    Pending,
}

impl Proof {
    fn mark(self) -> &'static str {
        match self {
            Proof::Included => "✓",
            Proof::Failed => "✗ PROOF FAILED",
            Proof::Pending => "… not yet in a checkpoint",
        }
    }
}

/// Each record's proof status against `checkpoint`: the leaf is recomputed from the event as
/// served (its RFC 8785 bytes), so a proof that holds means the sink served what it logged.
fn proofs(trace: &TraceResponse, checkpoint: Option<&Checkpoint>) -> Vec<Proof> {
    trace
        .events
        .iter()
        .map(|entry| {
            let Some(checkpoint) = checkpoint else {
                return Proof::Pending;
            };
            let Some(inclusion) = &entry.inclusion else {
                // A record the checkpoint covers must come with its proof: one left out is a
                // record the sink cannot prove.
                return if entry.seq <= checkpoint.size {
                    Proof::Failed
                } else {
                    Proof::Pending
                };
            };
            let proof: Option<Vec<merkle::Hash>> = inclusion
                .proof
                .iter()
                .map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()))
                .collect();
            let leaf = canonical_bytes(&entry.event).map(|body| merkle::leaf_hash(&body));
            match (proof, leaf) {
                (Some(proof), Ok(leaf))
                    if inclusion.size == checkpoint.size
                        && merkle::verify_inclusion(
                            &leaf,
                            entry.seq.saturating_sub(1),
                            inclusion.size,
                            &proof,
                            &checkpoint.root,
                        ) =>
                {
                    Proof::Included
                }
                _ => Proof::Failed,
            }
        })
        .collect()
}

/// `behavry trace <id>`: the trace as a tree (client span → calls → their records, and the
/// requests the server made of the client inside each call), each record with its proof status.
/// Exit 1 when a proof or the checkpoint's signature fails.
pub fn show(url: &str, trace_id: &str, keys: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let keys: Vec<NoteVerifier> = keys
        .iter()
        .map(|key| NoteVerifier::parse(key).with_context(|| format!("bad verifier key {key:?}")))
        .collect::<anyhow::Result<_>>()?;
    let endpoint = format!(
        "{}{}/{trace_id}?proofs=true",
        url.trim_end_matches('/'),
        behavry_core::wire::TRACES_PATH
    );
    let trace: TraceResponse = get_json(&endpoint)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (checkpoint, signature) = match trace.checkpoint.as_deref() {
        None => (None, "no checkpoint signed yet".to_owned()),
        Some(note) if keys.is_empty() => (
            unverified_checkpoint(note).ok(),
            "signature NOT checked (no --key)".to_owned(),
        ),
        Some(note) => match keys.iter().find_map(|k| k.open_checkpoint(note).ok()) {
            Some(checkpoint) => (Some(checkpoint), "signature verified".to_owned()),
            None => (
                None,
                "signature FAILED: no key given verifies it".to_owned(),
            ),
        },
    };
    let proofs = proofs(&trace, checkpoint.as_ref());
    print!(
        "{}",
        render(&trace, &proofs, checkpoint.as_ref(), &signature)
    );
    let signature_failed = trace.checkpoint.is_some() && checkpoint.is_none();
    Ok(if signature_failed || proofs.contains(&Proof::Failed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn render(
    trace: &TraceResponse,
    proofs: &[Proof],
    checkpoint: Option<&Checkpoint>,
    signature: &str,
) -> String {
    let mut out = String::new();
    let included = proofs.iter().filter(|p| **p == Proof::Included).count();
    let _ = writeln!(
        out,
        "trace {}  ({} records)",
        trace.trace_id,
        trace.events.len()
    );
    let _ = match checkpoint {
        Some(c) => writeln!(
            out,
            "proofs: {included} of {} records in checkpoint {} @ {}, {signature}",
            proofs.len(),
            c.origin,
            c.size
        ),
        None => writeln!(out, "proofs: none ({signature})"),
    };
    // Calls by span, in log order, under the client's span when they joined its trace.
    let mut spans: Vec<(&str, Vec<(&TraceEntry, Proof)>)> = Vec::new();
    for (entry, proof) in trace.events.iter().zip(proofs) {
        match spans
            .iter_mut()
            .find(|(span, _)| *span == entry.event.span_id)
        {
            Some((_, entries)) => entries.push((entry, *proof)),
            None => spans.push((&entry.event.span_id, vec![(entry, *proof)])),
        }
    }
    let mut parents: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for (index, (_, entries)) in spans.iter().enumerate() {
        let parent = entries
            .first()
            .and_then(|(e, _)| e.event.parent_span_id.as_deref());
        parents.entry(parent).or_default().push(index);
    }
    for (parent, calls) in &parents {
        let indent = match parent {
            Some(parent) => {
                let _ = writeln!(out, "client span {parent}");
                "    "
            }
            None => "",
        };
        for (position, index) in calls.iter().enumerate() {
            let last = position + 1 == calls.len();
            let Some((span, entries)) = spans.get(*index) else {
                continue;
            };
            render_call(&mut out, indent, last, span, entries);
        }
    }
    out
}

fn render_call(
    out: &mut String,
    indent: &str,
    last: bool,
    span: &str,
    entries: &[(&TraceEntry, Proof)],
) {
    let Some((first, _)) = entries.first() else {
        return;
    };
    let event = &first.event;
    let request = &event.request;
    let target = request
        .tool
        .as_deref()
        .or(request.prompt_name.as_deref())
        .or(request.resource_uri.as_deref())
        .unwrap_or("");
    let agent = match (&event.agent, event.delegation.is_empty()) {
        (Some(agent), true) => agent.clone(),
        (Some(agent), false) => format!("{agent} (acting: {})", event.delegation.join(" ← ")),
        (None, _) => "(no agent)".to_owned(),
    };
    let session = request
        .session_id
        .as_deref()
        .map(|s| format!("  session {s}"))
        .unwrap_or_default();
    let (branch, child) = if last {
        ("└── ", "    ")
    } else {
        ("├── ", "│   ")
    };
    let kind = if event.kind == behavry_core::wire::AuditKind::Policy {
        "policy change"
    } else {
        "call"
    };
    let _ = writeln!(
        out,
        "{indent}{branch}{kind} {span}  {agent} → {} {} {target}{session}",
        request.server, request.method
    );
    let start = event.time_ms;
    for (position, (entry, proof)) in entries.iter().enumerate() {
        let last_record = position + 1 == entries.len();
        let (branch, below) = if last_record {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        let when = if position == 0 {
            utc(i64::try_from(start).unwrap_or(i64::MAX))
        } else {
            format!("+{} ms", entry.event.time_ms.saturating_sub(start))
        };
        let _ = writeln!(
            out,
            "{indent}{child}{branch}{:<8} {when}  {}  #{} {}",
            entry.event.kind.as_str(),
            summary(&entry.event.detail, entry.event.kind),
            entry.seq,
            proof.mark()
        );
        if let Some(requests) = entry
            .event
            .detail
            .get("serverRequests")
            .and_then(Value::as_array)
        {
            for (n, request) in requests.iter().enumerate() {
                let branch = if n + 1 == requests.len() {
                    "└── "
                } else {
                    "├── "
                };
                let _ = writeln!(
                    out,
                    "{indent}{child}{below}{branch}server → client {} (id {})",
                    request.get("method").and_then(Value::as_str).unwrap_or("?"),
                    request.get("id").map(Value::to_string).unwrap_or_default()
                );
            }
        }
    }
}

/// One line of what a record says.
fn summary(detail: &Value, kind: behavry_core::wire::AuditKind) -> String {
    use behavry_core::wire::AuditKind;
    let mut parts: Vec<String> = Vec::new();
    let text = |key: &str| detail.get(key).and_then(Value::as_str);
    let count = |key: &str| {
        detail
            .get(key)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    match kind {
        AuditKind::Intent => {
            if let Some(digest) = text("argumentsDigest") {
                parts.push(format!("args {}", short(digest)));
            }
            let findings = count("findings");
            if findings > 0 {
                parts.push(format!("{findings} findings in the arguments"));
            }
            if detail.get("flow").is_some() {
                parts.push("flow from other servers".into());
            }
        }
        AuditKind::Decision => {
            let allow = detail.get("allow").and_then(Value::as_bool);
            parts.push(
                match allow {
                    Some(true) => "allow",
                    Some(false) => "DENY",
                    None => "?",
                }
                .into(),
            );
            if let Some(reasons) = detail.get("reasons").and_then(Value::as_array)
                && !reasons.is_empty()
            {
                let reasons: Vec<&str> = reasons.iter().filter_map(Value::as_str).collect();
                parts.push(format!("({})", reasons.join("; ")));
            }
            if let Some(rules) = detail.get("ruleIds").and_then(Value::as_array)
                && !rules.is_empty()
            {
                let rules: Vec<&str> = rules.iter().filter_map(Value::as_str).collect();
                parts.push(format!("rules {}", rules.join(",")));
            }
            if let Some(obligations) = detail.get("obligations").and_then(Value::as_object) {
                let names: Vec<&str> = obligations.keys().map(String::as_str).collect();
                parts.push(format!("obligations {}", names.join(",")));
            }
            if let Some(digest) = text("bundleDigest") {
                parts.push(format!("bundle {}", short(digest)));
            }
        }
        AuditKind::Outcome => {
            if let Some(status) = detail.get("status").and_then(Value::as_u64) {
                parts.push(format!("status {status}"));
            }
            if detail.get("isError").and_then(Value::as_bool) == Some(true) {
                parts.push("tool error".into());
            }
            if let Some(code) = detail.get("errorCode").and_then(Value::as_i64) {
                parts.push(format!("error {code}"));
            }
            let redacted = count("redacted");
            if redacted > 0 {
                parts.push(format!("{redacted} redacted"));
            }
            if let Some(action) = detail.pointer("/injection/action").and_then(Value::as_str) {
                parts.push(format!("injection: {action}"));
            }
            let in_requests = count("injectionInRequests");
            if in_requests > 0 {
                parts.push(format!("injection in {in_requests} server requests"));
            }
        }
        AuditKind::Policy => {
            if let Some(outcome) = text("outcome") {
                parts.push(outcome.to_owned());
            }
        }
    }
    parts.join("  ")
}

/// The first 12 hex digits after a `sha256:` or `hmac-sha256:` prefix.
fn short(digest: &str) -> String {
    let (prefix, hex) = digest.rsplit_once(':').unwrap_or(("", digest));
    let hex: String = hex.chars().take(12).collect();
    if prefix.is_empty() {
        hex
    } else {
        format!("{prefix}:{hex}…")
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic Gregorian, UTC).
fn utc(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ages() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_760_000_000_123), "2025-10-09T08:53:20.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(time_ms("1760000000000", 5).unwrap(), 1_760_000_000_000);
        assert_eq!(time_ms("2h", 10_000_000).unwrap(), 10_000_000 - 7_200_000);
        assert_eq!(time_ms("30m", 1_800_000).unwrap(), 0);
        assert!(time_ms("soon", 0).is_err());
        assert!(time_ms("1.5h", 0).is_err());
        assert_eq!(time_ms("-9223372036854775807d", 0).unwrap(), i64::MAX);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("agent a/b&c=d"), "agent%20a%2Fb%26c%3Dd");
        assert_eq!(encode("read_file-1.~"), "read_file-1.~");
    }

    #[test]
    fn a_covered_record_without_its_proof_fails() {
        use behavry_audit::api::TraceEntry;
        use behavry_core::wire::{AuditEvent, AuditKind, RequestFacts};
        let event = |seq: u64| TraceEntry {
            seq,
            hash: String::new(),
            prev_hash: String::new(),
            event: AuditEvent {
                event_id: format!("e{seq}"),
                trace_id: "1".repeat(32),
                span_id: "2".repeat(16),
                parent_span_id: None,
                kind: AuditKind::Intent,
                time_ms: 1,
                agent: None,
                delegation: Vec::new(),
                request: RequestFacts::default(),
                detail: Value::Null,
            },
            inclusion: None,
        };
        let trace = TraceResponse {
            trace_id: "1".repeat(32),
            events: vec![event(3), event(9)],
            checkpoint: None,
        };
        let checkpoint = Checkpoint {
            origin: "behavry.test/audit".into(),
            size: 5,
            root: [0; 32],
        };
        assert_eq!(
            proofs(&trace, Some(&checkpoint)),
            [Proof::Failed, Proof::Pending]
        );
        assert_eq!(proofs(&trace, None), [Proof::Pending, Proof::Pending]);
    }

    #[test]
    fn digests_are_shortened() {
        assert_eq!(
            short("hmac-sha256:0123456789abcdef"),
            "hmac-sha256:0123456789ab…"
        );
        assert_eq!(short("abc"), "abc");
    }
}
