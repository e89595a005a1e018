//! Token revocation at the proxy.
//!
//! A verified token stays valid until it expires; revocation (RFC 7009 describes the request side)
//! needs the resource server to know what was revoked. The root context of each worker polls the
//! authz-sidecar's `GET /v1/revocations` every `revocation.pollIntervalMs` and keeps the list
//! here; requests whose `jti` or agent is on it are refused with `invalid_token`. A failed poll
//! keeps the last list: revocation never turns itself off.

use std::collections::HashSet;

use behavry_core::wire::RevocationList;

/// The revocations a worker currently enforces.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevocationSet {
    version: u64,
    token_ids: HashSet<String>,
    agents: HashSet<String>,
}

impl RevocationSet {
    /// Takes a polled list; an older or equal version than the one held is ignored.
    pub fn update(&mut self, list: RevocationList) -> bool {
        if list.version <= self.version && self.version != 0 {
            return false;
        }
        self.version = list.version;
        self.token_ids = list.token_ids.into_iter().collect();
        self.agents = list.agents.into_iter().collect();
        true
    }

    /// Whether a token with this `jti`, held by this agent, is revoked.
    pub fn is_revoked(&self, token_id: Option<&str>, agent: Option<&str>) -> bool {
        token_id.is_some_and(|jti| self.token_ids.contains(jti))
            || agent.is_some_and(|sub| self.agents.contains(sub))
    }

    pub fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(version: u64, jtis: &[&str], agents: &[&str]) -> RevocationList {
        RevocationList {
            version,
            token_ids: jtis.iter().map(|s| s.to_string()).collect(),
            agents: agents.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn revoked_tokens_and_agents_are_recognized() {
        let mut set = RevocationSet::default();
        assert!(!set.is_revoked(Some("j1"), Some("a")));
        assert!(set.update(list(3, &["j1"], &["mallory"])));
        assert!(set.is_revoked(Some("j1"), Some("alice")));
        assert!(set.is_revoked(Some("j2"), Some("mallory")));
        assert!(!set.is_revoked(Some("j2"), Some("alice")));
        assert!(!set.is_revoked(None, None));
    }

    #[test]
    fn stale_lists_are_ignored() {
        let mut set = RevocationSet::default();
        set.update(list(5, &["j1"], &[]));
        assert!(!set.update(list(4, &[], &[])));
        assert!(set.is_revoked(Some("j1"), None));
        assert!(set.update(list(6, &[], &[])));
        assert!(
            !set.is_revoked(Some("j1"), None),
            "an un-revoked entry goes away"
        );
        assert_eq!(set.version(), 6);
    }
}
