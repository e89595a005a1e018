//! The in-memory view of the registry that decisions and the token endpoint read: the enabled
//! agents with their verified public keys, and the policy bundle built with their grants.
//!
//! Decisions must stay in microseconds, so they never touch the database: they read an
//! [`Arc`]'d [`DirectorySnapshot`], swapped whole after every registry change made through the
//! admin API (and built once at start). Disabled and deleted agents are simply absent from it:
//! policy sees them as not enrolled (deny) and the token endpoint does not know them.
//!
//! The policy files are held here too and can be reloaded while serving
//! ([`AgentDirectory::reload_policy`], polled by [`reload_policy_periodically`]): a new bundle is
//! compiled and checked before it is swapped in with a new snapshot; decisions in flight keep the
//! `Arc` of the snapshot they started with, so no request is dropped. A bundle that does not build
//! is refused: the old one stays in force and the error is kept for `GET /healthz`.

use crate::policy_audit::{PolicyAuditor, PolicyChange};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::client_key::ClientKey;
use crate::config::AgentEnrollment;
use crate::policy::{PolicyBundle, PolicyError, PolicySource};
use crate::registry::{AgentRegistry, RegistryError};

/// Why the snapshot could not be (re)built.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The registry could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The policy bundle did not build with the new agent data.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The policy folder could not be read off the async runtime (the blocking task failed).
    #[error("policy reload task failed: {0}")]
    ReloadTask(String),
}

/// What [`AgentDirectory::reload_policy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are the ones in force: nothing was rebuilt.
    Unchanged,
    /// The files are the ones last refused: nothing was rebuilt, the old bundle stays.
    StillRefused,
    /// A new bundle is in force, with this digest.
    Reloaded {
        /// The new snapshot's bundle digest.
        digest: String,
    },
}

/// The policy part of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The digest of the bundle in force (every decision carries it).
    pub digest: String,
    /// Why the last reload was refused; `None` once the folder holds a bundle in force again.
    pub last_error: Option<String>,
    /// When a reload last swapped a new bundle in (seconds since the epoch); `None` before any.
    pub reloaded_at: Option<u64>,
}

/// The policy files in force and the reload bookkeeping.
#[derive(Debug)]
struct PolicyState {
    source: Arc<PolicySource>,
    /// The files of the last refused reload, so the same bad files are not rebuilt every poll.
    refused: Option<PolicySource>,
    last_error: Option<String>,
    reloaded_at: Option<u64>,
}

/// An enabled agent, ready for the token endpoint.
#[derive(Debug, Clone)]
pub struct ActiveAgent {
    /// Its enrollment (scopes, grants...).
    pub enrollment: AgentEnrollment,
    /// Its public keys, validated.
    pub keys: Vec<ClientKey>,
}

/// One consistent view: the agents and the bundle built from the same registry read.
#[derive(Debug)]
pub struct DirectorySnapshot {
    /// The policy bundle with the enabled agents at `data.behavry.agents`.
    pub bundle: PolicyBundle,
    agents: BTreeMap<String, ActiveAgent>,
}

impl DirectorySnapshot {
    /// The enabled agent `id`, if any.
    pub fn agent(&self, id: &str) -> Option<&ActiveAgent> {
        self.agents.get(id)
    }

    /// The enabled agents, by id.
    pub fn agents(&self) -> impl Iterator<Item = &ActiveAgent> {
        self.agents.values()
    }

    /// How many agents are enabled.
    pub fn enabled_agents(&self) -> usize {
        self.agents.len()
    }
}

/// The registry plus its current snapshot.
#[derive(Debug)]
pub struct AgentDirectory {
    registry: AgentRegistry,
    policy: RwLock<PolicyState>,
    current: RwLock<Arc<DirectorySnapshot>>,
    /// Serializes rebuilds (registry refreshes and policy reloads), so a slower rebuild from an
    /// older read never replaces a newer one.
    rebuild: tokio::sync::Mutex<()>,
}

