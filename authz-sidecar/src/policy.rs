//! Rego decisions with regorus: the policy bundle is loaded and checked at start (and on each
//! reload), compiled for regorus's Rego virtual machine, and each decision runs on a VM taken from
//! a pool (one per concurrent decision; the program and data are shared). A bundle the VM compiler
//! refuses (e.g. one using `with`), or whose start-up probe decides differently on the VM, is
//! evaluated by the interpreter instead: a clone of the warmed engine per decision. The
//! interpreter also runs the Rego tests ([`run_rego_tests`]).
//!
//! The VM does not run every Rego construct exactly like the interpreter: in regorus 0.14.1 a
//! body statement `x := <undefined>` does not make the body fail on the VM. The default bundle
//! binds values that may be undefined with `=` or checks them first (docs/policy.md), and its YAML
//! cases are run through both (`every_case_decides_the_same_on_the_vm_and_the_interpreter`).
//!
//! The bundle is in OPA's layout: every `.rego` file under the policy folder except `*_test.rego`
//! (tests are not served), and every `data.json` or `data.yaml` file, merged into `data` at the
//! path of its folder (`a/b/data.yaml` becomes `data.a.b`). The enabled agents of the registry are
//! put at `data.behavry.agents`. The files are read into a [`PolicySource`] at start and re-read
//! when the folder changes (hot reload: [`crate::directory::AgentDirectory::reload_policy`]); the
//! engine is rebuilt with new agent data whenever the registry changes. Each decision evaluates
//! [`DECISION_RULE`] with a [`PolicyInput`] (version [`POLICY_INPUT_VERSION`], docs/policy.md);
//! it must yield `{"allow": bool, "reasons": [string], "ruleIds": [string], "obligations": {...}}`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use behavry_core::decision_table::{DecisionTable, PolicyTable};
use behavry_core::wire::{
    DecisionRequest, DecisionResponse, Obligations, RequestFacts, TaskFacts, ToolFacts,
};
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::Program;
use regorus::rvm::vm::RegoVM;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{CompiledPolicy, Engine, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{AgentEnrollment, ServerGrant};

/// The rule evaluated for each decision.
pub const DECISION_RULE: &str = "data.behavry.authz.decision";
/// The bundle's decision table (optional), evaluated once per bundle and served to the filter.
pub const TABLE_RULE: &str = "data.behavry.authz.table";
/// Version of the input document policy sees (docs/policy.md); raised on any change that could
/// make a policy written for the previous version decide differently.
pub const POLICY_INPUT_VERSION: u32 = 1;
/// Data documents of the bundle, in any folder (OPA bundle layout).
pub const DATA_FILES: [&str; 2] = ["data.json", "data.yaml"];
/// Rego files with this suffix are tests: loaded by [`run_rego_tests`], never served.
pub const TEST_FILE_SUFFIX: &str = "_test.rego";
/// Rules whose name starts with this are Rego tests (the `opa test` convention).
pub const TEST_RULE_PREFIX: &str = "test_";
/// Domain separation of the bundle digest, so it cannot collide with another SHA-256 use.
const DIGEST_DOMAIN: &[u8] = b"behavry-policy-bundle-v1\n";
/// Work units between two checks of the evaluation clock.
const TIMER_CHECK_INTERVAL: NonZeroU32 = NonZeroU32::MIN.saturating_add(63);
/// Instructions one decision may run on the VM: a backstop against runaway loops only (the
/// default bundle needs a few hundred); the execution timer is the evaluation budget.
const VM_MAX_INSTRUCTIONS: usize = 10_000_000;

/// Why the bundle could not be loaded or a decision could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy file or folder could not be read.
    #[error("cannot read policy path {path}: {source}")]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The policy folder holds no `.rego` file.
    #[error("policy folder {0} holds no .rego file")]
    Empty(PathBuf),
    /// A policy file does not parse (the regorus message names line and column).
    #[error("invalid policy {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The regorus error.
        message: String,
    },
    /// A data document or the agent data could not be added.
    #[error("invalid policy data {origin}: {message}")]
    Data {
        /// Data file path or `agents`.
        origin: String,
        /// The error.
        message: String,
    },
    /// The bundle loads but the decision rule does not evaluate (missing, conflicting...).
    #[error("policy bundle does not evaluate {DECISION_RULE}: {0}")]
    Compile(String),
    /// Evaluation failed for one request (including the time budget running out).
    #[error("policy evaluation failed: {0}")]
    Eval(String),
    /// The decision rule produced something that is not a decision.
    #[error("{DECISION_RULE} is not a decision object: {0}")]
    BadDecision(String),
}

/// The decision document produced by the policy. Unknown members are refused: an obligation
/// nobody enforces must not pass for enforced.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyDecision {
    allow: bool,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    rule_ids: Vec<String>,
    #[serde(default)]
    obligations: Obligations,
}

/// Blast-radius usage before the call: scope (`agent`, `chain`) → window label (`1m`) → counter
/// (`calls`, `destructive`, `resources`, `bytes`) → amount.
pub type Counters = BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>;

/// The input document of one decision (docs/policy.md, version [`POLICY_INPUT_VERSION`]).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInput<'a> {
    /// [`POLICY_INPUT_VERSION`].
    pub version: u32,
    /// W3C trace id of the call.
    pub trace_id: &'a str,
    /// Who asks.
    pub agent: AgentFacts<'a>,
    /// What is asked.
    pub request: &'a RequestFacts,
    /// The called tool as its server listed it, when the proxy has seen the listing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<&'a ToolFacts>,
    /// The task a `tasks/*` request names, as the proxy recorded its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<&'a TaskFacts>,
    /// What the proxy's content scanners found in the request's arguments (docs/dlp.md).
    pub findings: &'a [behavry_core::wire::ContentFinding],
    /// What reached this call from the agent's recent answers (docs/injection.md).
    pub flow: &'a behavry_core::flow::FlowFacts,
    /// The server is blocked for a poisoned tool (docs/poisoning.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_poisoning: Option<&'a behavry_core::wire::ServerPoisoning>,
    /// Blast-radius usage before this call.
    pub counters: &'a Counters,
    /// A human approval of exactly this call, when one is approved and unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<&'a crate::approvals::ApprovalFacts>,
    /// When the decision is made.
    pub time: TimeFacts,
}

/// The agent as policy sees it: the verified token facts plus the registry's.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentFacts<'a> {
    /// Agent id (the token's `sub`).
    pub id: &'a str,
    /// Roles from the registry (empty when not enrolled).
    pub roles: &'a [String],
    /// Owner from the registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'a str>,
    /// Delegation chain: current actor first (RFC 8693 §4.1 `act`).
    pub delegation: &'a [String],
    /// The token's scopes.
    pub scopes: &'a [String],
    /// Whether the client fingerprint matches an enrolled client; absent without fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_matches: Option<bool>,
}

/// The time of the decision, UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeFacts {
    /// Seconds since the Unix epoch.
    pub unix: i64,
    /// RFC 3339, e.g. `2026-11-30T19:20:00Z`.
    pub rfc3339: String,
    /// `monday` ... `sunday`.
    pub weekday: String,
    /// Hour of the day, 0–23.
    pub hour: u8,
}

impl TimeFacts {
    /// The facts of `now` (before the epoch counts as the epoch).
    pub fn at(now: SystemTime) -> TimeFacts {
        let unix = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let moment = time::OffsetDateTime::from_unix_timestamp(unix)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        TimeFacts {
            unix,
            rfc3339: moment
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            weekday: moment.weekday().to_string().to_ascii_lowercase(),
            hour: moment.hour(),
        }
    }
}

impl<'a> PolicyInput<'a> {
    /// The input for `request` from an agent with this registry `enrollment` (none when not
    /// enrolled), with the given blast-radius usage, at `now`.
    pub fn new(
        request: &'a DecisionRequest,
        enrollment: Option<&'a AgentEnrollment>,
        counters: &'a Counters,
        now: SystemTime,
    ) -> PolicyInput<'a> {
        PolicyInput {
            version: POLICY_INPUT_VERSION,
            trace_id: &request.trace_id,
            agent: AgentFacts {
                id: &request.agent.id,
                roles: enrollment.map(|e| e.roles.as_slice()).unwrap_or_default(),
                owner: enrollment.and_then(|e| e.owner.as_deref()),
                delegation: &request.agent.delegation,
                scopes: &request.agent.scopes,
                client_matches: request.agent.client_matches,
            },
            request: &request.request,
            tool: request.tool.as_ref(),
            task: request.task.as_ref(),
            findings: &request.findings,
            flow: &request.flow,
            server_poisoning: request.server_poisoning.as_ref(),
            counters,
            approval: None,
            time: TimeFacts::at(now),
        }
    }
}

