//! Decisions made in the filter without a callout (docs/policy.md, "Inline decisions" and
//! "Leases").
//!
//! Each worker keeps the bundle's published [`DecisionTable`] (polled from
//! `GET /v1/policy/table` by its root context every `inline.pollIntervalMs`), a cache of the
//! sidecar decisions that carry a `cacheSeconds` obligation, and the leases of allowed calls the
//! sidecar granted (a `lease` obligation). A request the table denies, that a cached decision
//! answers, or that a lease still covers, is decided here; everything else goes to the sidecar.
//! All are keyed to the bundle digest: when the polled digest changes, or a decision comes back
//! under another digest, the cache and the leases are dropped and the new table replaces the old
//! one. A failed poll keeps what is held; a worker that never got a table decides nothing from it.
//!
//! A decision is cached only when the policy says it may be (`cacheSeconds`) and it has nothing
//! left for anyone to do: an allow that consumes budget, redacts, or used an approval, and a
//! denial that asks for a step-up or an approval, always go back to the sidecar.
//!
//! A lease is the sidecar's: it reserved the budget of `calls` more calls when it allowed the
//! leased one. The worker allows up to that many calls with the same key within `seconds`, each
//! reported like any budgeted call (its response bytes), and gives back what it did not use when
//! the lease expires, is dropped, or runs out of its response bytes ([`InlinePolicy::take_returns`]).
//! [`DecisionTable`]: behavry_core::decision_table::DecisionTable

use std::collections::{BTreeMap, HashMap};

use behavry_core::decision_table::PolicyTable;
use behavry_core::wire::{AgentIdentity, DecisionResponse, RequestFacts, UsageReport};

/// Where a decision made in the filter came from, as audited (`decidedBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalSource {
    /// The bundle's published table.
    Table,
    /// A cached sidecar decision.
    Cache,
    /// A lease of allowed calls granted by the sidecar.
    Lease,
    /// The proxy's own rule, whatever policy says (a task another agent created).
    Proxy,
}

impl LocalSource {
    /// The audit name.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalSource::Table => "table",
            LocalSource::Cache => "cache",
            LocalSource::Lease => "lease",
            LocalSource::Proxy => "proxy",
        }
    }
}

#[derive(Debug, Clone)]
struct Cached {
    decision: DecisionResponse,
    expires_at_ms: u64,
}

/// What is left of a lease.
#[derive(Debug, Clone)]
struct Held {
    /// The leased decision, without its `lease` obligation (a leased call grants no lease).
    decision: DecisionResponse,
    calls_left: u32,
    expires_at_ms: u64,
    max_argument_bytes: Option<u64>,
    max_argument_chars: BTreeMap<String, u64>,
    /// Response bytes the lease's calls may still return before it ends.
    response_bytes_left: Option<u64>,
    owner: AgentIdentity,
    reserved_at_ms: u64,
}

impl Held {
    /// Whether the call's arguments are within what the proxy keeps for the lease: their size as
    /// measured for policy (`argumentsBytes`), and the length of each limited argument it sends.
    fn covers_arguments(&self, facts: &RequestFacts) -> bool {
        let size_ok = match (self.max_argument_bytes, facts.arguments_bytes) {
            (None, _) => true,
            (Some(max), Some(bytes)) => bytes <= max,
            // Arguments whose size is unknown are not covered.
            (Some(_), None) => facts.arguments.is_none(),
        };
        size_ok
            && self.max_argument_chars.iter().all(|(name, max)| {
                match facts.arguments.as_ref().and_then(|a| a.get(name)) {
                    None => true,
                    Some(serde_json::Value::String(text)) => {
                        u64::try_from(text.chars().count()).is_ok_and(|n| n <= *max)
                    }
                    // A rule on a string: anything else is the policy's to refuse.
                    Some(_) => false,
                }
            })
    }

    /// The report that gives back what was not used, if anything.
    fn unused(self) -> Option<UsageReport> {
        (self.calls_left > 0).then(|| UsageReport {
            agent: self.owner,
            unused_calls: u64::from(self.calls_left),
            reserved_at_ms: Some(self.reserved_at_ms),
            ..UsageReport::default()
        })
    }
}

