//! Blast radius: the usage policy sees before a call, and what an allowed call consumes.
//!
//! Two subjects are counted: the agent the call is for (`agent:<id>`, the token's `sub`), which
//! every delegated call made for it counts against too — so a fleet of helpers acting for one
//! orchestrator shares the orchestrator's agent budget — and, for a delegated call, its exact
//! delegation chain (`chain:<JSON array of the subject and its actors>`), one budget per chain. Each subject has the four counters of
//! [`CounterKind`] in every configured window (`[blast_radius] windows`, label → seconds). Usage
//! is read before policy runs (input `counters.{agent, chain}[<window>][<counter>]`) and the
//! decision's `budget` obligation is recorded after an allow. Between the read and the record a
//! concurrent call can pass too: a limit may be overshot by the calls in flight at that moment.
//!
//! The counters live in memory (one sidecar) or in Redis (`[blast_radius.store] backend =
//! "redis"`, shared by every sidecar with the same prefix): [`crate::budget`].

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use behavry_core::wire::{AgentIdentity, BudgetConsumption};
use serde::Deserialize;

use crate::budget::{
    BudgetBackendConfig, BudgetError, BudgetStore, Consumption, CounterKey, CounterKind,
    CounterUpdate, Window,
};
use crate::policy::Counters;

/// The counters of each subject, in the order policy sees them.
const KINDS: [CounterKind; 4] = [
    CounterKind::Calls,
    CounterKind::Destructive,
    CounterKind::Resources,
    CounterKind::Bytes,
];

/// `[blast_radius]` of the sidecar config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlastRadiusConfig {
    /// Window label (as policy names it) → length in seconds. Default `1m` = 60, `1h` = 3600.
    #[serde(default = "default_windows")]
    pub windows: BTreeMap<String, u64>,
    /// Where the counters live. Default: memory.
    #[serde(default)]
    pub store: BudgetBackendConfig,
}

impl Default for BlastRadiusConfig {
    fn default() -> Self {
        BlastRadiusConfig {
            windows: default_windows(),
            store: BudgetBackendConfig::default(),
        }
    }
}

fn default_windows() -> BTreeMap<String, u64> {
    BTreeMap::from([("1m".to_owned(), 60), ("1h".to_owned(), 3600)])
}

impl BlastRadiusConfig {
    /// Check the windows and the store settings.
    pub fn validate(&self) -> Result<(), BudgetError> {
        for seconds in self.windows.values() {
            Window::from_secs(*seconds)?;
        }
        self.store.validate()
    }
}

/// Shards of the per-agent decision locks ([`BlastRadius::serialize`]).
const DECISION_LOCK_SHARDS: usize = 64;
/// How long after a lease's end its unused calls may still be given back (the proxy reports them
/// at its next timer tick; a report later than this is ignored and the calls stay counted).
pub const LEASE_REPORT_GRACE_MS: u64 = 60_000;
/// Most leases with calls outstanding that a sidecar keeps track of; past it, a new lease's
/// unused calls are not given back (they stay counted: budgets run early, never late).
pub const MAX_OUTSTANDING_LEASES: usize = 100_000;

/// The counters and their windows.
#[derive(Debug)]
pub struct BlastRadius {
    store: BudgetStore,
    windows: Vec<(String, Window)>,
    decision_locks: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
    outstanding: Mutex<HashMap<(String, u64), Outstanding>>,
}

/// How long a decision that may lease waits for its agent's fleet-wide turn (Redis counters)
/// before it is made without one (and without a lease). A turn is held for the few milliseconds
/// of one decision.
pub const FLEET_TURN_WAIT: Duration = Duration::from_millis(50);

/// An agent's decision turn, from [`BlastRadius::take_turn`]: end it with
/// [`DecisionTurn::end`] (dropped, it is released too, the fleet-wide part in the background).
#[derive(Debug)]
pub struct DecisionTurn<'a> {
    // Fields drop in order: the fleet-wide turn is let go before the local lock.
    fleet: crate::budget::Turn,
    _local: tokio::sync::MutexGuard<'a, ()>,
}

impl DecisionTurn<'_> {
    /// Whether no other decision for the agent can run meanwhile, here or (Redis) in another
    /// sidecar, until the counters are written: only then may the decision reserve a lease.
    pub fn exclusive(&self) -> bool {
        match &self.fleet {
            crate::budget::Turn::Local => true,
            crate::budget::Turn::Fleet(turn) => turn.still_held(),
            crate::budget::Turn::Unavailable => false,
        }
    }

    /// Release the turn now: the fleet-wide part first (awaited, so the agent's next decision
    /// finds it free), then the local lock.
    pub async fn end(self) {
        let DecisionTurn { fleet, _local } = self;
        if let crate::budget::Turn::Fleet(turn) = fleet {
            turn.end().await;
        }
    }
}

