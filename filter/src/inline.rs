//! Decisions made in the filter without a callout (docs/policy.md, "Inline decisions").
//!
//! Each worker keeps the bundle's published [`DecisionTable`] (polled from
//! `GET /v1/policy/table` by its root context every `inline.pollIntervalMs`) and a cache of the
//! sidecar decisions that carry a `cacheSeconds` obligation. A request the table denies, or that a
//! cached decision answers, is decided here; everything else goes to the sidecar. Both are keyed
//! to the bundle digest: when the polled digest changes, or a decision comes back under another
//! digest, the cache is dropped and the new table replaces the old one. A failed poll keeps what
//! is held; a worker that never got a table decides nothing from it.
//!
//! A decision is cached only when the policy says it may be (`cacheSeconds`) and it has nothing
//! left for anyone to do: an allow that consumes budget, redacts, or used an approval, and a
//! denial that asks for a step-up or an approval, always go back to the sidecar.

use std::collections::HashMap;

use behavry_core::decision_table::PolicyTable;
use behavry_core::wire::{DecisionResponse, RequestFacts};

/// Where a decision made in the filter came from, as audited (`decidedBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalSource {
    /// The bundle's published table.
    Table,
    /// A cached sidecar decision.
    Cache,
    /// The proxy's own rule, whatever policy says (a task another agent created).
    Proxy,
}

impl LocalSource {
    /// The audit name.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalSource::Table => "table",
            LocalSource::Cache => "cache",
            LocalSource::Proxy => "proxy",
        }
    }
}

#[derive(Debug, Clone)]
struct Cached {
    decision: DecisionResponse,
    expires_at_ms: u64,
}

/// One worker's table and decision cache.
#[derive(Debug, Default)]
pub struct InlinePolicy {
    published: Option<PolicyTable>,
    cache: HashMap<String, Cached>,
    max_entries: usize,
}

impl InlinePolicy {
    /// Nothing known yet; at most `max_entries` cached decisions.
    pub fn new(max_entries: usize) -> InlinePolicy {
        InlinePolicy {
            published: None,
            cache: HashMap::new(),
            max_entries,
        }
    }

    /// The digest of the bundle the table and cache belong to.
    pub fn digest(&self) -> Option<&str> {
        self.published.as_ref().map(|p| p.bundle_digest.as_str())
    }

    /// Take a polled table. Returns whether the bundle changed (then the cache was dropped).
    pub fn update(&mut self, published: PolicyTable) -> bool {
        let changed = self.digest() != Some(published.bundle_digest.as_str());
        if changed {
            self.cache.clear();
        }
        self.published = Some(published);
        changed
    }

