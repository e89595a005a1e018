//! Cross-server flow: what servers returned to an agent, remembered by the proxy, so that a value
//! one server returned that shows up in the arguments of a call to another server, and a recent
//! answer flagged for prompt injection, are visible to policy (docs/injection.md, "Cross-server
//! flow").
//!
//! Only keyed hashes of DLP findings are kept (`behavry_core::dlp::FindingKey::hash`), never the
//! values: the same value hashes the same in an answer and in later arguments. The memory is per
//! agent (one MCP host talks to several servers with one identity), bounded, and forgets after
//! [`FLOW_TTL_MS`].

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::wire::ContentFinding;

/// How long an answer is remembered.
pub const FLOW_TTL_MS: u64 = 60 * 60 * 1000;
/// Most returned values remembered per agent.
pub const MAX_RETURNED: usize = 256;
/// Most flagged answers remembered per agent.
pub const MAX_INJECTION: usize = 16;

/// Keeps at most `max` of `items` (sorted oldest first), shared fairly between servers: each
/// server keeps its newest entries up to a quota, the quotas as even as the servers' counts
/// allow (a server with fewer entries than its share keeps them all and the rest is split
/// among the others; an odd leftover goes to servers in name order). So a server that returns a
/// flood of values (or of flagged answers) pushes out its own, not what the other servers
/// returned. Linear in the entries (and the servers' count, log of it).
fn evict_fairly<T>(items: &mut Vec<T>, max: usize, server_of: impl Fn(&T) -> &String) {
    if items.len() <= max {
        return;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items.iter() {
        *counts.entry(server_of(item).as_str()).or_default() += 1;
    }
    // The largest cap that fits: the sum of min(count, cap) over the servers is at most `max`.
    let fits = |cap: usize| counts.values().map(|c| (*c).min(cap)).sum::<usize>() <= max;
    let (mut low, mut high) = (0, counts.values().copied().max().unwrap_or(0));
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if fits(mid) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    let mut quota: BTreeMap<String, usize> = counts
        .iter()
        .map(|(server, count)| ((*server).to_owned(), (*count).min(low)))
        .collect();
    let mut leftover = max.saturating_sub(quota.values().sum());
    for (server, count) in &counts {
        if leftover == 0 {
            break;
        }
        if let Some(q) = quota.get_mut(*server)
            && *count > *q
        {
            *q += 1;
            leftover -= 1;
        }
    }
    // The newest entries of each server within its quota, in their order.
    let mut keep = vec![false; items.len()];
    for (index, item) in items.iter().enumerate().rev() {
        if let Some(q) = quota.get_mut(server_of(item).as_str())
            && *q > 0
        {
            *q -= 1;
            if let Some(slot) = keep.get_mut(index) {
                *slot = true;
            }
        }
    }
    let mut flags = keep.into_iter();
    items.retain(|_| flags.next().unwrap_or(false));
}

/// Where an answer came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowSource {
    /// The logical server.
    pub server: String,
    /// The tool called, when the answer was a tool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// A value a server returned (a DLP finding in an answer), by its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReturnedValue {
    /// The finding's keyed hash.
    pub hash: String,
    /// Detector id.
    pub detector: String,
    /// Who returned it.
    pub from: FlowSource,
    /// When (Unix milliseconds).
    pub at_ms: u64,
}

/// An answer the prompt-injection scanner flagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectionSeen {
    /// Who returned it.
    pub from: FlowSource,
    /// The verdict's score (0–100).
    pub score: u32,
    /// The rules that fired.
    pub rules: Vec<String>,
    /// When (Unix milliseconds).
    pub at_ms: u64,
}

/// What the proxy remembers of one agent's recent answers (Envoy shared data, per agent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowMemory {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returned: Vec<ReturnedValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injection: Vec<InjectionSeen>,
}