/// One file of the bundle, as hashed into the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BundleFile {
    /// Path relative to the policy folder, `/`-separated.
    relative_path: String,
    /// Where it was read from (for error messages).
    path: PathBuf,
    /// Its bytes.
    bytes: Vec<u8>,
}

/// What an agent may use, as policy sees it at `data.behavry.agents[<id>]`.
#[derive(Debug, Serialize)]
struct AgentPolicyData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    roles: &'a [String],
    scopes: &'a [String],
    servers: &'a BTreeMap<String, ServerGrant>,
}

/// The bundle's files, read and checked once at start; [`PolicySource::bundle`] builds a
/// [`PolicyBundle`] for a given set of agents.
#[derive(Debug, Clone)]
pub struct PolicySource {
    files: Vec<BundleFile>,
    decision_timeout: Duration,
    /// The bundle folder (its `tests/*.yaml` cases check the Rego VM in [`PolicyEngine::Auto`]).
    dir: PathBuf,
    engine: PolicyEngine,
    /// The bundle's decision case files (`tests/*.yaml`) as read with it: a change to them is a
    /// change of what the bundle is checked by.
    case_files: Vec<(PathBuf, Vec<u8>)>,
    /// Whether a case whose decision cannot be used refuses the bundle (not for
    /// `behavry policy test`, which reports it as that case's failure).
    refuse_unusable: bool,
    /// What the bundle's own decision cases say of these files, found once per set of files.
    case_check: std::sync::OnceLock<CaseCheck>,
}

/// What a bundle's own decision cases (`tests/*.yaml`) say of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CaseCheck {
    /// The first case whose decision this binary cannot use (no decision, an evaluation error, a
    /// decision it cannot read, a misplaced obligation): such a bundle is refused, since every
    /// call like that case would fail.
    unusable: Option<String>,
    /// Whether the Rego VM decides every case as the interpreter does (how many cases), or why
    /// not; only looked at under [`PolicyEngine::Auto`].
    vm: Result<usize, String>,
}

/// Which regorus evaluator decides (`policy_engine` in the sidecar config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyEngine {
    /// The Rego VM when the bundle's own decision cases (`tests/*.yaml`) all decide the same on
    /// the VM as on the interpreter, else the interpreter (the default).
    #[default]
    Auto,
    /// Always the interpreter (the reference evaluator).
    Interpreter,
    /// The VM whenever the bundle compiles for it and its start-up probe agrees, checked or not.
    Vm,
}

impl PolicySource {
    /// Read the bundle in `policy_dir`.
    pub fn load(
        policy_dir: &Path,
        decision_timeout: Duration,
    ) -> Result<PolicySource, PolicyError> {
        let case_files = crate::policy_cases::case_files(policy_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|path| {
                let bytes = std::fs::read(&path).unwrap_or_default();
                (path, bytes)
            })
            .collect();
        Ok(PolicySource {
            files: read_bundle_files(policy_dir, false)?,
            decision_timeout,
            dir: policy_dir.to_owned(),
            engine: PolicyEngine::Auto,
            case_files,
            refuse_unusable: true,
            case_check: std::sync::OnceLock::new(),
        })
    }

    /// Which evaluator this bundle asks for.
    pub fn engine(&self) -> PolicyEngine {
        self.engine
    }

    /// The same files, decided by `engine`.
    pub fn with_engine(mut self, engine: PolicyEngine) -> PolicySource {
        self.engine = engine;
        self.case_check = std::sync::OnceLock::new();
        self
    }

    /// The same files, loaded even when one of their cases gets an unusable decision: for
    /// running the cases themselves, which report it.
    pub fn for_case_runs(mut self) -> PolicySource {
        self.refuse_unusable = false;
        self
    }

    /// The bundle's cases run once per set of files (on the VM too under
    /// [`PolicyEngine::Auto`]).
    fn case_check(&self, timer: ExecutionTimerConfig) -> &CaseCheck {
        self.case_check
            .get_or_init(|| check_cases(&self.dir, &self.files, self.engine, timer))
    }

    /// Whether the VM may decide for this bundle, under its engine setting.
    fn vm_allowed(&self, timer: ExecutionTimerConfig) -> bool {
        match self.engine {
            PolicyEngine::Interpreter => false,
            PolicyEngine::Vm => true,
            PolicyEngine::Auto => match &self.case_check(timer).vm {
                Ok(_) => true,
                Err(why) => {
                    tracing::info!(reason = %why, "policy bundle decided by the interpreter");
                    false
                }
            },
        }
    }

    /// The budget of one evaluation, as given to [`PolicySource::load`].
    pub fn decision_timeout(&self) -> Duration {
        self.decision_timeout
    }

    /// Whether `other` holds the same files, byte for byte (paths and contents): a reload that
    /// finds the same files has nothing to do.
    pub fn same_files(&self, other: &PolicySource) -> bool {
        self.files.len() == other.files.len()
            && self
                .files
                .iter()
                .zip(&other.files)
                .all(|(a, b)| a.relative_path == b.relative_path && a.bytes == b.bytes)
            && self.case_files == other.case_files
    }

    /// The bundle with these agents' grants, checked: [`DECISION_RULE`] must evaluate.
    pub fn bundle(&self, agents: &[AgentEnrollment]) -> Result<PolicyBundle, PolicyError> {
        let agent_data = agent_data_json(agents)?;
        let digest = bundle_digest(&self.files, &agent_data);
        let mut engine = engine_with(&self.files, &agent_data)?;
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: self.decision_timeout,
            check_interval: TIMER_CHECK_INTERVAL,
        });
        // Evaluate once now: this makes regorus analyse the modules (the clones share that work)
        // and refuses a bundle without a usable decision rule at start instead of per request.
        engine.set_input(Value::new_object());
        let probe = engine
            .eval_rule(DECISION_RULE.to_owned())
            .map_err(|err| PolicyError::Compile(err.to_string()))?;
        let probe_decision =
            parse_decision(probe.clone()).map_err(|err| PolicyError::Compile(err.to_string()))?;
        let timer = ExecutionTimerConfig {
            limit: self.decision_timeout,
            check_interval: TIMER_CHECK_INTERVAL,
        };
        // The warm-up input alone misses decisions the bundle makes only for real requests.
        if self.refuse_unusable
            && let Some(why) = &self.case_check(timer).unusable
        {
            return Err(PolicyError::Compile(why.clone()));
        }
        let vm = match VmPool::compile(&engine, timer).and_then(|pool| {
            if self.vm_allowed(timer) {
                Ok(pool)
            } else {
                Err(PolicyError::Compile(
                    "the VM is not in use for this bundle".to_owned(),
                ))
            }
        }) {
            Ok(pool) => match pool.execute(Value::new_object()) {
                Ok(vm_probe) if vm_probe == probe => Some(Arc::new(pool)),
                Ok(vm_probe) => {
                    tracing::warn!(
                        interpreter = ?probe_decision,
                        vm = %vm_probe,
                        "the policy bundle decides differently on the Rego VM; using the interpreter"
                    );
                    None
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the policy bundle does not run on the Rego VM; using the interpreter");
                    None
                }
            },
            Err(err) => {
                if !matches!(&err, PolicyError::Compile(m) if m.starts_with("the VM is not in use"))
                {
                    tracing::warn!(error = %err, "the policy bundle does not compile for the Rego VM; using the interpreter");
                }
                None
            }
        };
        let table = decision_table(&engine, timer)?;
        let published = serde_json::to_vec(&PolicyTable {
            bundle_digest: digest.clone(),
            table,
        })
        .map_err(|err| PolicyError::Compile(err.to_string()))?;
        Ok(PolicyBundle {
            engine,
            vm,
            digest,
            published_table: Arc::new(published),
        })
    }
}

