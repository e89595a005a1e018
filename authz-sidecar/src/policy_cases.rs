//! `behavry policy test`: decision cases written in YAML, run against a bundle.
//!
//! A case file (`<bundle>/tests/*.yaml`, docs/policy.md "Testing a bundle") holds the agents the
//! cases need, as the registry would hold them, and a list of cases: a decision input and the
//! expected decision.
//!
//! ```yaml
//! agents:
//!   - id: dev
//!     roles: [developer]
//! cases:
//!   - name: a developer may echo
//!     input:
//!       agent: {id: dev, scopes: [mcp]}
//!       request: {server: everything, method: tools/call, tool: echo}
//!     expect: {allow: true, ruleIds: [behavry.tools.granted]}
//! ```
//!
//! `input` is a decision request as the filter sends it (`traceId` optional) plus, optionally,
//! `counters` (blast-radius usage, merged over zeros for every window and counter) and `time`
//! (Unix seconds). `expect` must name `allow`; `reasons`, `ruleIds` and `obligations` are compared
//! when present (`obligations` member by member, `null` for a member that must be absent;
//! `obligations: {}` means none at all).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use behavry_core::wire::{
    AgentIdentity, DecisionRequest, DecisionResponse, RequestFacts, TaskFacts, ToolFacts,
};
use serde::Deserialize;
use serde_json::Value;

use crate::config::AgentEnrollment;
use crate::policy::{Counters, PolicyError, PolicyInput, PolicySource};

/// The folder of a bundle that holds its YAML cases.
pub const CASES_DIR: &str = "tests";
/// The trace id of a case that names none.
const CASE_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// Counters every case starts from (zero usage), merged with the case's own.
pub const COUNTER_NAMES: [&str; 4] = ["calls", "destructive", "resources", "bytes"];

/// Why cases could not be run (a failing case is an outcome, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// A case file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A case file is not valid YAML of the expected shape.
    #[error("invalid case file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its location.
        message: String,
    },
    /// The bundle does not load.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// One case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// Enrollments visible to policy at `data.behavry.agents`.
    #[serde(default)]
    pub agents: Vec<AgentEnrollment>,
    /// The cases, run in order.
    pub cases: Vec<Case>,
}

/// One case: an input and the decision expected for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows, printed with its outcome.
    pub name: String,
    /// The decision input.
    pub input: CaseInput,
    /// The expected decision.
    pub expect: Expectation,
}

/// A decision request plus what the sidecar adds.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaseInput {
    /// W3C trace id; a fixed one when absent.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The verified agent.
    pub agent: AgentIdentity,
    /// What is asked.
    pub request: RequestFacts,
    /// The tool as listed.
    #[serde(default)]
    pub tool: Option<ToolFacts>,
    /// The task a `tasks/*` request names, as the proxy recorded it.
    #[serde(default)]
    pub task: Option<TaskFacts>,
    /// What the proxy's content scanners found in the arguments (docs/dlp.md).
    #[serde(default)]
    pub findings: Vec<behavry_core::wire::ContentFinding>,
    /// What reached the call from other servers' answers (docs/injection.md).
    #[serde(default)]
    pub flow: behavry_core::flow::FlowFacts,
    /// The server blocked for a poisoned tool (docs/poisoning.md).
    #[serde(default)]
    pub server_poisoning: Option<behavry_core::wire::ServerPoisoning>,
    /// Blast-radius usage, over zeros.
    #[serde(default)]
    pub counters: Counters,
    /// Unix seconds of the decision; the epoch when absent.
    #[serde(default)]
    pub time: Option<u64>,
}

impl CaseInput {
    /// The decision request the case stands for.
    pub fn decision_request(&self) -> DecisionRequest {
        DecisionRequest {
            trace_id: self
                .trace_id
                .clone()
                .unwrap_or_else(|| CASE_TRACE_ID.to_owned()),
            agent: self.agent.clone(),
            request: self.request.clone(),
            tool: self.tool.clone(),
            task: self.task.clone(),
            holds_leases: false,
            findings: self.findings.clone(),
            flow: self.flow.clone(),
            server_poisoning: self.server_poisoning.clone(),
        }
    }
}

/// What the decision must be.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expectation {
    /// Allowed or not.
    pub allow: bool,
    /// The reasons, in order.
    #[serde(default)]
    pub reasons: Option<Vec<String>>,
    /// The rule ids, in order.
    #[serde(default)]
    pub rule_ids: Option<Vec<String>>,
    /// Obligations, member by member.
    #[serde(default)]
    pub obligations: Option<serde_json::Map<String, Value>>,
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseOutcome {
    /// `<file>: <case name>`.
    pub name: String,
    /// What differs from the expectation; empty when the case passed.
    pub mismatches: Vec<String>,
}