/// The calls of a lease this sidecar granted that may still be given back.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    calls: u64,
    until_ms: u64,
}

impl BlastRadius {
    /// Open the configured store (for Redis: connect, bounded by its connect timeout).
    pub async fn open(config: &BlastRadiusConfig) -> Result<BlastRadius, BudgetError> {
        config.validate()?;
        Ok(BlastRadius {
            store: config.store.open().await?,
            windows: windows_of(config)?,
            decision_locks: (0..DECISION_LOCK_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: RandomState::new(),
            outstanding: Mutex::new(HashMap::new()),
        })
    }

    /// Take the agent's decision turn, held from reading its usage to recording what the
    /// decision consumes: with Redis counters and `for_lease`, first its turn among every
    /// sidecar sharing them (waiting up to [`FLEET_TURN_WAIT`], before the local lock so that
    /// waiting never holds up other agents here), then its lock in this sidecar (one of
    /// [`DECISION_LOCK_SHARDS`], by agent id). Decisions for one agent that hold the turn see
    /// each other's consumption, leases included, so they cannot together go over a limit; a
    /// decision without the fleet-wide turn is still made and counted, but grants no lease.
    #[allow(
        clippy::indexing_slicing,
        reason = "the index is reduced modulo the length, which is DECISION_LOCK_SHARDS > 0"
    )]
    pub async fn take_turn(&self, agent: &AgentIdentity, for_lease: bool) -> DecisionTurn<'_> {
        let fleet = if for_lease {
            self.store.take_turn(&agent.id, FLEET_TURN_WAIT).await
        } else {
            crate::budget::Turn::Unavailable
        };
        let hash = self.hasher.hash_one(&agent.id);
        let shard = usize::try_from(hash % DECISION_LOCK_SHARDS as u64).unwrap_or_default();
        let local = self.decision_locks[shard % self.decision_locks.len()]
            .lock()
            .await;
        DecisionTurn {
            fleet,
            _local: local,
        }
    }

    /// Note a lease of `calls` reserved at `reserved_at_ms` for `seconds`: at most that many
    /// calls of it may be given back, until [`LEASE_REPORT_GRACE_MS`] after it ends.
    pub fn lease_granted(
        &self,
        agent: &AgentIdentity,
        calls: u64,
        reserved_at_ms: u64,
        seconds: u32,
    ) {
        let until_ms = reserved_at_ms
            .saturating_add(u64::from(seconds).saturating_mul(1000))
            .saturating_add(LEASE_REPORT_GRACE_MS);
        let mut outstanding = self
            .outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if outstanding.len() >= MAX_OUTSTANDING_LEASES {
            outstanding.retain(|_, lease| lease.until_ms > reserved_at_ms);
            if outstanding.len() >= MAX_OUTSTANDING_LEASES {
                return;
            }
        }
        let entry = outstanding
            .entry((lease_owner(agent), reserved_at_ms))
            .or_insert(Outstanding { calls: 0, until_ms });
        entry.calls = entry.calls.saturating_add(calls);
        entry.until_ms = entry.until_ms.max(until_ms);
    }

    /// How many of `calls` may be given back for the lease of `agent` reserved at
    /// `reserved_at_ms`: no more than this sidecar granted and has not had back, and nothing
    /// after the grace period (a report cannot give back what was never reserved).
    fn take_outstanding(
        &self,
        agent: &AgentIdentity,
        calls: u64,
        reserved_at_ms: u64,
        now_ms: u64,
    ) -> u64 {
        let mut outstanding = self
            .outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (lease_owner(agent), reserved_at_ms);
        let Some(lease) = outstanding.get_mut(&key) else {
            return 0;
        };
        if lease.until_ms < now_ms {
            outstanding.remove(&key);
            return 0;
        }
        let taken = calls.min(lease.calls);
        lease.calls -= taken;
        if lease.calls == 0 {
            outstanding.remove(&key);
        }
        taken
    }

    /// The window labels, as policy names them.
    pub fn window_labels(&self) -> Vec<String> {
        self.windows
            .iter()
            .map(|(label, _)| label.clone())
            .collect()
    }

    /// The store's backend (`memory` or `redis`), for logs.
    pub fn backend_name(&self) -> &'static str {
        self.store.backend_name()
    }

    /// Usage of every counter of the agent (and of its chain, when delegated) before a call.
    pub async fn usage(
        &self,
        agent: &AgentIdentity,
        now: SystemTime,
    ) -> Result<Counters, BudgetError> {
        let mut labels = Vec::new();
        let mut keys = Vec::new();
        for (scope, subject) in subjects(agent) {
            for (window_label, window) in &self.windows {
                for kind in KINDS {
                    labels.push((scope, window_label.clone(), kind));
                    keys.push(CounterKey::new(subject.clone(), kind, *window));
                }
            }
        }
        let values = self.store.usage(&keys, now).await?;
        let mut counters = Counters::new();
        for ((scope, window, kind), value) in labels.into_iter().zip(values) {
            counters
                .entry(scope.to_owned())
                .or_default()
                .entry(window)
                .or_default()
                .insert(kind.as_str().to_owned(), value);
        }
        Ok(counters)
    }

    /// Record what an allowed call consumes, for the agent and its chain, in every window.
    pub async fn consume(
        &self,
        agent: &AgentIdentity,
        consumption: &BudgetConsumption,
        now: SystemTime,
    ) -> Result<(), BudgetError> {
        let mut updates = Vec::new();
        for (_, subject) in subjects(agent) {
            for (_, window) in &self.windows {
                let key = |kind| CounterKey::new(subject.clone(), kind, *window);
                if consumption.calls > 0 {
                    updates.push(CounterUpdate::new(
                        key(CounterKind::Calls),
                        Consumption::Add(consumption.calls),
                    ));
                }
                if consumption.destructive > 0 {
                    updates.push(CounterUpdate::new(
                        key(CounterKind::Destructive),
                        Consumption::Add(consumption.destructive),
                    ));
                }
                if consumption.bytes > 0 {
                    updates.push(CounterUpdate::new(
                        key(CounterKind::Bytes),
                        Consumption::Add(consumption.bytes),
                    ));
                }
                for resource in &consumption.resources {
                    updates.push(CounterUpdate::new(
                        key(CounterKind::Resources),
                        Consumption::Touch(resource.clone()),
                    ));
                }
            }
        }
        if updates.is_empty() {
            return Ok(());
        }
        self.store.consume(&updates, now).await
    }

    /// Give back `calls` unused calls of a lease reserved at `reserved_at`, for the agent and its
    /// chain, in every window (docs/policy.md, "Leases"): at most what this sidecar granted for
    /// that lease and has not had back.
    pub async fn release_calls(
        &self,
        agent: &AgentIdentity,
        calls: u64,
        reserved_at: SystemTime,
        now: SystemTime,
    ) -> Result<(), BudgetError> {
        let calls = self.take_outstanding(agent, calls, unix_ms(reserved_at), unix_ms(now));
        if calls == 0 {
            return Ok(());
        }
        let keys: Vec<CounterKey> = subjects(agent)
            .into_iter()
            .flat_map(|(_, subject)| {
                self.windows.iter().map(move |(_, window)| {
                    CounterKey::new(subject.clone(), CounterKind::Calls, *window)
                })
            })
            .collect();
        self.store.release(&keys, calls, reserved_at, now).await
    }
}