/// Runs the decision cases of the bundle in `dir` (its `tests/*.yaml`) as `engine_mode` would
/// decide them: each decision must be usable (on the VM under [`PolicyEngine::Vm`] when the
/// bundle compiles for it, else on the interpreter), and under [`PolicyEngine::Auto`] the VM
/// must decide every case as the interpreter does. A bundle without cases, or whose cases cannot
/// be read, has nothing to prove the VM by (and nothing found unusable).
fn check_cases(
    dir: &Path,
    files: &[BundleFile],
    engine_mode: PolicyEngine,
    timer: ExecutionTimerConfig,
) -> CaseCheck {
    use crate::policy_cases::{case_files, case_parts, read_case_file};
    let mut check = CaseCheck {
        unusable: None,
        vm: Err("the VM was not asked about".to_owned()),
    };
    let paths = match case_files(dir) {
        Ok(paths) if paths.is_empty() => {
            check.vm = Err(
                "the bundle has no decision cases (tests/*.yaml) to check the Rego VM by".into(),
            );
            return check;
        }
        Ok(paths) => paths,
        Err(err) => {
            tracing::warn!(error = %err, "the bundle's decision cases cannot be listed");
            check.vm = Err(err.to_string());
            return check;
        }
    };
    let windows: Vec<String> = crate::blast_radius::BlastRadiusConfig::default()
        .windows
        .into_keys()
        .collect();
    // Under `auto`: how many cases the VM decided as the interpreter did, or why it did not.
    let mut vm: Result<usize, String> = Ok(0);
    for path in paths {
        let cases = match read_case_file(&path) {
            Ok(cases) => cases,
            Err(err) => {
                tracing::warn!(error = %err, "a decision case file of the bundle cannot be read");
                check.vm = Err(err.to_string());
                return check;
            }
        };
        let mut engine = match agent_data_json(&cases.agents)
            .and_then(|agent_data| engine_with(files, &agent_data))
        {
            Ok(engine) => engine,
            Err(err) => {
                check.unusable = Some(format!("with the agents of {}: {err}", path.display()));
                return check;
            }
        };
        // Bounded like a decision, with room for a loaded machine at start: a case far over
        // the decision timeout would time out in service too, and must not hold up the load.
        engine.set_execution_timer_config(case_timer(timer));
        // Once before the clones below: they share regorus's analysis of the modules.
        engine.set_input(Value::new_object());
        let _warm = engine.eval_rule(DECISION_RULE.to_owned());
        let pool = match engine_mode {
            PolicyEngine::Vm => VmPool::compile(&engine, case_timer(timer)).ok(),
            PolicyEngine::Auto if vm.is_ok() => match VmPool::compile(&engine, case_timer(timer)) {
                Ok(pool) => Some(pool),
                Err(err) => {
                    vm = Err(err.to_string());
                    None
                }
            },
            PolicyEngine::Auto | PolicyEngine::Interpreter => None,
        };
        for case in &cases.cases {
            let (request, counters, now) = case_parts(case, &windows);
            let enrollment = cases.agents.iter().find(|a| a.id == request.agent.id);
            let input = match input_value(&PolicyInput::new(&request, enrollment, &counters, now)) {
                Ok(input) => input,
                Err(err) => {
                    check.unusable = Some(format!("case `{}`: {err}", case.name));
                    return check;
                }
            };
            let on_vm = pool
                .as_ref()
                .filter(|_| engine_mode == PolicyEngine::Vm || vm.is_ok())
                .map(|pool| pool.execute(input.clone()));
            let interpreted = (engine_mode != PolicyEngine::Vm || on_vm.is_none()).then(|| {
                let mut interpreter = engine.clone();
                interpreter.set_input(input);
                interpreter.eval_rule(DECISION_RULE.to_owned())
            });
            // What production would answer: the VM's under `vm`, else the interpreter's.
            let decided = match (engine_mode, &on_vm, &interpreted) {
                (PolicyEngine::Vm, Some(answer), _) => answer.as_ref().map_err(ToString::to_string),
                (_, _, Some(answer)) => answer.as_ref().map_err(ToString::to_string),
                _ => Err("no evaluator ran".to_owned()),
            };
            let unusable = match decided {
                Err(err) => Some(format!("does not evaluate: {err}")),
                Ok(value) => parse_decision(value.clone())
                    .err()
                    .map(|err| format!("gets a decision this sidecar cannot use: {err}")),
            };
            if let Some(why) = unusable {
                check.unusable = Some(format!("case `{}` of {} {why}", case.name, path.display()));
                return check;
            }
            if engine_mode == PolicyEngine::Auto
                && let (Some(on_vm), Some(Ok(expected)), Ok(checked)) =
                    (on_vm, interpreted, vm.as_mut())
            {
                match on_vm {
                    Ok(actual) if actual == expected => *checked += 1,
                    Ok(_) => {
                        vm = Err(format!(
                            "case `{}` of {} decides differently on the Rego VM",
                            case.name,
                            path.display()
                        ));
                    }
                    Err(err) => vm = Err(err.to_string()),
                }
            }
        }
    }
    if engine_mode == PolicyEngine::Auto {
        check.vm = vm;
    }
    check
}

/// The bound of one case's evaluation when a bundle is checked: 20 decision timeouts, at least
/// 1 s.
fn case_timer(decision: ExecutionTimerConfig) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit: decision
            .limit
            .saturating_mul(20)
            .max(Duration::from_secs(1)),
        check_interval: TIMER_CHECK_INTERVAL,
    }
}

/// The bundle compiled for the Rego VM, and the idle VMs that run it (a VM runs one evaluation
/// at a time; a decision takes one from the pool, or makes one, and puts it back).
struct VmPool {
    program: Arc<Program>,
    policy: CompiledPolicy,
    data: Value,
    timer: ExecutionTimerConfig,
    idle: Mutex<Vec<RegoVM>>,
}

impl std::fmt::Debug for VmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmPool")
            .field("entry_point", &DECISION_RULE)
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl VmPool {
    /// Compile [`DECISION_RULE`] of the engine's policies for the VM, with the engine's data.
    fn compile(engine: &Engine, timer: ExecutionTimerConfig) -> Result<VmPool, PolicyError> {
        let policy = engine
            .clone()
            .compile_with_entrypoint(&DECISION_RULE.into())
            .map_err(|err| PolicyError::Compile(err.to_string()))?;
        let program = Compiler::compile_from_policy(&policy, &[DECISION_RULE])
            .map_err(|err| PolicyError::Compile(err.to_string()))?;
        let pool = VmPool {
            program,
            policy,
            data: engine.get_data(),
            timer,
            idle: Mutex::new(Vec::new()),
        };
        // Check the data against the program once here, not on a first request.
        let vm = pool
            .new_vm()
            .map_err(|err| PolicyError::Compile(err.to_string()))?;
        pool.put_back(vm);
        Ok(pool)
    }

    fn new_vm(&self) -> Result<RegoVM, PolicyError> {
        let mut vm = RegoVM::new_with_policy(self.policy.clone());
        vm.load_program(Arc::clone(&self.program));
        vm.set_data(self.data.clone())
            .map_err(|err| PolicyError::Eval(err.to_string()))?;
        vm.set_max_instructions(VM_MAX_INSTRUCTIONS);
        vm.set_execution_timer_config(Some(self.timer));
        Ok(vm)
    }

    fn put_back(&self, vm: RegoVM) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(vm);
    }

    /// Evaluate [`DECISION_RULE`] for `input` on an idle VM (or a new one).
    fn execute(&self, input: Value) -> Result<Value, PolicyError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut vm = match idle {
            Some(vm) => vm,
            None => self.new_vm()?,
        };
        vm.set_input(input);
        let result = vm.execute();
        // Drop the input now rather than when the VM is next used.
        vm.set_input(Value::Undefined);
        self.put_back(vm);
        result.map_err(|err| PolicyError::Eval(err.to_string()))
    }
}

/// The loaded, checked policy bundle.
#[derive(Debug, Clone)]
pub struct PolicyBundle {
    engine: Engine,
    /// The bundle on the Rego VM; `None` when it runs on the interpreter only.
    vm: Option<Arc<VmPool>>,
    digest: String,
    /// The [`PolicyTable`] JSON served at `GET /v1/policy/table`.
    published_table: Arc<Vec<u8>>,
}

impl PolicyBundle {
    /// Load the bundle in `policy_dir` with the agents' grants, check that [`DECISION_RULE`]
    /// evaluates, and compute the digest. A bad bundle is an error naming the file.
    pub fn load(
        policy_dir: &Path,
        agents: &[AgentEnrollment],
        decision_timeout: Duration,
    ) -> Result<PolicyBundle, PolicyError> {
        PolicySource::load(policy_dir, decision_timeout)?.bundle(agents)
    }

    /// `sha256:<hex>` over the bundle files and the agent data.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The [`PolicyTable`] the filter polls, as JSON.
    pub fn published_table(&self) -> Arc<Vec<u8>> {
        Arc::clone(&self.published_table)
    }