    /// The decision for `key` (see [`crate::exchange::Exchange::decision_key`]) of `agent`
    /// asking `facts`, if the table or the cache has one at `now_ms`.
    pub fn decide(
        &mut self,
        key: &str,
        agent: &str,
        facts: &RequestFacts,
        now_ms: u64,
    ) -> Option<(DecisionResponse, LocalSource)> {
        if let Some(published) = &self.published
            && let Some(table) = &published.table
            && let Some(decision) = table.decide(agent, facts, &published.bundle_digest)
        {
            return Some((decision, LocalSource::Table));
        }
        match self.cache.get(key) {
            Some(cached) if cached.expires_at_ms > now_ms => {
                Some((cached.decision.clone(), LocalSource::Cache))
            }
            Some(_) => {
                self.cache.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keep a sidecar decision for `key` when it may be reused. A decision under another bundle
    /// than the one held drops the cache and is not kept: it may be newer than the held table (the
    /// bundle changed before the next poll said so) or older (it was in flight during a poll);
    /// the next poll settles which bundle is in force. Until then the held table may still deny
    /// what a newer bundle grants, never the reverse.
    /// `key` is only computed when the decision is kept.
    pub fn remember(
        &mut self,
        key: impl FnOnce() -> String,
        decision: &DecisionResponse,
        now_ms: u64,
    ) {
        if self
            .digest()
            .is_some_and(|digest| digest != decision.bundle_digest)
        {
            self.cache.clear();
            return;
        }
        let Some(seconds) = decision.obligations.cache_seconds.filter(|s| *s > 0) else {
            return;
        };
        let o = &decision.obligations;
        let nothing_left = if decision.allow {
            o.budget.is_none() && o.redact.is_empty() && decision.approval.is_none()
        } else {
            o.require_scope.is_none() && o.require_approval.is_none()
        };
        if !nothing_left || self.max_entries == 0 {
            return;
        }
        if self.cache.len() >= self.max_entries {
            // Expired entries first; if that frees nothing, start over (simple and bounded).
            self.cache.retain(|_, cached| cached.expires_at_ms > now_ms);
            if self.cache.len() >= self.max_entries {
                self.cache.clear();
            }
        }
        self.cache.insert(
            key(),
            Cached {
                decision: decision.clone(),
                expires_at_ms: now_ms.saturating_add(u64::from(seconds).saturating_mul(1000)),
            },
        );
    }

    /// How many decisions are cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use behavry_core::decision_table::DecisionTable;
    use behavry_core::wire::{BudgetConsumption, Obligations, Visibility};
    use serde_json::json;

    use super::*;

    fn published(digest: &str) -> PolicyTable {
        let table: DecisionTable = serde_json::from_value(json!({
            "blocked": {"everything": ["get-env"]},
            "agents": {"dev": {"servers": {"everything": {"tools": ["echo"]}}}}
        }))
        .unwrap();
        PolicyTable {
            bundle_digest: digest.into(),
            table: Some(table),
        }
    }

    fn facts(method: &str, tool: Option<&str>) -> RequestFacts {
        RequestFacts {
            server: "everything".into(),
            method: method.into(),
            tool: tool.map(str::to_owned),
            ..RequestFacts::default()
        }
    }

    fn listing_allow(digest: &str, cache_seconds: Option<u32>) -> DecisionResponse {
        DecisionResponse {
            allow: true,
            reasons: vec![],
            rule_ids: vec!["behavry.listing.filtered".into()],
            bundle_digest: digest.into(),
            obligations: Obligations {
                cache_seconds,
                visible: Some(Visibility {
                    allow: vec!["echo".into()],
                    deny: vec![],
                }),
                ..Obligations::default()
            },
            client_matches: None,
            approval: None,
        }
    }

    #[test]
    fn the_table_denies_and_the_cache_answers_until_it_expires() {
        let mut inline = InlinePolicy::new(100);
        assert!(
            inline
                .decide("k", "dev", &facts("tools/call", Some("get-env")), 0)
                .is_none()
        );
        assert!(inline.update(published("sha256:a")));
        let (denied, source) = inline
            .decide("k", "dev", &facts("tools/call", Some("get-env")), 0)
            .unwrap();
        assert_eq!(source, LocalSource::Table);
        assert_eq!(
            denied.rule_ids,
            ["behavry.tools.not_granted", "behavry.tools.blocked"]
        );
        assert_eq!(denied.bundle_digest, "sha256:a");
        // An allowed call is not the table's to decide.
        assert!(
            inline
                .decide("k", "dev", &facts("tools/call", Some("echo")), 0)
                .is_none()
        );

        let list = facts("tools/list", None);
        assert!(inline.decide("list", "dev", &list, 0).is_none());
        inline.remember(
            || "list".into(),
            &listing_allow("sha256:a", Some(30)),
            1_000,
        );
        let (cached, source) = inline.decide("list", "dev", &list, 30_999).unwrap();
        assert_eq!(source, LocalSource::Cache);
        assert_eq!(cached, listing_allow("sha256:a", Some(30)));
        assert!(inline.decide("list", "dev", &list, 31_000).is_none());
        assert_eq!(inline.cached(), 0);
    }

    #[test]
    fn only_decisions_with_nothing_left_to_do_are_cached() {
        let mut inline = InlinePolicy::new(100);
        inline.update(published("sha256:a"));
        inline.remember(|| "none".into(), &listing_allow("sha256:a", None), 0);
        let mut budgeted = listing_allow("sha256:a", Some(30));
        budgeted.obligations.budget = Some(BudgetConsumption::default());
        inline.remember(|| "budget".into(), &budgeted, 0);
        let mut step_up = listing_allow("sha256:a", Some(30));
        step_up.allow = false;
        step_up.obligations.visible = None;
        step_up.obligations.require_scope = Some("mcp:compute".into());
        inline.remember(|| "scope".into(), &step_up, 0);
        assert_eq!(inline.cached(), 0);
        step_up.obligations.require_scope = None;
        inline.remember(|| "deny".into(), &step_up, 0);
        assert_eq!(inline.cached(), 1);
    }

    #[test]
    fn a_new_bundle_drops_the_cache_and_the_old_table() {
        let mut inline = InlinePolicy::new(100);
        inline.update(published("sha256:a"));
        inline.remember(|| "list".into(), &listing_allow("sha256:a", Some(30)), 0);
        assert!(
            !inline.update(published("sha256:a")),
            "same bundle: nothing changes"
        );
        assert_eq!(inline.cached(), 1);
        assert!(inline.update(published("sha256:b")));
        assert_eq!(inline.cached(), 0);

        // A decision under a bundle other than the polled one (newer or older): the cache is
        // dropped, the decision is not kept, the held digest and table stay until the next poll.
        inline.remember(|| "list".into(), &listing_allow("sha256:b", Some(30)), 0);
        assert_eq!(inline.cached(), 1);
        inline.remember(|| "other".into(), &listing_allow("sha256:a", Some(30)), 0);
        assert_eq!(inline.cached(), 0);
        assert_eq!(inline.digest(), Some("sha256:b"));
        assert!(
            inline
                .decide("k", "dev", &facts("tools/call", Some("get-env")), 0)
                .is_some(),
            "the polled table still decides"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut inline = InlinePolicy::new(3);
        inline.update(published("sha256:a"));
        for i in 0..10 {
            inline.remember(|| format!("k{i}"), &listing_allow("sha256:a", Some(30)), 0);
            assert!(inline.cached() <= 3);
        }
        let mut off = InlinePolicy::new(0);
        off.remember(|| "k".into(), &listing_allow("sha256:a", Some(30)), 0);
        assert_eq!(off.cached(), 0);
    }
}