impl FlowMemory {
    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.returned.is_empty() && self.injection.is_empty()
    }

    /// Takes in what `newer` saw: what is older than [`FLOW_TTL_MS`] at `now_ms` is forgotten, a
    /// value returned again is kept once (the latest), and at most [`MAX_RETURNED`] values and
    /// [`MAX_INJECTION`] flagged answers stay, each bound [kept fairly](evict_fairly) between
    /// servers.
    pub fn merge(&mut self, newer: FlowMemory, now_ms: u64) {
        let fresh = |at_ms: u64| at_ms.saturating_add(FLOW_TTL_MS) > now_ms;
        // A value returned again is kept once, at its latest: the newer copy wins.
        // Keyed by reference: nothing is copied to compare.
        fn key(v: &ReturnedValue) -> (&str, &FlowSource) {
            (v.hash.as_str(), &v.from)
        }
        let mut keep = vec![false; newer.returned.len()];
        let mut seen = HashSet::new();
        for (flag, value) in keep.iter_mut().zip(&newer.returned).rev() {
            *flag = seen.insert(key(value));
        }
        drop(seen);
        let mut flags = keep.into_iter();
        let mut newest = newer.returned;
        newest.retain(|_| flags.next().unwrap_or(false));
        let replaced: HashSet<_> = newest.iter().map(key).collect();
        self.returned.retain(|old| !replaced.contains(&key(old)));
        drop(replaced);
        self.returned.extend(newest);
        self.returned.retain(|v| fresh(v.at_ms));
        self.returned.sort_by_key(|v| v.at_ms);
        evict_fairly(&mut self.returned, MAX_RETURNED, |v| &v.from.server);
        self.injection.extend(newer.injection);
        self.injection.retain(|i| fresh(i.at_ms));
        self.injection.sort_by_key(|i| i.at_ms);
        evict_fairly(&mut self.injection, MAX_INJECTION, |i| &i.from.server);
    }

    /// The flow facts of a call to `server` whose arguments hold `findings`: each finding whose
    /// value another server returned (within [`FLOW_TTL_MS`] of `now_ms`), and the flagged
    /// answers still remembered.
    pub fn facts_for(&self, server: &str, findings: &[ContentFinding], now_ms: u64) -> FlowFacts {
        let fresh = |at_ms: u64| at_ms.saturating_add(FLOW_TTL_MS) > now_ms;
        let findings = findings
            .iter()
            .filter_map(|finding| {
                let returned = self.returned.iter().rev().find(|v| {
                    v.hash == finding.hash && v.from.server != server && fresh(v.at_ms)
                })?;
                Some(FlowFinding {
                    detector: finding.detector.clone(),
                    severity: finding.severity,
                    pointer: finding.pointer.clone(),
                    from: returned.from.clone(),
                })
            })
            .collect();
        let injection = self
            .injection
            .iter()
            .filter(|i| fresh(i.at_ms))
            .cloned()
            .collect();
        FlowFacts {
            findings,
            injection,
        }
    }
}

/// Policy input `flow`: what reached this call from other servers' answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowFacts {
    /// Findings in the arguments whose values another server returned to the agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<FlowFinding>,
    /// The agent's recent answers that the prompt-injection scanner flagged, from any server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injection: Vec<InjectionSeen>,
}

impl FlowFacts {
    /// Whether there is nothing to tell policy.
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty() && self.injection.is_empty()
    }
}