    /// Whether decisions run on the Rego VM (else on the interpreter).
    pub fn uses_vm(&self) -> bool {
        self.vm.is_some()
    }

    /// Decide one request: on the Rego VM when the bundle runs there, else on the interpreter.
    pub fn decide(&self, input: &PolicyInput<'_>) -> Result<DecisionResponse, PolicyError> {
        let Some(vm) = &self.vm else {
            return self.decide_interpreted(input);
        };
        let result = vm.execute(input_value(input)?)?;
        self.response(parse_decision(result)?)
    }

    /// Decide one request with the regorus interpreter, whether or not the bundle runs on the
    /// VM (for comparisons and measurements).
    pub fn decide_interpreted(
        &self,
        input: &PolicyInput<'_>,
    ) -> Result<DecisionResponse, PolicyError> {
        let mut engine = self.engine.clone();
        engine.set_input(input_value(input)?);
        let result = engine
            .eval_rule(DECISION_RULE.to_owned())
            .map_err(|err| PolicyError::Eval(err.to_string()))?;
        self.response(parse_decision(result)?)
    }

    fn response(&self, decision: PolicyDecision) -> Result<DecisionResponse, PolicyError> {
        Ok(DecisionResponse {
            allow: decision.allow,
            reasons: decision.reasons,
            rule_ids: decision.rule_ids,
            bundle_digest: self.digest.clone(),
            obligations: decision.obligations,
            client_matches: None,
            approval: None,
        })
    }
}

/// The bundle's [`TABLE_RULE`], when it defines one. A table that does not read as a
/// [`DecisionTable`] refuses the bundle: the filter would otherwise decide from something else.
/// The table covers every agent's grants and is built once per bundle, not per request: it is
/// bounded like a bundle check ([`case_timer`]), not like one decision (a loaded machine took
/// 52 ms for it against a 50 ms decision timeout, and an agent change was refused).
fn decision_table(
    engine: &Engine,
    timer: ExecutionTimerConfig,
) -> Result<Option<DecisionTable>, PolicyError> {
    let mut engine = engine.clone();
    engine.set_execution_timer_config(case_timer(timer));
    engine.set_input(Value::new_object());
    // A query, not `eval_rule`: a bundle without the rule has no table (eval_rule would call
    // the missing rule an error).
    let results = engine
        .eval_query(TABLE_RULE.to_owned(), false)
        .map_err(|err| PolicyError::Compile(format!("{TABLE_RULE}: {err}")))?;
    let Some(value) = results
        .result
        .into_iter()
        .next()
        .and_then(|result| result.expressions.into_iter().next())
        .map(|expression| expression.value)
    else {
        return Ok(None);
    };
    let json = serde_json::to_value(&value)
        .map_err(|err| PolicyError::Compile(format!("{TABLE_RULE}: {err}")))?;
    serde_json::from_value(json)
        .map(Some)
        .map_err(|err| PolicyError::Compile(format!("{TABLE_RULE} is not a decision table: {err}")))
}

fn input_value(input: &PolicyInput<'_>) -> Result<Value, PolicyError> {
    serde_json::to_value(input)
        .map(Value::from)
        .map_err(|err| PolicyError::Eval(err.to_string()))
}

fn parse_decision(result: Value) -> Result<PolicyDecision, PolicyError> {
    if result == Value::Undefined {
        return Err(PolicyError::BadDecision("undefined".to_owned()));
    }
    let json =
        serde_json::to_value(&result).map_err(|err| PolicyError::BadDecision(err.to_string()))?;
    let decision: PolicyDecision =
        serde_json::from_value(json).map_err(|err| PolicyError::BadDecision(err.to_string()))?;
    check_obligations(&decision)?;
    Ok(decision)
}

/// Obligations that only make sense with one outcome are refused with the other: a policy that
/// asks to conceal an allowed call or to filter a denied listing is wrong, not half right.
fn check_obligations(decision: &PolicyDecision) -> Result<(), PolicyError> {
    let o = &decision.obligations;
    let misplaced = if decision.allow {
        vec![
            (o.conceal, "conceal"),
            (o.require_scope.is_some(), "requireScope"),
            (o.require_approval.is_some(), "requireApproval"),
            // The sidecar's own part of a lease, never the policy's.
            (
                o.lease.as_ref().is_some_and(|l| l.reserved_at_ms.is_some()),
                "lease.reservedAtMs",
            ),
        ]
    } else {
        vec![
            (o.budget.is_some(), "budget"),
            (!o.redact.is_empty(), "redact"),
            (o.visible.is_some(), "visible"),
            (o.lease.is_some(), "lease"),
            (o.dlp.is_some(), "dlp"),
            (o.poisoning.is_some(), "poisoning"),
            (o.pins.is_some(), "pins"),
            (o.injection.is_some(), "injection"),
        ]
    };
    match misplaced.iter().find(|(present, _)| *present) {
        Some((_, name)) => Err(PolicyError::BadDecision(format!(
            "obligation {name} does not apply to {}",
            if decision.allow {
                "an allow"
            } else {
                "a denial"
            }
        ))),
        None => Ok(()),
    }
}

/// Outcome of one Rego `test_` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoTestOutcome {
    /// Full rule path, e.g. `data.behavry.authz_test.test_unknown_agent_is_denied`.
    pub rule: String,
    /// Whether the rule evaluated to `true`.
    pub passed: bool,
    /// What it evaluated to instead, or the evaluation error.
    pub detail: Option<String>,
}

/// Run the Rego tests of the bundle in `policy_dir`: the bundle plus its `*_test.rego` files are
/// loaded, every rule named `test_*` in a test file is evaluated, and passes when it is `true`.
pub fn run_rego_tests(
    policy_dir: &Path,
    agents: &[AgentEnrollment],
) -> Result<Vec<RegoTestOutcome>, PolicyError> {
    let files = read_bundle_files(policy_dir, true)?;
    let agent_data = agent_data_json(agents)?;
    let engine = engine_with(&files, &agent_data)?;
    let mut outcomes = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.relative_path.ends_with(TEST_FILE_SUFFIX))
    {
        let text = String::from_utf8_lossy(&file.bytes);
        let Some(package) = package_path(&text) else {
            continue;
        };
        for name in test_rule_names(&text) {
            let rule = format!("data.{package}.{name}");
            let mut test_engine = engine.clone();
            let outcome = match test_engine.eval_rule(rule.clone()) {
                Ok(Value::Bool(true)) => RegoTestOutcome {
                    rule,
                    passed: true,
                    detail: None,
                },
                Ok(other) => RegoTestOutcome {
                    rule,
                    passed: false,
                    detail: Some(format!("evaluated to {other}")),
                },
                Err(err) => RegoTestOutcome {
                    rule,
                    passed: false,
                    detail: Some(err.to_string()),
                },
            };
            outcomes.push(outcome);
        }
    }
    Ok(outcomes)
}

/// The `package a.b.c` of a Rego module, from its first `package` line.
fn package_path(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("package "))
        .map(|rest| rest.trim().to_owned())
}

