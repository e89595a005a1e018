//! Upstream credentials: the agent's token never reaches an upstream MCP server; on routes with
//! `upstreamCredential`, the filter puts a credential issued for that server in its place.
//!
//! The authz-sidecar hands them out (`POST /v1/credentials`, see `behavry_core::wire`): an access
//! token minted by token exchange (RFC 8693) or a static key from the secret store. Each worker
//! keeps them in a [`CredentialCache`] keyed by server, agent and delegation chain, renewed a
//! little before they expire. Everything here is pure; the shim only carries out the calls.
//!
//! Secrets: [`UpstreamCredential`]'s `Debug` hides the value; only `kind` and `reference` may
//! appear in audit events ([`UpstreamCredential::audit_detail`]).

use std::collections::HashMap;

use behavry_core::wire::{AgentIdentity, CredentialKind, CredentialRequest, CredentialResponse};
use serde_json::{Value, json};

/// Most credentials one worker keeps.
pub const DEFAULT_CACHE_ENTRIES: usize = 4096;
/// Largest refresh margin: a credential is renewed when less than this (or a fifth of its
/// lifetime, whichever is smaller) is left, so it does not expire on the way upstream.
pub const MAX_REFRESH_MARGIN_MS: u64 = 30_000;
/// Most bytes of a sidecar error message repeated to the agent.
const MAX_MESSAGE_CHARS: usize = 200;

/// Who a credential is for: one agent, acting through one delegation chain, with one set of
/// scopes, on one server. The scopes are part of the key: a token narrowed by exchange
/// (RFC 8693 §2.1 `scope`) must not be served a credential fetched for a broader one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialKey {
    pub server: String,
    pub agent: String,
    pub delegation: Vec<String>,
    /// Sorted, without duplicates.
    pub scopes: Vec<String>,
}

/// A credential ready to be set on a request.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamCredential {
    pub kind: CredentialKind,
    /// Lowercase request header name.
    pub header: String,
    /// The header value: a secret.
    pub value: String,
    /// Safe to audit: the exchanged token's `jti` or the secret reference.
    pub reference: String,
    /// When it stops being valid, ms since the epoch.
    pub valid_until_ms: u64,
    /// When it should be renewed, ms since the epoch.
    pub renew_at_ms: u64,
}

impl std::fmt::Debug for UpstreamCredential {
    // The value is a credential: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCredential")
            .field("kind", &self.kind)
            .field("header", &self.header)
            .field("value", &"[REDACTED]")
            .field("reference", &self.reference)
            .field("valid_until_ms", &self.valid_until_ms)
            .finish()
    }
}

impl UpstreamCredential {
    /// What the audit log may say about it: never the value.
    pub fn audit_detail(&self) -> Value {
        json!({"kind": self.kind, "reference": self.reference})
    }

    /// Request headers to remove before setting `header: value`. The agent's `Authorization`
    /// always goes (RFC 8707 / MCP authorization "Access Token Privilege Restriction": a token
    /// issued for Behavry must not be passed through to an upstream).
    pub fn headers_to_remove(&self) -> &'static [&'static str] {
        &["authorization"]
    }
}

/// Why no credential could be had, and how the agent is answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialFailure {
    /// Answered 503 `CREDENTIAL_UNAVAILABLE`: the sidecar or the secret store failed.
    #[error("no upstream credential: {0}")]
    Unavailable(String),
    /// Answered 503 `CREDENTIAL_UNAVAILABLE`: the sidecar reported an error. Its `detail` (the
    /// secret reference, the store's error) goes to the audit event, not to the agent.
    #[error("no upstream credential: the authz-sidecar answered HTTP {status}")]
    SidecarError { status: String, detail: String },
    /// Answered 403 `POLICY_DENIED`: the agent may not use this server.
    #[error("{0}")]
    Forbidden(String),
}

