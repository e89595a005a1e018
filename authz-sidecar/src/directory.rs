//! The in-memory view of the registry that decisions and the token endpoint read: the enabled
//! agents with their verified public keys, and the policy bundle built with their grants.
//!
//! Decisions must stay in microseconds, so they never touch the database: they read an
//! [`Arc`]'d [`DirectorySnapshot`], swapped whole after every registry change made through the
//! admin API (and built once at start). Disabled and deleted agents are simply absent from it:
//! policy sees them as not enrolled (deny) and the token endpoint does not know them.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

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
    policy: PolicySource,
    current: RwLock<Arc<DirectorySnapshot>>,
    /// Serializes rebuilds, so a slower rebuild from an older read never replaces a newer one.
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
            policy,
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
        let snapshot = Arc::new(build_snapshot(&self.registry, &self.policy).await?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = snapshot.clone();
        tracing::info!(
            enabled_agents = snapshot.enabled_agents(),
            digest = snapshot.bundle.digest(),
            "agent directory refreshed"
        );
        Ok(snapshot)
    }
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