impl CaseOutcome {
    /// Whether the decision was the expected one.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Every `*.yaml` file of `<policy_dir>/tests`, sorted; none when there is no such folder.
pub fn case_files(policy_dir: &Path) -> Result<Vec<PathBuf>, CaseError> {
    let dir = policy_dir.join(CASES_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let read_err = |source| CaseError::Read {
        path: dir.clone(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let is_yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parse one case file.
pub fn read_case_file(path: &Path) -> Result<CaseFile, CaseError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaseError::Read {
        path: path.to_owned(),
        source,
    })?;
    yaml_serde::from_str(&text).map_err(|err| CaseError::Invalid {
        path: path.to_owned(),
        message: err.to_string(),
    })
}

/// Run the cases of `file` against the bundle in `policy_dir`, with the blast-radius windows
/// `windows` (labels) zeroed for every counter before each case's own usage is merged in.
pub fn run_case_file(
    policy_dir: &Path,
    file: &Path,
    windows: &[String],
) -> Result<Vec<CaseOutcome>, CaseError> {
    let cases = read_case_file(file)?;
    let bundle = PolicySource::load(policy_dir, Duration::from_secs(1))?
        .for_case_runs()
        .bundle(&cases.agents)?;
    let label = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut outcomes = Vec::with_capacity(cases.cases.len());
    for case in &cases.cases {
        let name = format!("{label}: {}", case.name);
        let (request, counters, now) = case_parts(case, windows);
        let enrollment = cases.agents.iter().find(|a| a.id == request.agent.id);
        let input = PolicyInput::new(&request, enrollment, &counters, now);
        let mismatches = match bundle.decide(&input) {
            Ok(decision) => compare(&case.expect, &decision),
            Err(err) => vec![format!("no decision: {err}")],
        };
        outcomes.push(CaseOutcome { name, mismatches });
    }
    Ok(outcomes)
}

/// What a case's input stands for: the decision request, the usage (over zeros for `windows`)
/// and the time.
pub fn case_parts(case: &Case, windows: &[String]) -> (DecisionRequest, Counters, SystemTime) {
    let request = case.input.decision_request();
    let counters = zero_counters(windows, &case.input.counters);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(case.input.time.unwrap_or(0));
    (request, counters, now)
}

/// Zero usage for `agent` and `chain` in every window and counter, overlaid with `usage`.
pub fn zero_counters(windows: &[String], usage: &Counters) -> Counters {
    let mut counters: Counters = ["agent", "chain"]
        .into_iter()
        .map(|scope| {
            let by_window = windows
                .iter()
                .map(|window| {
                    let zeros = COUNTER_NAMES
                        .into_iter()
                        .map(|counter| (counter.to_owned(), 0))
                        .collect::<BTreeMap<_, _>>();
                    (window.clone(), zeros)
                })
                .collect::<BTreeMap<_, _>>();
            (scope.to_owned(), by_window)
        })
        .collect();
    for (scope, by_window) in usage {
        for (window, by_counter) in by_window {
            for (counter, amount) in by_counter {
                counters
                    .entry(scope.clone())
                    .or_default()
                    .entry(window.clone())
                    .or_default()
                    .insert(counter.clone(), *amount);
            }
        }
    }
    counters
}

fn compare(expect: &Expectation, decision: &DecisionResponse) -> Vec<String> {
    let mut mismatches = Vec::new();
    let got = |value: &dyn std::fmt::Debug| format!("{value:?}");
    if expect.allow != decision.allow {
        mismatches.push(format!(
            "allow: expected {}, got {} (rules {:?}, reasons {:?})",
            expect.allow, decision.allow, decision.rule_ids, decision.reasons
        ));
    }
    if let Some(reasons) = &expect.reasons
        && reasons != &decision.reasons
    {
        mismatches.push(format!(
            "reasons: expected {reasons:?}, got {}",
            got(&decision.reasons)
        ));
    }
    if let Some(rule_ids) = &expect.rule_ids
        && rule_ids != &decision.rule_ids
    {
        mismatches.push(format!(
            "ruleIds: expected {rule_ids:?}, got {}",
            got(&decision.rule_ids)
        ));
    }
    if let Some(expected) = &expect.obligations {
        let actual = match serde_json::to_value(&decision.obligations) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        if expected.is_empty() && !actual.is_empty() {
            mismatches.push(format!(
                "obligations: expected none, got {}",
                Value::Object(actual.clone())
            ));
        }
        for (member, value) in expected {
            // `null` expects the member to be absent.
            if actual.get(member).unwrap_or(&Value::Null) != value {
                mismatches.push(format!(
                    "obligations.{member}: expected {value}, got {}",
                    actual.get(member).cloned().unwrap_or(Value::Null)
                ));
            }
        }
    }
    mismatches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::shipped_policy_dir;

    fn windows() -> Vec<String> {
        vec!["1m".to_owned(), "1h".to_owned()]
    }

    #[test]
    fn the_shipped_cases_all_pass() {
        let dir = shipped_policy_dir();
        let files = case_files(&dir).unwrap();
        assert!(!files.is_empty());
        let mut total = 0;
        let mut failed = Vec::new();
        for file in &files {
            for outcome in run_case_file(&dir, file, &windows()).unwrap() {
                total += 1;
                if !outcome.passed() {
                    failed.push(outcome);
                }
            }
        }
        assert!(total >= 40, "only {total} cases");
        assert!(failed.is_empty(), "failing cases: {failed:#?}");
    }

    /// The table the default bundle publishes decides, without the sidecar, only what the bundle
    /// decides the same way: for every case it has a decision for, the bundle denies with those
    /// rules (and the same reasons) and conceals alike.
    #[test]
    fn the_published_table_agrees_with_every_decision() {
        let dir = shipped_policy_dir();
        let mut inline = 0;
        for file in case_files(&dir).unwrap() {
            let cases = read_case_file(&file).unwrap();
            let bundle = PolicySource::load(&dir, Duration::from_secs(1))
                .unwrap()
                .bundle(&cases.agents)
                .unwrap();
            let published: behavry_core::decision_table::PolicyTable =
                serde_json::from_slice(&bundle.published_table()).unwrap();
            assert_eq!(published.bundle_digest, bundle.digest());
            let table = published
                .table
                .expect("the default bundle publishes a table");
            for case in &cases.cases {
                let Some(fast) =
                    table.decide(&case.input.agent.id, &case.input.request, bundle.digest())
                else {
                    continue;
                };
                inline += 1;
                let request = case.input.decision_request();
                let counters = zero_counters(&windows(), &case.input.counters);
                let enrollment = cases.agents.iter().find(|a| a.id == request.agent.id);
                let full = bundle
                    .decide(&PolicyInput::new(
                        &request,
                        enrollment,
                        &counters,
                        SystemTime::now(),
                    ))
                    .unwrap();
                assert!(
                    !full.allow,
                    "{}: the table denies, the bundle allows",
                    case.name
                );
                assert_eq!(
                    fast.obligations.conceal, full.obligations.conceal,
                    "{}",
                    case.name
                );
                for (rule, reason) in fast.rule_ids.iter().zip(&fast.reasons) {
                    let at = full.rule_ids.iter().position(|r| r == rule);
                    let at = at.unwrap_or_else(|| {
                        panic!("{}: {rule} not in {:?}", case.name, full.rule_ids)
                    });
                    assert_eq!(&full.reasons[at], reason, "{}", case.name);
                }
            }
        }
        assert!(inline >= 8, "only {inline} cases decided by the table");
    }

    #[test]
    fn a_wrong_expectation_fails_and_says_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cases.yaml");
        std::fs::write(
            &file,
            "agents:\n  - id: dev\n    roles: [developer]\ncases:\n  - name: wrong\n    input:\n      agent: {id: dev, scopes: [mcp]}\n      request: {server: everything, method: tools/call, tool: echo}\n    expect: {allow: false, ruleIds: [x], obligations: {conceal: true}}\n",
        )
        .unwrap();
        let outcomes = run_case_file(&shipped_policy_dir(), &file, &windows()).unwrap();
        assert_eq!(outcomes.len(), 1);
        let text = outcomes[0].mismatches.join("\n");
        assert!(text.contains("allow: expected false, got true"), "{text}");
        assert!(text.contains("ruleIds: expected [\"x\"]"), "{text}");
        assert!(
            text.contains("obligations.conceal: expected true, got null"),
            "{text}"
        );
    }

    #[test]
    fn a_malformed_case_file_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, "cases:\n  - name: x\n    input: {}\n").unwrap();
        let err = run_case_file(&shipped_policy_dir(), &file, &windows()).unwrap_err();
        assert!(matches!(err, CaseError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("bad.yaml"), "{err}");
    }

    #[test]
    fn case_usage_is_merged_over_zeros() {
        let usage: Counters =
            serde_json::from_value(serde_json::json!({"agent": {"1m": {"calls": 7}}})).unwrap();
        let counters = zero_counters(&windows(), &usage);
        assert_eq!(counters["agent"]["1m"]["calls"], 7);
        assert_eq!(counters["agent"]["1m"]["bytes"], 0);
        assert_eq!(counters["chain"]["1h"]["resources"], 0);
    }
}