/// Per-worker cache of upstream credentials, bounded in entries.
#[derive(Debug)]
pub struct CredentialCache {
    entries: HashMap<CredentialKey, UpstreamCredential>,
    capacity: usize,
}

impl Default for CredentialCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CACHE_ENTRIES)
    }
}

impl CredentialCache {
    pub fn with_capacity(capacity: usize) -> Self {
        CredentialCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A credential for `key` that needs no renewal at `now_ms`.
    pub fn get(&self, key: &CredentialKey, now_ms: u64) -> Option<&UpstreamCredential> {
        self.entries.get(key).filter(|c| now_ms < c.renew_at_ms)
    }

    /// Keeps `credential` for `key`. When full, expired entries go first, then the one that
    /// expires soonest.
    pub fn insert(&mut self, key: CredentialKey, credential: UpstreamCredential, now_ms: u64) {
        if credential.renew_at_ms <= now_ms {
            // Usable for the request that fetched it, not worth keeping.
            self.entries.remove(&key);
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, c| c.valid_until_ms > now_ms);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, c)| c.valid_until_ms)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key, credential);
    }
}

/// The JSON body of `POST /v1/credentials`.
pub fn request_body(
    server: &str,
    agent: &AgentIdentity,
    subject_expires_at: u64,
) -> Result<Vec<u8>, CredentialFailure> {
    serde_json::to_vec(&CredentialRequest {
        server: server.to_owned(),
        agent: agent.clone(),
        subject_expires_at,
    })
    .map_err(|e| CredentialFailure::Unavailable(format!("cannot encode the request: {e}")))
}

/// Reads the authz-sidecar's answer: `status` is `None` when there was none (unreachable, timed
/// out). A credential never outlives the agent token it was fetched for (`subject_expires_at`,
/// seconds).
pub fn interpret(
    status: Option<&str>,
    body: &[u8],
    now_ms: u64,
    subject_expires_at: u64,
) -> Result<UpstreamCredential, CredentialFailure> {
    let unavailable = |why: String| Err(CredentialFailure::Unavailable(why));
    match status {
        Some("200") => {}
        Some("403") => {
            return Err(CredentialFailure::Forbidden(
                sidecar_message(body)
                    .unwrap_or_else(|| "the agent may not use this upstream server".to_string()),
            ));
        }
        Some("401") => {
            return unavailable("the proxy was not accepted by the authz-sidecar".into());
        }
        Some("404") => {
            return unavailable("the upstream server has no credential configured".into());
        }
        Some(other) => {
            return Err(CredentialFailure::SidecarError {
                status: other.to_string(),
                detail: sidecar_message(body).unwrap_or_default(),
            });
        }
        None => return unavailable("the authz-sidecar is unreachable or timed out".into()),
    }
    let answer: CredentialResponse = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        // The serde error could quote the value: say only that it was unreadable.
        Err(_) => return unavailable("the authz-sidecar's answer is unreadable".into()),
    };
    if !is_settable_header(&answer.header) {
        return unavailable("the authz-sidecar named a header that cannot be set".into());
    }
    // RFC 9110 §5.5: field values are visible ASCII, space and tab (no CR/LF that could split
    // the request); obs-text is refused here, credentials never need it.
    if answer.value.is_empty()
        || !answer
            .value
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t')
    {
        return unavailable("the authz-sidecar's credential is not a valid header value".into());
    }
    let lifetime_ms = answer.expires_in_secs.saturating_mul(1000);
    let valid_until_ms = now_ms
        .saturating_add(lifetime_ms)
        .min(subject_expires_at.saturating_mul(1000));
    let margin = MAX_REFRESH_MARGIN_MS.min(lifetime_ms / 5);
    Ok(UpstreamCredential {
        kind: answer.kind,
        header: answer.header,
        value: answer.value,
        reference: answer.reference,
        valid_until_ms,
        renew_at_ms: valid_until_ms.saturating_sub(margin),
    })
}