/// Whose lease it is: the agent and its delegation chain (as counted).
fn lease_owner(agent: &AgentIdentity) -> String {
    subjects(agent)
        .into_iter()
        .map(|(_, subject)| subject)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

fn windows_of(config: &BlastRadiusConfig) -> Result<Vec<(String, Window)>, BudgetError> {
    config
        .windows
        .iter()
        .map(|(label, seconds)| Ok((label.clone(), Window::from_secs(*seconds)?)))
        .collect()
}

/// The counted subjects of a call: `("agent", "agent:<id>")`, and `("chain", "chain:[...]")`
/// when the call is delegated. The chain is written as a JSON array so no agent id can make two
/// chains look the same.
fn subjects(agent: &AgentIdentity) -> Vec<(&'static str, String)> {
    let mut subjects = vec![("agent", format!("agent:{}", agent.id))];
    if !agent.delegation.is_empty() {
        let chain: Vec<&str> = std::iter::once(agent.id.as_str())
            .chain(agent.delegation.iter().map(String::as_str))
            .collect();
        let encoded = serde_json::to_string(&chain).unwrap_or_default();
        subjects.push(("chain", format!("chain:{encoded}")));
    }
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, delegation: &[&str]) -> AgentIdentity {
        AgentIdentity {
            id: id.to_owned(),
            delegation: delegation.iter().map(|s| (*s).to_owned()).collect(),
            ..AgentIdentity::default()
        }
    }

    fn call(resource: &str, destructive: u64) -> BudgetConsumption {
        BudgetConsumption {
            calls: 1,
            destructive,
            resources: vec![resource.to_owned()],
            bytes: 0,
        }
    }

    #[tokio::test]
    async fn usage_counts_the_agent_and_its_chain_in_every_window() {
        let radius = BlastRadius::open(&BlastRadiusConfig::default())
            .await
            .unwrap();
        let now = SystemTime::now();
        let orchestrator = agent("orchestrator", &[]);
        let delegated = agent("orchestrator", &["helper-1"]);
        radius
            .consume(&orchestrator, &call("s/a", 0), now)
            .await
            .unwrap();
        radius
            .consume(&delegated, &call("s/a", 1), now)
            .await
            .unwrap();
        radius
            .consume(&delegated, &call("s/b", 0), now)
            .await
            .unwrap();

        let usage = radius.usage(&delegated, now).await.unwrap();
        for window in ["1m", "1h"] {
            assert_eq!(usage["agent"][window]["calls"], 3, "{usage:?}");
            assert_eq!(usage["agent"][window]["destructive"], 1);
            assert_eq!(usage["agent"][window]["resources"], 2);
            assert_eq!(usage["agent"][window]["bytes"], 0);
            assert_eq!(usage["chain"][window]["calls"], 2);
        }
        // An undelegated call has no chain.
        let own = radius.usage(&orchestrator, now).await.unwrap();
        assert!(!own.contains_key("chain"));
        // Another chain of the same agent is counted apart.
        let other = radius
            .usage(&agent("orchestrator", &["helper-2"]), now)
            .await
            .unwrap();
        assert_eq!(other["chain"]["1m"]["calls"], 0);
    }

    #[tokio::test]
    async fn the_short_window_forgets_first() {
        let radius = BlastRadius::open(&BlastRadiusConfig::default())
            .await
            .unwrap();
        let start = SystemTime::now();
        let who = agent("a", &[]);
        radius.consume(&who, &call("s/x", 0), start).await.unwrap();
        let later = start + Duration::from_secs(120);
        let usage = radius.usage(&who, later).await.unwrap();
        assert_eq!(usage["agent"]["1m"]["calls"], 0);
        assert_eq!(usage["agent"]["1h"]["calls"], 1);
    }

    #[tokio::test]
    async fn unused_lease_calls_come_back_for_agent_and_chain() {
        let radius = BlastRadius::open(&BlastRadiusConfig::default())
            .await
            .unwrap();
        let now = SystemTime::now();
        let who = agent("orchestrator", &["helper-1"]);
        let mut reserved = call("s/a", 0);
        reserved.calls = 9;
        radius.consume(&who, &reserved, now).await.unwrap();
        let at_ms = unix_ms(now);
        radius.lease_granted(&who, 8, at_ms, 5);
        radius.release_calls(&who, 6, now, now).await.unwrap();
        let calls = |usage: &Counters, expected: u64| {
            for scope in ["agent", "chain"] {
                for window in ["1m", "1h"] {
                    assert_eq!(usage[scope][window]["calls"], expected, "{usage:?}");
                    assert_eq!(usage[scope][window]["resources"], 1);
                }
            }
        };
        calls(&radius.usage(&who, now).await.unwrap(), 3);
        // No more than the lease had outstanding comes back, and only to its owner.
        radius.release_calls(&who, 6, now, now).await.unwrap();
        calls(&radius.usage(&who, now).await.unwrap(), 1);
        radius.release_calls(&who, 1, now, now).await.unwrap();
        calls(&radius.usage(&who, now).await.unwrap(), 1);
        radius.lease_granted(&who, 5, at_ms + 1, 5);
        let other_chain = agent("orchestrator", &["helper-2"]);
        let later = now + std::time::Duration::from_millis(1);
        radius
            .release_calls(&other_chain, 5, later, later)
            .await
            .unwrap();
        // A report after the lease's grace period gives nothing back.
        let too_late = later + std::time::Duration::from_millis(5_000 + LEASE_REPORT_GRACE_MS + 1);
        radius
            .release_calls(&who, 5, later, too_late)
            .await
            .unwrap();
        calls(&radius.usage(&who, now).await.unwrap(), 1);
    }

    #[test]
    fn chains_cannot_be_confused_by_separators_in_ids() {
        let a = subjects(&agent("a\",\"b", &["c"]));
        let b = subjects(&agent("a", &["b", "c"]));
        assert_ne!(a[1].1, b[1].1);
    }

    #[test]
    fn bad_windows_are_refused() {
        let config: BlastRadiusConfig = toml::from_str("windows = { \"0s\" = 0 }").unwrap();
        assert!(config.validate().is_err());
        let err = toml::from_str::<BlastRadiusConfig>("window = {}").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