impl AgentDirectory {
    /// Build the first snapshot from `registry`.
    pub async fn open(
        registry: AgentRegistry,
        policy: PolicySource,
    ) -> Result<AgentDirectory, DirectoryError> {
        let snapshot = build_snapshot(&registry, &policy).await?;
        Ok(AgentDirectory {
            registry,
            policy: RwLock::new(PolicyState {
                source: Arc::new(policy),
                refused: None,
                last_error: None,
                reloaded_at: None,
            }),
            current: RwLock::new(Arc::new(snapshot)),
            rebuild: tokio::sync::Mutex::new(()),
        })
    }

    /// The current snapshot (cheap: an `Arc` clone under a read lock).
    pub fn snapshot(&self) -> Arc<DirectorySnapshot> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The registry, for the admin API.
    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }

    /// Re-read the registry and swap in a new snapshot. On error the old snapshot stays.
    pub async fn refresh(&self) -> Result<Arc<DirectorySnapshot>, DirectoryError> {
        let _guard = self.rebuild.lock().await;
        let source = self.policy_source();
        let snapshot = Arc::new(build_snapshot(&self.registry, &source).await?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = snapshot.clone();
        tracing::info!(
            enabled_agents = snapshot.enabled_agents(),
            digest = snapshot.bundle.digest(),
            "agent directory refreshed"
        );
        Ok(snapshot)
    }

    /// Re-read the bundle in `policy_dir`. Same files as in force: nothing to do. Otherwise a
    /// snapshot is built with the new files (which checks that the decision rule evaluates) and
    /// swapped in with them. On error the old files and snapshot stay, the error is logged and
    /// kept for [`AgentDirectory::policy_status`], and the same files are not retried until
    /// they change again.
    pub async fn reload_policy(&self, policy_dir: &Path) -> Result<ReloadOutcome, DirectoryError> {
        let _guard = self.rebuild.lock().await;
        let current = self.policy_source();
        let dir = policy_dir.to_owned();
        let timeout = current.decision_timeout();
        let engine = current.engine();
        let loaded = tokio::task::spawn_blocking(move || {
            PolicySource::load(&dir, timeout).map(|source| source.with_engine(engine))
        })
        .await
        .map_err(|err| DirectoryError::ReloadTask(err.to_string()))
        .and_then(|loaded| loaded.map_err(DirectoryError::from));
        let candidate = match loaded {
            Ok(candidate) => candidate,
            Err(err) => return Err(self.refuse(policy_dir, None, err)),
        };
        if candidate.same_files(&current) {
            let mut state = self.policy.write().unwrap_or_else(PoisonError::into_inner);
            if state.last_error.take().is_some() {
                tracing::info!(
                    policy_dir = %policy_dir.display(),
                    "policy folder is back to the bundle in force"
                );
            }
            state.refused = None;
            return Ok(ReloadOutcome::Unchanged);
        }
        let already_refused = self
            .policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .refused
            .as_ref()
            .is_some_and(|refused| refused.same_files(&candidate));
        if already_refused {
            return Ok(ReloadOutcome::StillRefused);
        }
        let snapshot = match build_snapshot(&self.registry, &candidate).await {
            Ok(snapshot) => Arc::new(snapshot),
            // Only a bundle that does not build is remembered as refused; a registry error is
            // transient, and the same files are tried again at the next poll.
            Err(err @ DirectoryError::Policy(_)) => {
                return Err(self.refuse(policy_dir, Some(candidate), err));
            }
            Err(err) => return Err(self.refuse(policy_dir, None, err)),
        };
        let digest = snapshot.bundle.digest().to_owned();
        let previous = self.snapshot().bundle.digest().to_owned();
        {
            let mut state = self.policy.write().unwrap_or_else(PoisonError::into_inner);
            state.source = Arc::new(candidate);
            state.refused = None;
            state.last_error = None;
            state.reloaded_at = Some(unix_now());
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = snapshot;
        }
        tracing::info!(
            policy_dir = %policy_dir.display(),
            previous_digest = previous,
            digest,
            "policy bundle reloaded"
        );
        Ok(ReloadOutcome::Reloaded { digest })
    }

    /// The digest in force, the last reload error and when a reload last succeeded.
    pub fn policy_status(&self) -> PolicyStatus {
        let digest = self.snapshot().bundle.digest().to_owned();
        let state = self.policy.read().unwrap_or_else(PoisonError::into_inner);
        PolicyStatus {
            digest,
            last_error: state.last_error.clone(),
            reloaded_at: state.reloaded_at,
        }
    }

    fn policy_source(&self) -> Arc<PolicySource> {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .source
            .clone()
    }

    /// Record a refused reload (the bundle in force stays) and hand the error back.
    fn refuse(
        &self,
        policy_dir: &Path,
        candidate: Option<PolicySource>,
        err: DirectoryError,
    ) -> DirectoryError {
        let digest = self.snapshot().bundle.digest().to_owned();
        tracing::error!(
            policy_dir = %policy_dir.display(),
            error = %err,
            digest_kept = digest,
            "policy bundle refused; the previous bundle stays in force"
        );
        let mut state = self.policy.write().unwrap_or_else(PoisonError::into_inner);
        state.last_error = Some(err.to_string());
        state.refused = candidate;
        err
    }
}