/// One worker's table, decision cache and leases.
#[derive(Debug, Default)]
pub struct InlinePolicy {
    published: Option<PolicyTable>,
    cache: HashMap<String, Cached>,
    leases: HashMap<String, Held>,
    /// Unused calls of ended leases, to report to the sidecar.
    returns: Vec<UsageReport>,
    max_entries: usize,
}

impl InlinePolicy {
    /// Nothing known yet; at most `max_entries` cached decisions, and as many leases.
    pub fn new(max_entries: usize) -> InlinePolicy {
        InlinePolicy {
            max_entries,
            ..InlinePolicy::default()
        }
    }

    /// The digest of the bundle the table and cache belong to.
    pub fn digest(&self) -> Option<&str> {
        self.published.as_ref().map(|p| p.bundle_digest.as_str())
    }

    /// Take a polled table. Returns whether the bundle changed (then the cache and the leases
    /// were dropped).
    pub fn update(&mut self, published: PolicyTable) -> bool {
        let changed = self.digest() != Some(published.bundle_digest.as_str());
        if changed {
            self.drop_all();
        }
        self.published = Some(published);
        changed
    }

    /// The decision for `key` (see [`crate::exchange::Exchange::decision_key`]) of `agent`
    /// asking `facts`, if the table, the cache or a lease has one at `now_ms`. A lease that
    /// answers counts one call used.
    pub fn decide(
        &mut self,
        key: &str,
        agent: &str,
        facts: &RequestFacts,
        now_ms: u64,
    ) -> Option<(DecisionResponse, LocalSource)> {
        if let Some(decided) = self.decide_from_table(agent, facts) {
            return Some(decided);
        }
        match self.cache.get(key) {
            Some(cached) if cached.expires_at_ms > now_ms => {
                return Some((cached.decision.clone(), LocalSource::Cache));
            }
            Some(_) => {
                self.cache.remove(key);
            }
            None => {}
        }
        let held = self.leases.get_mut(key)?;
        if held.expires_at_ms <= now_ms {
            self.end_lease(key);
            return None;
        }
        // Arguments the lease does not cover are the sidecar's to decide (the argument-size
        // limit, length limits); the lease stays for the next call.
        if !held.covers_arguments(facts) {
            return None;
        }
        held.calls_left = held.calls_left.saturating_sub(1);
        let decision = held.decision.clone();
        if held.calls_left == 0 {
            self.leases.remove(key);
        }
        Some((decision, LocalSource::Lease))
    }

    /// The published table's decision alone, for a request the cache and the leases must not
    /// answer (its decision may depend on more than its key: what the content scanners found).
    pub fn decide_from_table(
        &self,
        agent: &str,
        facts: &RequestFacts,
    ) -> Option<(DecisionResponse, LocalSource)> {
        let published = self.published.as_ref()?;
        let decision = published
            .table
            .as_ref()?
            .decide(agent, facts, &published.bundle_digest)?;
        Some((decision, LocalSource::Table))
    }