/// A finding in a call's arguments whose value another server returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowFinding {
    /// Detector id.
    pub detector: String,
    /// The detector's severity.
    pub severity: crate::dlp::Severity,
    /// RFC 6901 pointer into the arguments.
    pub pointer: String,
    /// The server (and tool) that returned the value.
    pub from: FlowSource,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::dlp::Severity;

    fn source(server: &str) -> FlowSource {
        FlowSource {
            server: server.into(),
            tool: Some("read".into()),
        }
    }

    fn returned(hash: &str, server: &str, at_ms: u64) -> ReturnedValue {
        ReturnedValue {
            hash: hash.into(),
            detector: "email".into(),
            from: source(server),
            at_ms,
        }
    }

    fn finding(hash: &str) -> ContentFinding {
        ContentFinding {
            detector: "email".into(),
            severity: Severity::Medium,
            pointer: "/to".into(),
            hash: hash.into(),
        }
    }

    #[test]
    fn a_value_from_another_server_flows_one_from_the_same_server_does_not() {
        let mut memory = FlowMemory::default();
        memory.merge(
            FlowMemory {
                returned: vec![returned("h1", "crm", 1_000), returned("h2", "mail", 1_000)],
                injection: Vec::new(),
            },
            1_000,
        );
        let facts = memory.facts_for(
            "mail",
            &[finding("h1"), finding("h2"), finding("h3")],
            2_000,
        );
        assert_eq!(
            facts.findings,
            vec![FlowFinding {
                detector: "email".into(),
                severity: Severity::Medium,
                pointer: "/to".into(),
                from: source("crm"),
            }]
        );
        assert!(facts.injection.is_empty());
        // Forgotten after the TTL.
        assert!(
            memory
                .facts_for("mail", &[finding("h1")], 1_000 + FLOW_TTL_MS)
                .is_empty()
        );
    }

    #[test]
    fn memory_is_bounded_deduplicated_and_forgets() {
        let mut memory = FlowMemory::default();
        for i in 0..(MAX_RETURNED as u64 + 10) {
            memory.merge(
                FlowMemory {
                    returned: vec![returned(&format!("h{i}"), "crm", 10 + i)],
                    injection: vec![InjectionSeen {
                        from: source("web"),
                        score: 60,
                        rules: vec!["instruction_override".into()],
                        at_ms: 10 + i,
                    }],
                },
                10 + i,
            );
        }
        assert_eq!(memory.returned.len(), MAX_RETURNED);
        assert_eq!(memory.returned[0].hash, "h10");
        assert_eq!(memory.injection.len(), MAX_INJECTION);
        // The same value returned again is kept once, at its latest time.
        memory.merge(
            FlowMemory {
                returned: vec![returned("h10", "crm", 5_000)],
                injection: Vec::new(),
            },
            5_000,
        );
        assert_eq!(
            memory.returned.iter().filter(|v| v.hash == "h10").count(),
            1
        );
        assert_eq!(memory.returned.last().unwrap().at_ms, 5_000);
        // Twice in one answer: kept once, the later.
        memory.merge(
            FlowMemory {
                returned: vec![returned("h11", "crm", 4_998), returned("h11", "crm", 4_999)],
                injection: Vec::new(),
            },
            5_000,
        );
        let h11: Vec<u64> = memory
            .returned
            .iter()
            .filter(|v| v.hash == "h11")
            .map(|v| v.at_ms)
            .collect();
        assert_eq!(h11, [4_999]);
        // Everything old is dropped at the next merge.
        memory.merge(FlowMemory::default(), 5_000 + FLOW_TTL_MS);
        assert!(memory.is_empty());
        let text = serde_json::to_string(&FlowFacts::default()).unwrap();
        assert_eq!(text, "{}");
    }

    #[test]
    fn a_server_that_floods_the_memory_pushes_out_its_own_values() {
        let mut memory = FlowMemory::default();
        let crm: Vec<ReturnedValue> = (0..10)
            .map(|i| returned(&format!("c{i}"), "crm", 100 + i))
            .collect();
        memory.merge(
            FlowMemory {
                returned: crm,
                injection: Vec::new(),
            },
            200,
        );
        // Another server then returns more values than the memory holds, all newer.
        let flood: Vec<ReturnedValue> = (0..MAX_RETURNED as u64)
            .map(|i| returned(&format!("f{i}"), "web", 1_000 + i))
            .collect();
        memory.merge(
            FlowMemory {
                returned: flood,
                injection: Vec::new(),
            },
            2_000,
        );
        assert_eq!(memory.returned.len(), MAX_RETURNED);
        let from_crm = memory
            .returned
            .iter()
            .filter(|v| v.from.server == "crm")
            .count();
        assert_eq!(from_crm, 10, "the other server's values stay");
        // The flood kept its newest: its oldest went.
        assert!(memory.returned.iter().all(|v| v.hash != "f0"));
        assert!(
            memory
                .returned
                .iter()
                .any(|v| v.hash == format!("f{}", MAX_RETURNED - 1))
        );
        assert!(
            memory
                .facts_for("web", &[finding("c3")], 2_000)
                .findings
                .len()
                == 1
        );
        // Two servers over the bound share it: the larger gives way until they are even.
        let mut shared = FlowMemory::default();
        let both: Vec<ReturnedValue> = (0..MAX_RETURNED as u64)
            .flat_map(|i| {
                [
                    returned(&format!("a{i}"), "a", i),
                    returned(&format!("b{i}"), "b", i),
                ]
            })
            .collect();
        shared.merge(
            FlowMemory {
                returned: both,
                injection: Vec::new(),
            },
            1_000,
        );
        let count = |server: &str| {
            shared
                .returned
                .iter()
                .filter(|v| v.from.server == server)
                .count()
        };
        assert_eq!(
            (count("a"), count("b")),
            (MAX_RETURNED / 2, MAX_RETURNED / 2)
        );
    }
}