/// Names of the `test_` rules defined at the start of a line, each once, in file order.
fn test_rule_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(TEST_RULE_PREFIX) {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn engine_with(files: &[BundleFile], agent_data: &[u8]) -> Result<Engine, PolicyError> {
    let mut engine = Engine::new();
    for file in files {
        if let Some(data) = data_document(file)? {
            engine
                .add_data(Value::from(data))
                .map_err(|err| PolicyError::Data {
                    origin: file.path.display().to_string(),
                    message: err.to_string(),
                })?;
            continue;
        }
        let text = String::from_utf8(file.bytes.clone()).map_err(|err| PolicyError::Parse {
            path: file.path.clone(),
            message: err.to_string(),
        })?;
        engine
            .add_policy(file.path.display().to_string(), text)
            .map_err(|err| PolicyError::Parse {
                path: file.path.clone(),
                message: err.to_string(),
            })?;
    }
    engine
        .add_data(Value::from(agent_data_value(agent_data)?))
        .map_err(|err| PolicyError::Data {
            origin: "agents".to_owned(),
            message: err.to_string(),
        })?;
    Ok(engine)
}

/// The agents' grants as the JSON bytes of `{"behavry": {"agents": {...}}}`. Serialized from
/// `BTreeMap`s, so the bytes (and the digest) do not depend on map iteration order.
fn agent_data_json(agents: &[AgentEnrollment]) -> Result<Vec<u8>, PolicyError> {
    let by_id: BTreeMap<&str, AgentPolicyData<'_>> = agents
        .iter()
        .map(|agent| {
            (
                agent.id.as_str(),
                AgentPolicyData {
                    owner: agent.owner.as_deref(),
                    roles: &agent.roles,
                    scopes: &agent.scopes,
                    servers: &agent.servers,
                },
            )
        })
        .collect();
    let document = BTreeMap::from([("behavry", BTreeMap::from([("agents", by_id)]))]);
    serde_json::to_vec(&document).map_err(|err| PolicyError::Data {
        origin: "agents".to_owned(),
        message: err.to_string(),
    })
}

fn agent_data_value(agent_data: &[u8]) -> Result<serde_json::Value, PolicyError> {
    serde_json::from_slice(agent_data).map_err(|err| PolicyError::Data {
        origin: "agents".to_owned(),
        message: err.to_string(),
    })
}

/// `sha256:<hex>` of the domain tag, then each file (sorted by relative path) as
/// `len(path) path len(bytes) bytes` with 8-byte big-endian lengths (so no two bundles share an
/// encoding), then the agent data the same way.
fn bundle_digest(files: &[BundleFile], agent_data: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(DIGEST_DOMAIN);
    let mut put = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    for file in files {
        put(file.relative_path.as_bytes());
        put(&file.bytes);
    }
    put(b"agents");
    put(agent_data);
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// A data file's document placed at the path of its folder (OPA bundle layout: `a/b/data.yaml`
/// is `data.a.b`), or `None` when the file is Rego. The document must be an object.
fn data_document(file: &BundleFile) -> Result<Option<serde_json::Value>, PolicyError> {
    let (folder, name) = match file.relative_path.rsplit_once('/') {
        Some((folder, name)) => (folder, name),
        None => ("", file.relative_path.as_str()),
    };
    if !DATA_FILES.contains(&name) {
        return Ok(None);
    }
    let data_err = |message: String| PolicyError::Data {
        origin: file.path.display().to_string(),
        message,
    };
    let text = std::str::from_utf8(&file.bytes).map_err(|err| data_err(err.to_string()))?;
    let document: serde_json::Value = if name.ends_with(".yaml") {
        yaml_serde::from_str(text).map_err(|err| data_err(err.to_string()))?
    } else {
        serde_json::from_str(text).map_err(|err| data_err(err.to_string()))?
    };
    if !document.is_object() {
        return Err(data_err("the document is not an object".to_owned()));
    }
    let placed = folder
        .split('/')
        .filter(|segment| !segment.is_empty())
        .rev()
        .fold(document, |inner, segment| {
            serde_json::Value::Object(serde_json::Map::from_iter([(segment.to_owned(), inner)]))
        });
    Ok(Some(placed))
}

/// Every `.rego` file under `dir` (tests only when `include_tests`) and every data file, sorted
/// by relative path.
fn read_bundle_files(dir: &Path, include_tests: bool) -> Result<Vec<BundleFile>, PolicyError> {
    let mut files = Vec::new();
    collect_bundle_files(dir, dir, include_tests, &mut files)?;
    if !files.iter().any(|f| f.relative_path.ends_with(".rego")) {
        return Err(PolicyError::Empty(dir.to_owned()));
    }
    files.sort_by(|a, b| a.relative_path.cmp(&b.relative_path));
    Ok(files)
}

fn collect_bundle_files(
    root: &Path,
    dir: &Path,
    include_tests: bool,
    files: &mut Vec<BundleFile>,
) -> Result<(), PolicyError> {
    let read_err = |source| PolicyError::Read {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_dir() {
            collect_bundle_files(root, &path, include_tests, files)?;
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let is_test = name.ends_with(TEST_FILE_SUFFIX);
        if (name.ends_with(".rego") && (include_tests || !is_test)) || DATA_FILES.contains(&name) {
            files.push(read_file(root, &path)?);
        }
    }
    Ok(())
}

fn read_file(root: &Path, path: &Path) -> Result<BundleFile, PolicyError> {
    let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let relative = path.strip_prefix(root).unwrap_or(path);
    let relative_path = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    Ok(BundleFile {
        relative_path,
        path: path.to_owned(),
        bytes,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use behavry_core::wire::AgentIdentity;

    use super::*;

    pub(crate) fn shipped_policy_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
    }

    pub(crate) fn demo_agents() -> Vec<AgentEnrollment> {
        vec![AgentEnrollment {
            servers: BTreeMap::from([(
                "everything".to_owned(),
                ServerGrant {
                    tools: vec!["echo".to_owned(), "get-sum".to_owned()],
                    resources: vec!["test://static/resource/1".to_owned()],
                    prompts: vec![],
                },
            )]),
            ..AgentEnrollment::new("demo-agent")
        }]
    }

    const TIMEOUT: Duration = Duration::from_millis(500);

    /// Decide `request` as the sidecar would for an agent with no budget used.
    pub(crate) fn decide_plain(
        bundle: &PolicyBundle,
        request: &DecisionRequest,
    ) -> Result<DecisionResponse, PolicyError> {
        let windows = ["1m".to_owned(), "1h".to_owned()];
        let counters = crate::policy_cases::zero_counters(&windows, &Counters::new());
        bundle.decide(&PolicyInput::new(
            request,
            None,
            &counters,
            SystemTime::now(),
        ))
    }

    fn request(agent: &str, method: &str, facts: RequestFacts) -> DecisionRequest {
        DecisionRequest {
            trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(),
            agent: AgentIdentity {
                id: agent.to_owned(),
                ..AgentIdentity::default()
            },
            request: RequestFacts {
                server: "everything".to_owned(),
                method: method.to_owned(),
                ..facts
            },
            tool: None,
            task: None,
            holds_leases: false,
            findings: Vec::new(),
            flow: Default::default(),
            server_poisoning: None,
        }
    }

    fn tool(name: &str) -> RequestFacts {
        RequestFacts {
            tool: Some(name.to_owned()),
            ..RequestFacts::default()
        }
    }

    #[test]
    fn shipped_rego_tests_all_pass() {
        let cases =
            crate::policy_cases::read_case_file(&shipped_policy_dir().join("tests/default.yaml"))
                .unwrap();
        let outcomes = run_rego_tests(&shipped_policy_dir(), &cases.agents).unwrap();
        assert!(outcomes.len() >= 8, "found only {} tests", outcomes.len());
        let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
        assert!(failed.is_empty(), "failing Rego tests: {failed:#?}");
    }

    #[test]
    fn a_failing_rego_test_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            shipped_policy_dir().join("authz.rego"),
            dir.path().join("authz.rego"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("x_test.rego"),
            "package x_test\nimport rego.v1\ntest_passes if { 1 == 1 }\ntest_fails if { 1 == 2 }\n",
        )
        .unwrap();
        let outcomes = run_rego_tests(dir.path(), &[]).unwrap();
        let summary: Vec<_> = outcomes
            .iter()
            .map(|o| (o.rule.as_str(), o.passed))
            .collect();
        assert_eq!(
            summary,
            [
                ("data.x_test.test_passes", true),
                ("data.x_test.test_fails", false)
            ]
        );
    }

    #[test]
    fn a_scope_denial_names_the_scope_to_step_up_to() {
        let bundle = PolicyBundle::load(&shipped_policy_dir(), &demo_agents(), TIMEOUT).unwrap();
        let mut asked = request("demo-agent", "tools/call", tool("get-sum"));
        asked.agent.scopes = vec!["mcp".to_owned()];
        let denied = decide_plain(&bundle, &asked).unwrap();
        assert!(!denied.allow);
        assert_eq!(denied.rule_ids, ["behavry.scope.insufficient"]);
        assert_eq!(
            denied.obligations.require_scope.as_deref(),
            Some("mcp:compute")
        );

        asked.agent.scopes.push("mcp:compute".to_owned());
        let allowed = decide_plain(&bundle, &asked).unwrap();
        assert!(allowed.allow);
        assert_eq!(allowed.obligations.require_scope, None);
        // Other denials carry no scope.
        let other = decide_plain(
            &bundle,
            &request("demo-agent", "tools/call", tool("printEnv")),
        )
        .unwrap();
        assert_eq!(other.obligations.require_scope, None);
    }

    #[test]
    fn granted_tool_is_allowed_and_others_denied() {
        let bundle = PolicyBundle::load(&shipped_policy_dir(), &demo_agents(), TIMEOUT).unwrap();
        let allowed =
            decide_plain(&bundle, &request("demo-agent", "tools/call", tool("echo"))).unwrap();
        assert!(allowed.allow);
        assert_eq!(allowed.rule_ids, ["behavry.tools.granted"]);
        assert_eq!(allowed.bundle_digest, bundle.digest());

        let denied = decide_plain(
            &bundle,
            &request("demo-agent", "tools/call", tool("printEnv")),
        )
        .unwrap();
        assert!(!denied.allow);
        assert_eq!(
            denied.reasons,
            ["agent 'demo-agent' may not use tool 'printEnv' on server 'everything'"]
        );

        let stranger =
            decide_plain(&bundle, &request("intruder", "tools/call", tool("echo"))).unwrap();
        assert!(!stranger.allow);
        assert_eq!(stranger.reasons, ["agent 'intruder' is not enrolled"]);
        assert_eq!(stranger.rule_ids, ["behavry.agent.not_enrolled"]);

        let resource = decide_plain(
            &bundle,
            &request(
                "demo-agent",
                "resources/read",
                RequestFacts {
                    resource_uri: Some("test://static/resource/1".to_owned()),
                    ..RequestFacts::default()
                },
            ),
        )
        .unwrap();
        assert!(resource.allow);
    }

    #[test]
    fn digest_is_stable_and_covers_files_and_agents() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("authz.rego");
        std::fs::copy(shipped_policy_dir().join("authz.rego"), &policy).unwrap();
        let load = |agents: &[AgentEnrollment]| {
            PolicyBundle::load(dir.path(), agents, TIMEOUT)
                .unwrap()
                .digest()
                .to_owned()
        };
        let first = load(&demo_agents());
        assert!(
            first.starts_with("sha256:") && first.len() == 7 + 64,
            "{first}"
        );
        assert_eq!(first, load(&demo_agents()));
        assert_ne!(first, load(&[]));

        // Tests are not part of the served bundle.
        std::fs::write(dir.path().join("extra_test.rego"), "package t\n").unwrap();
        assert_eq!(first, load(&demo_agents()));

        std::fs::write(dir.path().join("data.json"), r#"{"limits": {"max": 1}}"#).unwrap();
        let with_data = load(&demo_agents());
        assert_ne!(first, with_data);

        let mut text = std::fs::read_to_string(&policy).unwrap();
        text.push_str("\n# changed\n");
        std::fs::write(&policy, text).unwrap();
        assert_ne!(with_data, load(&demo_agents()));
    }

    #[test]
    fn data_json_is_visible_to_policy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            "package behavry.authz\nimport rego.v1\ndefault decision := {\"allow\": false}\ndecision := {\"allow\": true, \"reasons\": [], \"ruleIds\": [\"open\"]} if data.open_servers[input.request.server]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("data.json"),
            r#"{"open_servers": {"everything": true}}"#,
        )
        .unwrap();
        let bundle = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap();
        let decision = decide_plain(&bundle, &request("anyone", "tools/call", tool("x"))).unwrap();
        assert!(decision.allow);
        assert_eq!(decision.rule_ids, ["open"]);
    }

    #[test]
    fn the_table_is_bounded_like_a_bundle_check_not_like_one_decision() {
        // A table that takes longer than one decision may (it covers every agent) is built.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            "package behavry.authz\nimport rego.v1\ndecision := {\"allow\": false}\ntable := {\"blocked\": {}, \"agents\": {}} if count([x | some i in numbers.range(1, 200); some j in numbers.range(1, 200); x := i * j]) > 0\n",
        )
        .unwrap();
        let bundle = PolicyBundle::load(dir.path(), &[], Duration::from_millis(1));
        assert!(bundle.is_ok(), "{:?}", bundle.err());
    }

    #[test]
    fn bad_bundles_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(matches!(err, PolicyError::Empty(_)), "{err}");

        std::fs::write(
            dir.path().join("broken.rego"),
            "package behavry.authz\nallow if {\n",
        )
        .unwrap();
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(matches!(err, PolicyError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("broken.rego"), "{err}");

        std::fs::write(
            dir.path().join("broken.rego"),
            "package other\nimport rego.v1\nx := 1\n",
        )
        .unwrap();
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(matches!(err, PolicyError::Compile(_)), "{err}");

        std::fs::write(
            dir.path().join("broken.rego"),
            "package behavry.authz\nimport rego.v1\ndecision := \"yes\"\n",
        )
        .unwrap();
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(matches!(err, PolicyError::Compile(_)), "{err}");

        let missing = dir.path().join("nope");
        let err = PolicyBundle::load(&missing, &[], TIMEOUT).unwrap_err();
        assert!(matches!(err, PolicyError::Read { .. }), "{err}");
    }

    #[test]
    fn evaluation_over_budget_fails_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        // Cheap for the start-up probe (empty input), a long loop for method "slow".
        std::fs::write(
            dir.path().join("p.rego"),
            "package behavry.authz\nimport rego.v1\ndefault decision := {\"allow\": false}\ndecision := {\"allow\": true} if {\n input.request.method == \"slow\"\n count([x | some x in numbers.range(1, 5000000); x % 7 == 0]) > 0\n}\n",
        )
        .unwrap();
        let bundle = PolicyBundle::load(dir.path(), &[], Duration::from_millis(1)).unwrap();
        let err =
            decide_plain(&bundle, &request("a", "slow", RequestFacts::default())).unwrap_err();
        assert!(matches!(err, PolicyError::Eval(_)), "{err}");
        assert!(err.to_string().contains("time limit"), "{err}");
    }

    /// The default bundle with the agents of its YAML cases.
    fn default_bundle() -> (PolicyBundle, Vec<AgentEnrollment>) {
        let cases =
            crate::policy_cases::read_case_file(&shipped_policy_dir().join("tests/default.yaml"))
                .unwrap();
        let bundle = PolicyBundle::load(&shipped_policy_dir(), &cases.agents, TIMEOUT).unwrap();
        (bundle, cases.agents)
    }

    fn scripted_call(agent: &str, tool: &str, arguments: serde_json::Value) -> DecisionRequest {
        let mut call = request(
            agent,
            "tools/call",
            RequestFacts {
                tool: Some(tool.to_owned()),
                arguments: Some(arguments),
                ..RequestFacts::default()
            },
        );
        call.request.server = "scripted".to_owned();
        call.agent.scopes = vec!["mcp".to_owned()];
        call
    }

    fn decide_with(
        bundle: &PolicyBundle,
        request: &DecisionRequest,
        counters: &Counters,
    ) -> DecisionResponse {
        bundle
            .decide(&PolicyInput::new(
                request,
                None,
                counters,
                SystemTime::now(),
            ))
            .unwrap()
    }

    fn zero() -> Counters {
        crate::policy_cases::zero_counters(&["1m".to_owned(), "1h".to_owned()], &Counters::new())
    }

    #[test]
    fn length_and_size_limits_of_the_default_bundle() {
        let (bundle, _) = default_bundle();
        let at_limit = scripted_call(
            "direct",
            "echo",
            serde_json::json!({"message": "é".repeat(4096)}),
        );
        assert!(decide_with(&bundle, &at_limit, &zero()).allow);
        let over = scripted_call(
            "direct",
            "echo",
            serde_json::json!({"message": "é".repeat(4097)}),
        );
        let denied = decide_with(&bundle, &over, &zero());
        assert_eq!(denied.rule_ids, ["behavry.arguments.too_long"]);
        assert_eq!(
            denied.reasons,
            ["argument 'message' of tool 'echo' exceeds 4096 characters"]
        );

        let mut huge = scripted_call(
            "ops",
            "echo",
            serde_json::json!({"blob": "a".repeat(32_768)}),
        );
        huge.request.server = "everything".to_owned();
        let denied = decide_with(&bundle, &huge, &zero());
        assert_eq!(denied.rule_ids, ["behavry.arguments.too_large"]);
    }

    #[test]
    fn a_budget_without_usage_fails_closed() {
        let (bundle, _) = default_bundle();
        let call = scripted_call("direct", "echo", serde_json::json!({"message": "hi"}));
        let denied = decide_with(&bundle, &call, &Counters::new());
        assert!(!denied.allow);
        assert!(
            denied
                .rule_ids
                .iter()
                .all(|r| r == "behavry.budget.unavailable"),
            "{:?}",
            denied.rule_ids
        );
        assert!(
            denied.reasons.contains(
                &"no agent usage for the 1m window: the budget cannot be checked".to_owned()
            ),
            "{:?}",
            denied.reasons
        );
    }

    #[test]
    fn every_problem_is_named_and_concealment_wins() {
        let (bundle, _) = default_bundle();
        let mut over = zero();
        over.get_mut("agent")
            .unwrap()
            .get_mut("1m")
            .unwrap()
            .insert("calls".to_owned(), 1200);
        // A tool the agent may not use, with a bad URL, over budget.
        let call = scripted_call("direct", "fetchx", serde_json::json!({"url": "http://x"}));
        let denied = decide_with(&bundle, &call, &over);
        let mut rules = denied.rule_ids.clone();
        rules.sort();
        assert_eq!(
            rules,
            ["behavry.budget.exceeded", "behavry.tools.not_granted"]
        );
        assert_eq!(denied.reasons.len(), 2);
        assert!(denied.obligations.conceal);
        // Not only about who asks for what: not cacheable.
        assert_eq!(denied.obligations.cache_seconds, None);

        // A destructive call that is also over budget: an approval would not be enough.
        let mut destructive = scripted_call("direct", "delete_item", serde_json::json!({}));
        destructive.tool = None;
        let denied = decide_with(&bundle, &destructive, &over);
        assert!(
            denied
                .rule_ids
                .contains(&"behavry.destructive.needs_approval".to_owned())
        );
        assert_eq!(denied.obligations.require_approval, None);
        let alone = decide_with(&bundle, &destructive, &zero());
        assert_eq!(alone.rule_ids, ["behavry.destructive.needs_approval"]);
        assert!(alone.obligations.require_approval.is_some());
    }

    #[test]
    fn policy_sees_the_versioned_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            "package behavry.authz\nimport rego.v1\ndefault decision := {\"allow\": false}\n\
             decision := {\"allow\": true, \"reasons\": [sprintf(\"%v %v %v %v %v %v\", [input.version, input.agent.roles, input.agent.owner, input.time.weekday, input.time.hour, input.tool.annotations.destructiveHint])]} if input.version == 1\n",
        )
        .unwrap();
        let agents = vec![AgentEnrollment {
            owner: Some("team-a".to_owned()),
            roles: vec!["developer".to_owned()],
            ..AgentEnrollment::new("dev")
        }];
        let bundle = PolicyBundle::load(dir.path(), &agents, TIMEOUT).unwrap();
        let mut call = request("dev", "tools/call", tool("x"));
        call.tool = Some(ToolFacts {
            annotations: Some(serde_json::json!({"destructiveHint": true})),
            ..ToolFacts::default()
        });
        // 2026-11-30 was a Monday; 19:20 UTC.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_066_400);
        let decision = bundle
            .decide(&PolicyInput::new(
                &call,
                agents.first(),
                &Counters::new(),
                now,
            ))
            .unwrap();
        assert_eq!(
            decision.reasons,
            ["1 [\"developer\"] team-a monday 19 true"]
        );
    }

    #[test]
    fn unknown_or_misplaced_obligations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |decision: &str| {
            std::fs::write(
                dir.path().join("p.rego"),
                format!("package behavry.authz\nimport rego.v1\ndecision := {decision}\n"),
            )
            .unwrap();
        };
        write(r#"{"allow": true, "obligations": {"launchMissiles": true}}"#);
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(err.to_string().contains("launchMissiles"), "{err}");
        write(r#"{"allow": true, "obligations": {"conceal": true}}"#);
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(
            err.to_string()
                .contains("conceal does not apply to an allow"),
            "{err}"
        );
        write(r#"{"allow": false, "obligations": {"redact": ["/a"]}}"#);
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(
            err.to_string()
                .contains("redact does not apply to a denial"),
            "{err}"
        );
        write(r#"{"allow": false, "obligations": {"dlp": {"redact": ["*"]}}}"#);
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(
            err.to_string().contains("dlp does not apply to a denial"),
            "{err}"
        );
        write(r#"{"allow": false, "obligations": {"poisoning": {"hideFrom": 50}}}"#);
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(
            err.to_string()
                .contains("poisoning does not apply to a denial"),
            "{err}"
        );
        write(r#"{"allow": true, "obligations": {"dlp": {"redact": ["*"], "mask": []}}}"#);
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(err.to_string().contains("mask"), "{err}");
    }

    #[test]
    fn data_yaml_is_placed_at_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("limits/tools")).unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            "package behavry.authz\nimport rego.v1\ndefault decision := {\"allow\": false}\ndecision := {\"allow\": true, \"reasons\": [sprintf(\"%v %v\", [data.top.flag, data.limits.tools.max])]} if data.limits.tools.max == 3\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("data.yaml"), "top:\n  flag: yes-string\n").unwrap();
        std::fs::write(
            dir.path().join("limits/tools/data.yaml"),
            "max: 3 # comment\n",
        )
        .unwrap();
        let bundle = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap();
        let decision = decide_plain(&bundle, &request("a", "tools/call", tool("x"))).unwrap();
        assert!(decision.allow);
        assert_eq!(decision.reasons, ["yes-string 3"]);

        std::fs::write(
            dir.path().join("limits/tools/data.yaml"),
            "max: [unclosed\n",
        )
        .unwrap();
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(matches!(err, PolicyError::Data { .. }), "{err}");
        assert!(err.to_string().contains("limits/tools/data.yaml"), "{err}");
        std::fs::write(dir.path().join("limits/tools/data.yaml"), "- a list\n").unwrap();
        let err = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap_err();
        assert!(err.to_string().contains("not an object"), "{err}");
    }

    /// Every YAML case of the default bundle, and variants of each (no usage at all, delegated,
    /// over a budget, other methods and servers, a destructive annotation, narrowed scopes),
    /// decided by the VM and by the interpreter: the decisions must be identical.
    #[test]
    fn every_case_decides_the_same_on_the_vm_and_the_interpreter() {
        let dir = shipped_policy_dir();
        let windows = ["1m".to_owned(), "1h".to_owned()];
        let mut compared = 0;
        let mut differ = Vec::new();
        for file in crate::policy_cases::case_files(&dir).unwrap() {
            let cases = crate::policy_cases::read_case_file(&file).unwrap();
            let bundle = PolicyBundle::load(&dir, &cases.agents, TIMEOUT).unwrap();
            assert!(bundle.uses_vm(), "the default bundle must run on the VM");
            for case in &cases.cases {
                let base = case.input.decision_request();
                let usage = crate::policy_cases::zero_counters(&windows, &case.input.counters);
                let mut over = usage.clone();
                for (scope, window, counter, amount) in [
                    ("agent", "1m", "calls", 1_000_000),
                    ("chain", "1m", "calls", 2400),
                    ("agent", "1h", "bytes", 100_000_000),
                ] {
                    over.entry(scope.to_owned())
                        .or_default()
                        .entry(window.to_owned())
                        .or_default()
                        .insert(counter.to_owned(), amount);
                }
                let mut variants = vec![
                    ("as written", base.clone(), usage.clone()),
                    ("no usage", base.clone(), Counters::new()),
                    ("over budget", base.clone(), over),
                ];
                let mut delegated = base.clone();
                delegated.agent.delegation = vec!["helper".to_owned()];
                variants.push(("delegated", delegated, usage.clone()));
                let mut destructive = base.clone();
                destructive.tool = Some(ToolFacts {
                    annotations: Some(serde_json::json!({"destructiveHint": true})),
                    ..ToolFacts::default()
                });
                variants.push(("destructive", destructive, usage.clone()));
                let mut narrowed = base.clone();
                narrowed.agent.scopes =
                    vec!["mcp:compute".to_owned(), "mcp:server:scripted".to_owned()];
                variants.push(("narrowed", narrowed, usage.clone()));
                for method in ["tools/list", "resources/read", "prompts/get", "ping"] {
                    let mut other = base.clone();
                    other.request.method = method.to_owned();
                    variants.push((method, other, usage.clone()));
                }
                for server in ["scripted", "files"] {
                    let mut other = base.clone();
                    other.request.server = server.to_owned();
                    variants.push((server, other, usage.clone()));
                }
                let enrollment = cases.agents.iter().find(|a| a.id == base.agent.id);
                for (variant, request, counters) in &variants {
                    let input =
                        PolicyInput::new(request, enrollment, counters, SystemTime::UNIX_EPOCH);
                    let on_vm = bundle.decide(&input);
                    let interpreted = bundle.decide_interpreted(&input);
                    compared += 1;
                    let same = match (&on_vm, &interpreted) {
                        (Ok(a), Ok(b)) => a == b,
                        (Err(a), Err(b)) => a.to_string() == b.to_string(),
                        _ => false,
                    };
                    if !same {
                        differ.push(format!(
                            "{} [{variant}]\n  vm:          {on_vm:?}\n  interpreter: {interpreted:?}",
                            case.name
                        ));
                    }
                }
            }
        }
        assert!(compared >= 600, "only {compared} decisions compared");
        assert!(
            differ.is_empty(),
            "{} of {compared} decisions differ:\n{}",
            differ.len(),
            differ.join("\n")
        );
    }

    #[test]
    fn a_bundle_the_vm_cannot_compile_runs_on_the_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        // `with` is not supported by the VM compiler.
        std::fs::write(
            dir.path().join("p.rego"),
            "package behavry.authz\nimport rego.v1\ndefault decision := {\"allow\": false}\nflag if input.x == 1\ndecision := {\"allow\": true, \"reasons\": [], \"ruleIds\": [\"w\"]} if flag with input.x as 1\n",
        )
        .unwrap();
        let bundle = PolicyBundle::load(dir.path(), &[], TIMEOUT).unwrap();
        assert!(!bundle.uses_vm());
        let decision = decide_plain(&bundle, &request("a", "tools/call", tool("x"))).unwrap();
        assert!(decision.allow);
        assert_eq!(decision.rule_ids, ["w"]);
    }

    /// A rule the VM gets wrong (`x := <undefined>` does not fail a body on regorus 0.14's VM),
    /// with a case that shows it.
    fn vm_unsafe_bundle(dir: &Path) {
        bundle_with_an_echo_case(
            dir,
            "decision := {\"allow\": true, \"reasons\": [], \"ruleIds\": [\"open\"]} if {\n\
             \tx := data.open[input.request.tool]\n}\n",
            false,
        );
    }

    #[test]
    fn auto_runs_on_the_vm_only_what_its_cases_prove() {
        // The shipped bundle: every case agrees, so the VM decides.
        let shipped = PolicySource::load(&shipped_policy_dir(), TIMEOUT).unwrap();
        assert_eq!(shipped.engine(), PolicyEngine::Auto);
        assert!(shipped.bundle(&demo_agents()).unwrap().uses_vm());
        let interpreted = PolicySource::load(&shipped_policy_dir(), TIMEOUT)
            .unwrap()
            .with_engine(PolicyEngine::Interpreter);
        assert!(!interpreted.bundle(&demo_agents()).unwrap().uses_vm());

        // A bundle whose case decides differently on the VM stays on the interpreter, and decides
        // right.
        let dir = tempfile::tempdir().unwrap();
        vm_unsafe_bundle(dir.path());
        let source = PolicySource::load(dir.path(), TIMEOUT).unwrap();
        let check = check_cases(
            dir.path(),
            &source.files,
            PolicyEngine::Auto,
            ExecutionTimerConfig {
                limit: TIMEOUT,
                check_interval: TIMER_CHECK_INTERVAL,
            },
        );
        assert_eq!(check.unusable, None);
        assert!(
            check
                .vm
                .as_ref()
                .is_err_and(|why| why.contains("echo is closed")),
            "{check:?}"
        );
        let bundle = source.bundle(&[]).unwrap();
        assert!(!bundle.uses_vm());
        let decision = decide_plain(&bundle, &request("a", "tools/call", tool("echo"))).unwrap();
        assert!(!decision.allow);

        // Without cases there is nothing to prove it by: the interpreter.
        std::fs::remove_dir_all(dir.path().join("tests")).unwrap();
        let bundle = PolicySource::load(dir.path(), TIMEOUT)
            .unwrap()
            .bundle(&[])
            .unwrap();
        assert!(!bundle.uses_vm());
    }

    /// A bundle denying by default, with these further `decision` rules, and one case: a call of
    /// `echo`, expected allowed ("echo is open") or denied ("echo is closed").
    fn bundle_with_an_echo_case(dir: &Path, rules: &str, allowed: bool) {
        std::fs::write(
            dir.join("p.rego"),
            format!(
                "package behavry.authz\nimport rego.v1\ndefault decision := {{\"allow\": false}}\n{rules}"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("tests")).unwrap();
        let name = if allowed {
            "echo is open"
        } else {
            "echo is closed"
        };
        std::fs::write(
            dir.join("tests/cases.yaml"),
            format!(
                "cases:\n  - name: {name}\n    input:\n      agent: {{id: a}}\n      request: {{server: s, method: tools/call, tool: echo}}\n    expect: {{allow: {allowed}}}\n"
            ),
        )
        .unwrap();
    }

    #[test]
    fn a_bundle_is_refused_when_one_of_its_cases_gets_a_decision_this_sidecar_cannot_use() {
        // Every request but the case's is fine, the warm-up input included: only the case shows
        // that calls of `echo` would fail.
        let dir = tempfile::tempdir().unwrap();
        let allow_echo = "decision := {\"allow\": true, \"reasons\": [], \"ruleIds\": [\"e\"]";
        let if_echo = "if input.request.tool == \"echo\"\n";
        bundle_with_an_echo_case(
            dir.path(),
            &format!("{allow_echo}, \"obligations\": {{\"newObligation\": 1}}}} {if_echo}"),
            true,
        );
        for engine in [
            PolicyEngine::Auto,
            PolicyEngine::Interpreter,
            PolicyEngine::Vm,
        ] {
            let refused = PolicySource::load(dir.path(), TIMEOUT)
                .unwrap()
                .with_engine(engine)
                .bundle(&[])
                .unwrap_err()
                .to_string();
            assert!(
                refused.contains("case `echo is open`") && refused.contains("newObligation"),
                "{engine:?}: {refused}"
            );
        }

        // A case that does not evaluate at all (two values for one complete rule) refuses it too.
        bundle_with_an_echo_case(
            dir.path(),
            &format!(
                "{allow_echo}}} {if_echo}decision := {{\"allow\": false, \"reasons\": [], \"ruleIds\": [\"d\"]}} {if_echo}"
            ),
            true,
        );
        let refused = PolicyBundle::load(dir.path(), &[], TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("case `echo is open`") && refused.contains("does not evaluate"),
            "{refused}"
        );

        // Its cases are still run, each failing on its own, not refusing the run.
        let outcomes = crate::policy_cases::run_case_file(
            dir.path(),
            &dir.path().join("tests/cases.yaml"),
            &["1m".to_owned()],
        )
        .unwrap();
        assert!(
            outcomes[0]
                .mismatches
                .iter()
                .any(|m| m.contains("no decision")),
            "{outcomes:?}"
        );

        // Fixing the case alone is a change: the refused files are not the files now.
        let refused = PolicySource::load(dir.path(), TIMEOUT).unwrap();
        std::fs::write(
            dir.path().join("tests/cases.yaml"),
            "cases:\n  - name: another tool is closed\n    input:\n      agent: {id: a}\n      request: {server: s, method: tools/call, tool: other}\n    expect: {allow: false}\n",
        )
        .unwrap();
        let fixed = PolicySource::load(dir.path(), TIMEOUT).unwrap();
        assert!(!refused.same_files(&fixed));
        assert!(fixed.bundle(&[]).is_ok());

        // A case that evaluates for ever is stopped (at 1 s here) and refuses the bundle.
        bundle_with_an_echo_case(
            dir.path(),
            &format!(
                "{allow_echo}}} if {{\n\tinput.request.tool == \"echo\"\n\
                 \tcount([1 | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x + y == 0]) == 0\n}}\n"
            ),
            true,
        );
        let refused = PolicySource::load(dir.path(), Duration::from_millis(10))
            .unwrap()
            .with_engine(PolicyEngine::Interpreter)
            .bundle(&[])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("case `echo is open`") && refused.contains("time limit"),
            "{refused}"
        );

        // The same bundle without the obligation loads.
        bundle_with_an_echo_case(dir.path(), &format!("{allow_echo}}} {if_echo}"), true);
        assert!(PolicyBundle::load(dir.path(), &[], TIMEOUT).is_ok());
    }

    #[test]
    fn test_rule_names_are_found_once_each() {
        let text = "package p\ntest_a if { true }\ntest_a if { false }\n  test_indented if true\nnot_test_b if true\ntest_c := true\n";
        assert_eq!(test_rule_names(text), ["test_a", "test_c"]);
        assert_eq!(package_path(text).as_deref(), Some("p"));
    }
}