    /// Keep a sidecar decision for `key` when it may be reused: cached (`cacheSeconds`), or held
    /// as a lease (`lease`, reserved for `owner`). A decision under another bundle than the one
    /// held drops the cache and the leases and is not kept: it may be newer than the held table
    /// (the bundle changed before the next poll said so) or older (it was in flight during a
    /// poll); the next poll settles which bundle is in force. Until then the held table may still
    /// deny what a newer bundle grants, never the reverse.
    /// `key` and `owner` are only computed when the decision is kept.
    pub fn remember(
        &mut self,
        key: impl FnOnce() -> String,
        owner: impl FnOnce() -> AgentIdentity,
        decision: &DecisionResponse,
        now_ms: u64,
    ) {
        let other_bundle = self
            .digest()
            .is_some_and(|digest| digest != decision.bundle_digest);
        if other_bundle {
            self.drop_all();
        }
        if let Some(lease) = &decision.obligations.lease
            && let Some(reserved_at_ms) = lease.reserved_at_ms
        {
            // The sidecar reserved these calls: if the lease cannot be held, they go back.
            let mut leased = decision.clone();
            leased.obligations.lease = None;
            let held = Held {
                decision: leased,
                calls_left: lease.calls,
                expires_at_ms: now_ms.saturating_add(u64::from(lease.seconds).saturating_mul(1000)),
                max_argument_bytes: lease.max_argument_bytes,
                max_argument_chars: lease.max_argument_chars.clone(),
                response_bytes_left: lease.max_response_bytes,
                owner: owner(),
                reserved_at_ms,
            };
            if other_bundle || !decision.allow || self.max_entries == 0 || lease.seconds == 0 {
                self.returns.extend(held.unused());
                return;
            }
            if self.leases.len() >= self.max_entries {
                self.sweep(now_ms);
                if self.leases.len() >= self.max_entries {
                    self.end_all_leases();
                }
            }
            if let Some(replaced) = self.leases.insert(key(), held) {
                self.returns.extend(replaced.unused());
            }
            return;
        }
        let Some(seconds) = decision.obligations.cache_seconds.filter(|s| *s > 0) else {
            return;
        };
        if other_bundle {
            return;
        }
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

    /// Count the response bytes of a call under the lease of `key` (the leased call's too): a
    /// lease whose calls returned its share of the `bytes` budgets ends.
    pub fn count_response_bytes(&mut self, key: &str, bytes: u64) {
        let Some(held) = self.leases.get_mut(key) else {
            return;
        };
        if let Some(left) = &mut held.response_bytes_left {
            *left = left.saturating_sub(bytes);
            if *left == 0 {
                self.end_lease(key);
            }
        }
    }

    /// End the leases that expired by `now_ms` (their unused calls go back).
    pub fn sweep(&mut self, now_ms: u64) {
        let expired: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, held)| held.expires_at_ms <= now_ms)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.end_lease(&key);
        }
    }

    /// The reports of unused lease calls gathered so far, for the sidecar.
    pub fn take_returns(&mut self) -> Vec<UsageReport> {
        std::mem::take(&mut self.returns)
    }

    /// How many decisions are cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// How many leases are held.
    pub fn leased(&self) -> usize {
        self.leases.len()
    }

    fn end_lease(&mut self, key: &str) {
        if let Some(held) = self.leases.remove(key) {
            self.returns.extend(held.unused());
        }
    }

    /// End every lease (the worker goes away): their unused calls are in [`Self::take_returns`].
    pub fn end_all_leases(&mut self) {
        let ended: Vec<Held> = self.leases.drain().map(|(_, held)| held).collect();
        self.returns
            .extend(ended.into_iter().filter_map(Held::unused));
    }

    fn drop_all(&mut self) {
        self.cache.clear();
        self.end_all_leases();
    }
}

