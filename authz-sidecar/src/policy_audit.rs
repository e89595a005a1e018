//! Policy changes in the audit log: the bundle put in force at start and by each reload, and every
//! bundle a reload refused, with the error (docs/policy.md, "Bundles").
//!
//! With `audit_url` set, each change becomes one [`AuditEvent`] of kind `policy` sent to the
//! audit-sink's `POST /v1/events`, its trace id and event id fixed when the change happens so a
//! retry is stored once. Events the sink has not acknowledged are kept (at most
//! [`MAX_PENDING`], oldest dropped first with an error logged) and sent again after every reload
//! poll; they are lost only if the sidecar stops before the sink is back.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use behavry_core::wire::{AuditEvent, AuditKind, EVENTS_PATH, RequestFacts};
use serde_json::json;

/// Most unacknowledged policy events kept.
pub const MAX_PENDING: usize = 1000;
/// Bound of one delivery.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// What happened to the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyChange {
    /// The bundle in force at start.
    Loaded {
        /// Its digest.
        digest: String,
    },
    /// A reload put a new bundle in force.
    Applied {
        /// The new digest.
        digest: String,
        /// The digest it replaced.
        previous: String,
    },
    /// A tool's pinned definition changed: pinned on first use, approved, or a definition
    /// rejected (docs/pins.md).
    Pin {
        /// `outcome` (`pinned`, `rejected`), server, tool, hash, and who decided.
        detail: serde_json::Value,
    },
    /// A reload refused a bundle; the previous one stays in force.
    Refused {
        /// Why.
        error: String,
        /// The digest that stays in force.
        in_force: String,
    },
}

/// Sends policy changes to the audit-sink.
#[derive(Debug)]
pub struct PolicyAuditor {
    client: reqwest::Client,
    events_url: String,
    pending: Mutex<VecDeque<AuditEvent>>,
}

impl PolicyAuditor {
    /// An auditor for the audit-sink at `audit_url` (its base URL).
    pub fn new(audit_url: &str) -> Result<PolicyAuditor, reqwest::Error> {
        Ok(PolicyAuditor {
            client: reqwest::Client::builder().timeout(SEND_TIMEOUT).build()?,
            events_url: format!("{}{EVENTS_PATH}", audit_url.trim_end_matches('/')),
            pending: Mutex::new(VecDeque::new()),
        })
    }

    /// Queue the event of `change`, made at `now`.
    pub fn record(&self, change: &PolicyChange, now: SystemTime) {
        let event = event_for(change, now);
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if pending.len() >= MAX_PENDING {
            tracing::error!(
                "the audit-sink has not taken {MAX_PENDING} policy events: dropping the oldest"
            );
            pending.pop_front();
        }
        pending.push_back(event);
    }

    /// Send every queued event; those the sink does not acknowledge stay queued.
    pub async fn flush(&self) {
        let batch: Vec<AuditEvent> = match self.pending.lock() {
            Ok(pending) => pending.iter().cloned().collect(),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        let mut body = Vec::new();
        for event in &batch {
            if let Ok(line) = serde_json::to_vec(event) {
                body.extend_from_slice(&line);
                body.push(b'\n');
            }
        }
        let sent = self
            .client
            .post(&self.events_url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                if let Ok(mut pending) = self.pending.lock() {
                    // Only what was sent: a change recorded meanwhile stays for the next flush.
                    pending.retain(|event| !batch.iter().any(|s| s.event_id == event.event_id));
                }
            }
            Ok(response) => tracing::warn!(
                status = %response.status(),
                pending = batch.len(),
                "the audit-sink refused the policy events; kept for retry"
            ),
            Err(err) => tracing::warn!(
                error = %err,
                pending = batch.len(),
                "cannot reach the audit-sink for policy events; kept for retry"
            ),
        }
    }

    /// How many events wait for the sink.
    pub fn pending(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or_default()
    }
}

/// The audit event of one change: its own random trace, stable ids.
pub fn event_for(change: &PolicyChange, now: SystemTime) -> AuditEvent {
    let mut random = [0u8; 24];
    rsa::rand_core::RngCore::fill_bytes(&mut rsa::rand_core::OsRng, &mut random);
    let trace_id = hex::encode(&random[..16]);
    let span_id = hex::encode(&random[16..]);
    let (method, detail) = match change {
        PolicyChange::Loaded { digest } => (
            "policy/loaded",
            json!({"outcome": "loaded", "bundleDigest": digest}),
        ),
        PolicyChange::Applied { digest, previous } => (
            "policy/applied",
            json!({"outcome": "applied", "bundleDigest": digest, "previousDigest": previous}),
        ),
        PolicyChange::Refused { error, in_force } => (
            "policy/refused",
            json!({"outcome": "refused", "error": error, "bundleDigest": in_force}),
        ),
        PolicyChange::Pin { detail } => ("pins/changed", detail.clone()),
    };
    AuditEvent {
        event_id: format!("{trace_id}-{span_id}-{}", AuditKind::Policy.as_str()),
        trace_id,
        span_id,
        parent_span_id: None,
        kind: AuditKind::Policy,
        time_ms: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or_default(),
        agent: None,
        delegation: Vec::new(),
        request: RequestFacts {
            server: "behavry-authz".to_owned(),
            method: method.to_owned(),
            ..RequestFacts::default()
        },
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_one_event_with_its_own_trace() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let refused = event_for(
            &PolicyChange::Refused {
                error: "invalid policy p.rego: unexpected keyword".into(),
                in_force: "sha256:a".into(),
            },
            now,
        );
        assert_eq!(refused.kind, AuditKind::Policy);
        assert_eq!(refused.trace_id.len(), 32);
        assert_eq!(refused.request.method, "policy/refused");
        assert_eq!(
            refused.detail["error"],
            "invalid policy p.rego: unexpected keyword"
        );
        assert_eq!(refused.detail["bundleDigest"], "sha256:a");
        assert_eq!(refused.time_ms, 1_800_000_000_000);
        let applied = event_for(
            &PolicyChange::Applied {
                digest: "sha256:b".into(),
                previous: "sha256:a".into(),
            },
            now,
        );
        assert_ne!(applied.trace_id, refused.trace_id);
        assert_eq!(applied.detail["previousDigest"], "sha256:a");
        let pin = event_for(
            &PolicyChange::Pin {
                detail: json!({"outcome": "rejected", "tool": "forecast", "by": "bob"}),
            },
            now,
        );
        assert_eq!(pin.kind, AuditKind::Policy);
        assert_eq!(pin.request.method, "pins/changed");
        assert_eq!(pin.request.server, "behavry-authz");
        assert_eq!(pin.detail["by"], "bob");
    }

    #[tokio::test]
    async fn events_wait_for_the_sink_and_stay_bounded() {
        // Nothing listens on port 1: every delivery fails, nothing is lost, the queue is bounded.
        let auditor = PolicyAuditor::new("http://127.0.0.1:1").unwrap();
        for i in 0..(MAX_PENDING + 5) {
            auditor.record(
                &PolicyChange::Loaded {
                    digest: format!("sha256:{i}"),
                },
                SystemTime::now(),
            );
        }
        auditor.flush().await;
        assert_eq!(auditor.pending(), MAX_PENDING);
    }
}