/// Reload the bundle in `policy_dir` every `interval` until the task is dropped. Outcomes are
/// logged by [`AgentDirectory::reload_policy`], and recorded by `auditor` when there is one (a
/// bundle put in force, or refused with its error; the same refused files once).
pub async fn reload_policy_periodically(
    directory: Arc<AgentDirectory>,
    policy_dir: PathBuf,
    interval: Duration,
    auditor: Option<Arc<PolicyAuditor>>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the bundle was just loaded at start.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let previous = directory.snapshot().bundle.digest().to_owned();
        // Errors are logged and kept for the health answer; the old bundle stays in force.
        let change = match directory.reload_policy(&policy_dir).await {
            Ok(ReloadOutcome::Reloaded { digest }) => {
                Some(PolicyChange::Applied { digest, previous })
            }
            Ok(ReloadOutcome::Unchanged | ReloadOutcome::StillRefused) => None,
            Err(err) => Some(PolicyChange::Refused {
                error: err.to_string(),
                in_force: previous,
            }),
        };
        if let Some(auditor) = &auditor {
            if let Some(change) = change {
                auditor.record(&change, SystemTime::now());
            }
            auditor.flush().await;
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

async fn build_snapshot(
    registry: &AgentRegistry,
    policy: &PolicySource,
) -> Result<DirectorySnapshot, DirectoryError> {
    let mut agents = BTreeMap::new();
    for record in registry.list().await? {
        if !record.enabled {
            continue;
        }
        let mut keys = Vec::with_capacity(record.keys.len());
        for jwk in record.keys {
            // Keys were validated when registered; one that no longer validates (edited in the
            // database by hand) is left out rather than taking every other agent down with it.
            match ClientKey::from_jwk(jwk) {
                Ok(key) => keys.push(key),
                Err(err) => tracing::warn!(
                    agent = %record.enrollment.id, error = %err, "ignoring an invalid stored key"
                ),
            }
        }
        agents.insert(
            record.enrollment.id.clone(),
            ActiveAgent {
                enrollment: record.enrollment,
                keys,
            },
        );
    }
    let enrollments: Vec<AgentEnrollment> = agents
        .values()
        .map(|agent| agent.enrollment.clone())
        .collect();
    let bundle = policy.bundle(&enrollments)?;
    Ok(DirectorySnapshot { bundle, agents })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use behavry_core::wire::{AgentIdentity, DecisionRequest, DecisionResponse, RequestFacts};

    use super::*;
    use crate::policy::tests::{decide_plain, demo_agents};
    use crate::registry::tests::sqlite_registry;

    const POLICY_FILE: &str = "authz.rego";

    /// A bundle that allows tool `allowed` under rule `rule` and denies the rest.
    fn policy(allowed: &str, rule: &str) -> String {
        format!(
            "package behavry.authz\nimport rego.v1\n\
             default decision := {{\"allow\": false, \"reasons\": [\"no\"], \"ruleIds\": [\"deny.default\"]}}\n\
             decision := {{\"allow\": true, \"reasons\": [], \"ruleIds\": [\"{rule}\"]}} if input.request.tool == \"{allowed}\"\n"
        )
    }

    fn call(tool: &str) -> DecisionRequest {
        DecisionRequest {
            trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(),
            agent: AgentIdentity {
                id: "demo-agent".to_owned(),
                ..AgentIdentity::default()
            },
            request: RequestFacts {
                server: "everything".to_owned(),
                method: "tools/call".to_owned(),
                tool: Some(tool.to_owned()),
                ..RequestFacts::default()
            },
            tool: None,
            task: None,
            holds_leases: false,
            findings: Vec::new(),
            flow: Default::default(),
            server_poisoning: None,
        }
    }

    fn decide(directory: &AgentDirectory, tool: &str) -> DecisionResponse {
        decide_plain(&directory.snapshot().bundle, &call(tool)).unwrap()
    }

    async fn directory_on(state: &Path, policy_dir: &Path) -> AgentDirectory {
        let registry = sqlite_registry(state).await;
        registry.seed(&demo_agents()).await.unwrap();
        let source = PolicySource::load(policy_dir, Duration::from_secs(1)).unwrap();
        AgentDirectory::open(registry, source).await.unwrap()
    }

    #[tokio::test]
    async fn a_changed_bundle_is_swapped_in_and_a_bad_one_refused() {
        let state = tempfile::tempdir().unwrap();
        let policies = tempfile::tempdir().unwrap();
        let file = policies.path().join(POLICY_FILE);
        std::fs::write(&file, policy("echo", "allow.v1")).unwrap();
        let directory = directory_on(state.path(), policies.path()).await;
        let first = directory.snapshot();
        let v1 = first.bundle.digest().to_owned();
        assert_eq!(decide(&directory, "echo").rule_ids, ["allow.v1"]);

        // Same files: nothing rebuilt (the very same snapshot stays).
        let outcome = directory.reload_policy(policies.path()).await.unwrap();
        assert_eq!(outcome, ReloadOutcome::Unchanged);
        assert!(Arc::ptr_eq(&first, &directory.snapshot()));
        let status = directory.policy_status();
        assert_eq!(status.digest, v1);
        assert_eq!((status.last_error, status.reloaded_at), (None, None));

        // A new rule: new digest, new decisions; a request holding the old snapshot keeps it.
        std::fs::write(&file, policy("get-sum", "allow.v2")).unwrap();
        let ReloadOutcome::Reloaded { digest: v2 } =
            directory.reload_policy(policies.path()).await.unwrap()
        else {
            panic!("not reloaded")
        };
        assert_ne!(v2, v1);
        let echo = decide(&directory, "echo");
        assert!(!echo.allow);
        assert_eq!(echo.rule_ids, ["deny.default"]);
        assert_eq!(echo.bundle_digest, v2);
        assert_eq!(decide(&directory, "get-sum").rule_ids, ["allow.v2"]);
        let in_flight = decide_plain(&first.bundle, &call("echo")).unwrap();
        assert_eq!(
            (in_flight.allow, in_flight.bundle_digest),
            (true, v1.clone())
        );
        let status = directory.policy_status();
        assert_eq!(status.digest, v2);
        assert!(status.reloaded_at.is_some());
        assert_eq!(status.last_error, None);

        // A syntax error: refused with the regorus message, the previous bundle stays.
        std::fs::write(&file, "package behavry.authz\ndecision if {\n").unwrap();
        let err = directory.reload_policy(policies.path()).await.unwrap_err();
        assert!(
            matches!(err, DirectoryError::Policy(PolicyError::Parse { .. })),
            "{err}"
        );
        let status = directory.policy_status();
        assert_eq!(status.digest, v2);
        let last_error = status.last_error.unwrap();
        assert!(last_error.contains(POLICY_FILE), "{last_error}");
        assert_eq!(decide(&directory, "get-sum").rule_ids, ["allow.v2"]);
        assert_eq!(decide(&directory, "get-sum").bundle_digest, v2);
        // The same bad files are not rebuilt again; the error stays visible.
        let outcome = directory.reload_policy(policies.path()).await.unwrap();
        assert_eq!(outcome, ReloadOutcome::StillRefused);
        assert!(directory.policy_status().last_error.is_some());

        // A bundle that parses but has no usable decision rule is refused too.
        std::fs::write(&file, "package other\nimport rego.v1\nx := 1\n").unwrap();
        let err = directory.reload_policy(policies.path()).await.unwrap_err();
        assert!(
            matches!(err, DirectoryError::Policy(PolicyError::Compile(_))),
            "{err}"
        );
        assert_eq!(directory.policy_status().digest, v2);

        // Fixed: reloaded, the error cleared.
        std::fs::write(&file, policy("echo", "allow.v3")).unwrap();
        let ReloadOutcome::Reloaded { digest: v3 } =
            directory.reload_policy(policies.path()).await.unwrap()
        else {
            panic!("not reloaded")
        };
        assert_ne!(v3, v2);
        assert_eq!(decide(&directory, "echo").rule_ids, ["allow.v3"]);
        assert_eq!(directory.policy_status().last_error, None);

        // A registry refresh rebuilds with the reloaded files, not the ones of the start.
        let refreshed = directory.refresh().await.unwrap();
        assert_eq!(refreshed.bundle.digest(), v3);
    }

    #[tokio::test]
    async fn going_back_to_the_bundle_in_force_clears_the_error() {
        let state = tempfile::tempdir().unwrap();
        let policies = tempfile::tempdir().unwrap();
        let file = policies.path().join(POLICY_FILE);
        let good = policy("echo", "allow.v1");
        std::fs::write(&file, &good).unwrap();
        let directory = directory_on(state.path(), policies.path()).await;
        let digest = directory.policy_status().digest;

        std::fs::write(&file, "package behavry.authz\ndecision if {\n").unwrap();
        directory.reload_policy(policies.path()).await.unwrap_err();
        assert!(directory.policy_status().last_error.is_some());
        std::fs::write(&file, &good).unwrap();
        let outcome = directory.reload_policy(policies.path()).await.unwrap();
        assert_eq!(outcome, ReloadOutcome::Unchanged);
        let status = directory.policy_status();
        assert_eq!((status.digest, status.last_error), (digest.clone(), None));

        // An unreadable folder is refused like a bad bundle.
        let err = directory
            .reload_policy(&policies.path().join("missing"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DirectoryError::Policy(PolicyError::Read { .. })),
            "{err}"
        );
        assert!(directory.policy_status().last_error.is_some());
        assert_eq!(directory.policy_status().digest, digest);
    }

    #[tokio::test]
    async fn the_background_task_picks_up_a_change() {
        let state = tempfile::tempdir().unwrap();
        let policies = tempfile::tempdir().unwrap();
        let file = policies.path().join(POLICY_FILE);
        std::fs::write(&file, policy("echo", "allow.v1")).unwrap();
        let directory = Arc::new(directory_on(state.path(), policies.path()).await);
        let task = tokio::spawn(reload_policy_periodically(
            directory.clone(),
            policies.path().to_owned(),
            Duration::from_millis(20),
            None,
        ));
        std::fs::write(&file, policy("echo", "allow.v2")).unwrap();
        let mut rule = Vec::new();
        for _ in 0..250 {
            rule = decide(&directory, "echo").rule_ids;
            if rule == ["allow.v2"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        assert_eq!(rule, ["allow.v2"]);
        assert!(directory.policy_status().reloaded_at.is_some());
    }
}