#[cfg(test)]
mod tests {
    use behavry_core::decision_table::DecisionTable;
    use behavry_core::wire::{BudgetConsumption, Lease, Obligations, Visibility};
    use serde_json::{Value, json};

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
            AgentIdentity::default,
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
        inline.remember(
            || "none".into(),
            AgentIdentity::default,
            &listing_allow("sha256:a", None),
            0,
        );
        let mut budgeted = listing_allow("sha256:a", Some(30));
        budgeted.obligations.budget = Some(BudgetConsumption::default());
        inline.remember(|| "budget".into(), AgentIdentity::default, &budgeted, 0);
        let mut step_up = listing_allow("sha256:a", Some(30));
        step_up.allow = false;
        step_up.obligations.visible = None;
        step_up.obligations.require_scope = Some("mcp:compute".into());
        inline.remember(|| "scope".into(), AgentIdentity::default, &step_up, 0);
        assert_eq!(inline.cached(), 0);
        step_up.obligations.require_scope = None;
        inline.remember(|| "deny".into(), AgentIdentity::default, &step_up, 0);
        assert_eq!(inline.cached(), 1);
    }

    #[test]
    fn a_new_bundle_drops_the_cache_and_the_old_table() {
        let mut inline = InlinePolicy::new(100);
        inline.update(published("sha256:a"));
        inline.remember(
            || "list".into(),
            AgentIdentity::default,
            &listing_allow("sha256:a", Some(30)),
            0,
        );
        assert!(
            !inline.update(published("sha256:a")),
            "same bundle: nothing changes"
        );
        assert_eq!(inline.cached(), 1);
        assert!(inline.update(published("sha256:b")));
        assert_eq!(inline.cached(), 0);

        // A decision under a bundle other than the polled one (newer or older): the cache is
        // dropped, the decision is not kept, the held digest and table stay until the next poll.
        inline.remember(
            || "list".into(),
            AgentIdentity::default,
            &listing_allow("sha256:b", Some(30)),
            0,
        );
        assert_eq!(inline.cached(), 1);
        inline.remember(
            || "other".into(),
            AgentIdentity::default,
            &listing_allow("sha256:a", Some(30)),
            0,
        );
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
            inline.remember(
                || format!("k{i}"),
                AgentIdentity::default,
                &listing_allow("sha256:a", Some(30)),
                0,
            );
            assert!(inline.cached() <= 3);
        }
        let mut off = InlinePolicy::new(0);
        off.remember(
            || "k".into(),
            AgentIdentity::default,
            &listing_allow("sha256:a", Some(30)),
            0,
        );
        assert_eq!(off.cached(), 0);
    }

    fn leased_allow(digest: &str, calls: u32, max_response_bytes: Option<u64>) -> DecisionResponse {
        DecisionResponse {
            allow: true,
            reasons: vec![],
            rule_ids: vec!["behavry.tools.granted".into()],
            bundle_digest: digest.into(),
            obligations: Obligations {
                budget: Some(BudgetConsumption {
                    calls: 1,
                    resources: vec!["everything/echo".into()],
                    ..BudgetConsumption::default()
                }),
                lease: Some(Lease {
                    calls,
                    seconds: 5,
                    max_argument_bytes: Some(1000),
                    max_argument_chars: BTreeMap::from([("message".to_owned(), 5)]),
                    max_response_bytes,
                    reserved_at_ms: Some(42),
                }),
                ..Obligations::default()
            },
            client_matches: None,
            approval: None,
        }
    }

    fn grant(inline: &mut InlinePolicy, key: &str, decision: &DecisionResponse, now_ms: u64) {
        inline.remember(|| key.to_owned(), owner, decision, now_ms);
    }

    fn owner() -> AgentIdentity {
        AgentIdentity {
            id: "dev".into(),
            delegation: vec!["helper".into()],
            ..AgentIdentity::default()
        }
    }

    fn returned(inline: &mut InlinePolicy) -> Vec<(u64, Option<u64>)> {
        inline
            .take_returns()
            .into_iter()
            .map(|report| {
                assert_eq!(report.agent, owner());
                assert_eq!(report.bytes, 0);
                (report.unused_calls, report.reserved_at_ms)
            })
            .collect()
    }

    #[test]
    fn a_lease_allows_its_calls_then_goes_back_to_the_sidecar() {
        let mut inline = InlinePolicy::new(100);
        inline.update(published("sha256:a"));
        let echo = facts("tools/call", Some("echo"));
        grant(
            &mut inline,
            "echo",
            &leased_allow("sha256:a", 3, None),
            1_000,
        );
        assert_eq!(inline.leased(), 1);
        for _ in 0..3 {
            let (decision, source) = inline.decide("echo", "dev", &echo, 2_000).unwrap();
            assert_eq!(source, LocalSource::Lease);
            assert!(decision.allow);
            // Each leased call is counted (its bytes reported) but grants no lease itself.
            assert_eq!(decision.obligations.budget.as_ref().unwrap().calls, 1);
            assert_eq!(decision.obligations.lease, None);
        }
        // Used up: the next call is asked, and nothing is left to give back.
        assert!(inline.decide("echo", "dev", &echo, 2_000).is_none());
        assert_eq!(inline.leased(), 0);
        assert!(returned(&mut inline).is_empty());
        // Another key is not covered.
        grant(
            &mut inline,
            "echo",
            &leased_allow("sha256:a", 3, None),
            1_000,
        );
        assert!(inline.decide("other", "dev", &echo, 2_000).is_none());
    }

    #[test]
    fn arguments_beyond_the_lease_limits_are_asked_and_the_lease_stays() {
        let mut inline = InlinePolicy::new(100);
        inline.update(published("sha256:a"));
        grant(&mut inline, "echo", &leased_allow("sha256:a", 10, None), 0);
        let call = |arguments: Value, bytes: Option<u64>| RequestFacts {
            arguments: Some(arguments),
            arguments_bytes: bytes,
            ..facts("tools/call", Some("echo"))
        };
        let mut decide = |facts: RequestFacts| inline.decide("echo", "dev", &facts, 1).is_some();
        // Within both limits (five characters, not bytes: "héllo" is six bytes).
        assert!(decide(call(json!({"message": "héllo"}), Some(20))));
        assert!(decide(call(json!({"other": "anything at all"}), Some(30))));
        // Too large, size unknown, too long, or not a string: the sidecar decides.
        assert!(!decide(call(json!({"message": "hi"}), Some(1_001))));
        assert!(!decide(call(json!({"message": "hi"}), None)));
        assert!(!decide(call(json!({"message": "hello!"}), Some(20))));
        assert!(!decide(call(json!({"message": 12345}), Some(20))));
        // No arguments at all are within any limit.
        assert!(decide(facts("tools/call", Some("echo"))));
        assert_eq!(inline.leased(), 1);
    }

    #[test]
    fn unused_calls_go_back_when_a_lease_ends() {
        let echo = facts("tools/call", Some("echo"));
        // Expired: found on the next call, or by the sweep.
        let mut inline = InlinePolicy::new(100);
        inline.update(published("sha256:a"));
        grant(
            &mut inline,
            "echo",
            &leased_allow("sha256:a", 5, None),
            1_000,
        );
        inline.decide("echo", "dev", &echo, 2_000).unwrap();
        assert!(inline.decide("echo", "dev", &echo, 6_000).is_none());
        assert_eq!(returned(&mut inline), [(4, Some(42))]);
        grant(
            &mut inline,
            "echo",
            &leased_allow("sha256:a", 5, None),
            1_000,
        );
        inline.sweep(5_999);
        assert_eq!(inline.leased(), 1);
        inline.sweep(6_000);
        assert_eq!(inline.leased(), 0);
        assert_eq!(returned(&mut inline), [(5, Some(42))]);

        // Replaced by a new lease for the same key, or dropped with a new bundle.
        grant(&mut inline, "echo", &leased_allow("sha256:a", 5, None), 0);
        grant(&mut inline, "echo", &leased_allow("sha256:a", 7, None), 0);
        assert_eq!(returned(&mut inline), [(5, Some(42))]);
        assert!(inline.update(published("sha256:b")));
        assert_eq!(returned(&mut inline), [(7, Some(42))]);
        assert_eq!(inline.leased(), 0);

        // Granted under another bundle than the one held: not kept, and given back at once with
        // the leases held.
        grant(&mut inline, "echo", &leased_allow("sha256:b", 2, None), 0);
        grant(&mut inline, "x", &leased_allow("sha256:c", 3, None), 0);
        assert_eq!(returned(&mut inline), [(2, Some(42)), (3, Some(42))]);
        assert_eq!(inline.leased(), 0);
    }

    #[test]
    fn a_lease_ends_when_its_calls_returned_their_bytes() {
        let mut inline = InlinePolicy::new(100);
        inline.update(published("sha256:a"));
        let echo = facts("tools/call", Some("echo"));
        inline.remember(
            || "echo".into(),
            owner,
            &leased_allow("sha256:a", 10, Some(5_000)),
            0,
        );
        inline.count_response_bytes("echo", 3_000);
        assert!(inline.decide("echo", "dev", &echo, 1).is_some());
        inline.count_response_bytes("echo", 2_000);
        assert!(inline.decide("echo", "dev", &echo, 1).is_none());
        assert_eq!(returned(&mut inline), [(9, Some(42))]);
        // Without a bytes share, bytes do not end it.
        grant(&mut inline, "echo", &leased_allow("sha256:a", 10, None), 0);
        inline.count_response_bytes("echo", u64::MAX);
        assert!(inline.decide("echo", "dev", &echo, 1).is_some());
    }

    #[test]
    fn leases_stay_bounded_and_a_full_worker_gives_back() {
        let mut inline = InlinePolicy::new(2);
        inline.update(published("sha256:a"));
        for i in 0..3 {
            grant(
                &mut inline,
                &format!("k{i}"),
                &leased_allow("sha256:a", 4, None),
                0,
            );
            assert!(inline.leased() <= 2);
        }
        assert_eq!(returned(&mut inline), [(4, Some(42)), (4, Some(42))]);
        let mut off = InlinePolicy::new(0);
        grant(&mut off, "k", &leased_allow("sha256:a", 4, None), 0);
        assert_eq!(off.leased(), 0);
        assert_eq!(returned(&mut off), [(4, Some(42))]);
    }
}