/// A lowercase RFC 9110 §5.1 token that is not a pseudo-header nor one that frames the message
/// or routes it.
fn is_settable_header(name: &str) -> bool {
    const FRAMING: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "content-type",
    ];
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        })
        && !FRAMING.contains(&name)
}

/// The `message` (or `error`) of the sidecar's JSON error body, or its text, shortened and
/// limited to printable characters.
fn sidecar_message(body: &[u8]) -> Option<String> {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(value) => ["message", "error"]
            .iter()
            .find_map(|k| value.get(k).and_then(Value::as_str).map(str::to_owned))?,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let text: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;
    const FAR: u64 = 10_000_000;

    fn key(agent: &str) -> CredentialKey {
        CredentialKey {
            server: "s".into(),
            agent: agent.into(),
            delegation: vec![],
            scopes: vec!["mcp".into()],
        }
    }

    fn answer(expires_in: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "kind": "exchanged", "header": "authorization", "value": "Bearer up-token",
            "expiresInSecs": expires_in, "reference": "jti-1"
        }))
        .unwrap()
    }

    fn credential(valid_until_ms: u64) -> UpstreamCredential {
        UpstreamCredential {
            kind: CredentialKind::Secret,
            header: "x-api-key".into(),
            value: "k".into(),
            reference: "r".into(),
            valid_until_ms,
            renew_at_ms: valid_until_ms,
        }
    }

    #[test]
    fn a_200_becomes_a_credential_renewed_before_it_expires() {
        let c = interpret(Some("200"), &answer(300), NOW, FAR).unwrap();
        assert_eq!(c.header, "authorization");
        assert_eq!(c.value, "Bearer up-token");
        assert_eq!(c.valid_until_ms, NOW + 300_000);
        assert_eq!(c.renew_at_ms, NOW + 300_000 - MAX_REFRESH_MARGIN_MS);
        // A short lifetime renews at four fifths of it.
        let short = interpret(Some("200"), &answer(10), NOW, FAR).unwrap();
        assert_eq!(short.renew_at_ms, NOW + 8_000);
        // Never longer than the agent's token.
        let capped = interpret(Some("200"), &answer(3600), NOW, NOW / 1000 + 60).unwrap();
        assert_eq!(capped.valid_until_ms, NOW + 60_000);
    }

    #[test]
    fn the_value_never_shows_in_debug_or_audit() {
        let c = interpret(Some("200"), &answer(300), NOW, FAR).unwrap();
        assert!(!format!("{c:?}").contains("up-token"));
        let audit = c.audit_detail().to_string();
        assert!(!audit.contains("up-token"));
        assert!(audit.contains("jti-1") && audit.contains("exchanged"));
    }

    #[test]
    fn failures_map_to_unavailable_or_forbidden() {
        let forbidden = interpret(
            Some("403"),
            br#"{"error":"forbidden","message":"agent a may not use s"}"#,
            NOW,
            FAR,
        );
        assert_eq!(
            forbidden,
            Err(CredentialFailure::Forbidden("agent a may not use s".into()))
        );
        for (status, body) in [
            (Some("401"), &b"{}"[..]),
            (Some("404"), b""),
            (Some("502"), b"vault down"),
            (Some("503"), b""),
            (None, b""),
            (Some("200"), b"garbage"),
            (Some("200"), br#"{"kind":"secret"}"#),
        ] {
            let result = interpret(status, body, NOW, FAR);
            assert!(
                matches!(
                    result,
                    Err(CredentialFailure::Unavailable(_) | CredentialFailure::SidecarError { .. })
                ),
                "{status:?}: {result:?}"
            );
        }
        let failure = interpret(
            Some("502"),
            br#"{"error":"secret_unavailable","message":"secret vault:kv/x#y not found"}"#,
            NOW,
            FAR,
        )
        .unwrap_err();
        let CredentialFailure::SidecarError { status, detail } = &failure else {
            panic!("a 502 is a sidecar error: {failure:?}");
        };
        assert_eq!(
            (status.as_str(), detail.as_str()),
            ("502", "secret vault:kv/x#y not found")
        );
        // The agent is told the status only; the detail is for the audit event.
        assert!(!failure.to_string().contains("vault:kv"));
    }

    #[test]
    fn unsafe_headers_and_values_are_refused() {
        let bad = |header: &str, value: &str| {
            let body = serde_json::to_vec(&json!({
                "kind": "secret", "header": header, "value": value,
                "expiresInSecs": 60, "reference": "r"
            }))
            .unwrap();
            interpret(Some("200"), &body, NOW, FAR).is_err()
        };
        assert!(!bad("x-api-key", "abc def"));
        assert!(bad(":authority", "evil"));
        assert!(bad("host", "evil"));
        assert!(bad("X-Api-Key", "k"));
        assert!(bad("x-api-key", "k\r\nx-injected: 1"));
        assert!(bad("x-api-key", ""));
        // The garbage error must not quote a value.
        let body = br#"{"kind":"secret","header":"a","value":"top-secret","expiresInSecs":"x","reference":"r"}"#;
        let err = interpret(Some("200"), body, NOW, FAR).unwrap_err();
        assert!(!err.to_string().contains("top-secret"));
    }

    #[test]
    fn cache_hits_until_the_renewal_point_and_is_keyed_by_chain() {
        let mut cache = CredentialCache::default();
        let c = interpret(Some("200"), &answer(300), NOW, FAR).unwrap();
        let renew = c.renew_at_ms;
        cache.insert(key("a"), c, NOW);
        assert!(cache.get(&key("a"), NOW + 1).is_some());
        assert!(
            cache.get(&key("a"), renew).is_none(),
            "renewed at the margin"
        );
        assert!(cache.get(&key("b"), NOW).is_none());
        let mut delegated = key("a");
        delegated.delegation = vec!["helper".into()];
        assert!(cache.get(&delegated, NOW).is_none());
        let mut other_server = key("a");
        other_server.server = "t".into();
        assert!(cache.get(&other_server, NOW).is_none());
        // A token narrowed to fewer scopes is not served the broader token's credential.
        let mut narrowed = key("a");
        narrowed.scopes = vec![];
        assert!(cache.get(&narrowed, NOW).is_none());
        // A credential with no life left is used once, not kept.
        let zero = interpret(Some("200"), &answer(0), NOW, FAR).unwrap();
        cache.insert(key("z"), zero, NOW);
        assert!(cache.get(&key("z"), NOW).is_none());
    }

    #[test]
    fn a_full_cache_evicts_expired_then_soonest() {
        let mut cache = CredentialCache::with_capacity(3);
        cache.insert(key("expired"), credential(NOW + 10), NOW);
        cache.insert(key("soon"), credential(NOW + 100), NOW);
        cache.insert(key("late"), credential(NOW + 1000), NOW);
        cache.insert(key("new1"), credential(NOW + 500), NOW + 50);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key("expired"), NOW + 50).is_none());
        assert!(cache.get(&key("soon"), NOW + 50).is_some());
        cache.insert(key("new2"), credential(NOW + 700), NOW + 50);
        assert_eq!(cache.len(), 3);
        assert!(
            cache.get(&key("soon"), NOW + 50).is_none(),
            "soonest evicted"
        );
        assert!(cache.get(&key("late"), NOW + 50).is_some());
        // Replacing an existing key evicts nothing.
        cache.insert(key("late"), credential(NOW + 2000), NOW + 50);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key("new1"), NOW + 50).is_some());
    }

    #[test]
    fn request_body_follows_the_wire_contract() {
        let agent = AgentIdentity {
            id: "a".into(),
            delegation: vec!["b".into()],
            scopes: vec!["mcp".into()],
            client_matches: None,
        };
        let body = request_body("s", &agent, 42).unwrap();
        let parsed: CredentialRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.server, "s");
        assert_eq!(parsed.agent, agent);
        assert_eq!(parsed.subject_expires_at, 42);
    }
}
