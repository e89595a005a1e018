//! Revocation of tokens that still verify: the list the filter polls at `GET /v1/revocations`.
//!
//! An access token is a signed, self-contained JWT: Envoy's `jwt_authn` accepts it until its
//! `exp` whatever happens to the agent. So the proxy also refuses tokens named here (RFC 7009
//! describes the request side of revocation; the proxy's check is in `filter/src/revocation.rs`):
//! - token ids (`jti`) revoked through the admin API, kept until the token's `exp`;
//! - agents (`sub`) that are disabled, deleted (a tombstone for the longest token lifetime), or
//!   revoked through the admin API.
//!
//! The list lives in the registry database ([`AgentRegistry::revocations`]) with a version raised
//! in the same transaction as every change, so it never goes backwards across restarts. The
//! filter polls every second per Envoy worker: polls are answered from an in-memory snapshot
//! ([`RevocationStore`]), reloaded after each admin change and by a periodic sweep that purges
//! expired entries (and picks up changes made by other replicas sharing a PostgreSQL registry).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use behavry_core::wire::RevocationList;
use serde::Deserialize;

use crate::config::MAX_TOKEN_TTL_SECS;
use crate::http::AppState;
use crate::registry::{AgentRegistry, RegistryError, RevocationEntries, unix_now};

/// How long after its `exp` a token may still verify: Envoy `jwt_authn`'s default
/// `clock_skew_seconds` (60). Entries are kept this much longer than the tokens they name.
pub const CLOCK_SKEW_GRACE_SECS: i64 = 60;
/// The longest a token of ours lives ([`MAX_TOKEN_TTL_SECS`]): how long a deleted agent's
/// tombstone and a default agent revocation last.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = MAX_TOKEN_TTL_SECS as i64;
/// How often expired entries are purged and the snapshot re-read from the database.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Longest accepted token id (ours are 22 characters).
pub const MAX_TOKEN_ID_LEN: usize = 256;

/// Body of `POST /admin/v1/revocations`: exactly one of `tokenId` and `agent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RevocationRequest {
    /// The `jti` of the token to revoke.
    #[serde(default)]
    pub token_id: Option<String>,
    /// The agent (`sub`) whose every token to revoke.
    #[serde(default)]
    pub agent: Option<String>,
    /// Until when, seconds since the epoch: the token's `exp`. Default: now plus the longest
    /// token lifetime; at most that far ahead.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// What a valid [`RevocationRequest`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Refuse the token with this `jti` until `expires_at`.
    Token {
        /// The `jti`.
        token_id: String,
        /// Its `exp`.
        expires_at: i64,
    },
    /// Refuse every token of this agent until `expires_at`.
    Agent {
        /// The agent id.
        agent: String,
        /// Until when.
        expires_at: i64,
    },
}

/// Why a revocation request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRevocation {
    /// Neither or both of `tokenId` and `agent`.
    #[error("name exactly one of `tokenId` and `agent`")]
    Target,
    /// The id is empty, too long or holds characters a JWT claim of ours never has.
    #[error("invalid field `{field}`: must be 1 to {MAX_TOKEN_ID_LEN} visible ASCII characters")]
    Id {
        /// `tokenId` or `agent`.
        field: &'static str,
    },
    /// `expiresAt` is over: the token no longer verifies, there is nothing to revoke.
    #[error("invalid field `expiresAt`: {expires_at} is in the past, the token no longer verifies")]
    Expired {
        /// The value sent.
        expires_at: i64,
    },
    /// `expiresAt` is further ahead than any token of ours lives.
    #[error(
        "invalid field `expiresAt`: {expires_at} is more than {MAX_TOKEN_LIFETIME_SECS} s ahead, longer than any token lives"
    )]
    TooFar {
        /// The value sent.
        expires_at: i64,
    },
}

impl RevocationRequest {
    /// Check the request at time `now` (seconds since the epoch).
    pub fn validate(self, now: i64) -> Result<Revocation, InvalidRevocation> {
        let latest = now.saturating_add(MAX_TOKEN_LIFETIME_SECS);
        let expires_at = self.expires_at.unwrap_or(latest);
        if expires_at.saturating_add(CLOCK_SKEW_GRACE_SECS) <= now {
            return Err(InvalidRevocation::Expired { expires_at });
        }
        // Tokens minted just now with the longest lifetime, by a clock slightly ahead, are
        // allowed for: the grace works both ways.
        if expires_at > latest.saturating_add(CLOCK_SKEW_GRACE_SECS) {
            return Err(InvalidRevocation::TooFar { expires_at });
        }
        match (self.token_id, self.agent) {
            (Some(token_id), None) => {
                check_id("tokenId", &token_id)?;
                Ok(Revocation::Token {
                    token_id,
                    expires_at,
                })
            }
            (None, Some(agent)) => {
                check_id("agent", &agent)?;
                Ok(Revocation::Agent { agent, expires_at })
            }
            _ => Err(InvalidRevocation::Target),
        }
    }
}

/// Token ids and agent ids are claim values the filter compares byte for byte; anything but
/// visible ASCII could never match a token of ours.
fn check_id(field: &'static str, id: &str) -> Result<(), InvalidRevocation> {
    if id.is_empty() || id.len() > MAX_TOKEN_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidRevocation::Id { field });
    }
    Ok(())
}

/// The list the filter is served, from entries read from the registry.
pub fn wire_list(entries: &RevocationEntries) -> RevocationList {
    let mut agents: Vec<String> = entries.agents.iter().map(|a| a.agent.clone()).collect();
    agents.dedup();
    RevocationList {
        // The filter treats 0 as "no list yet"; the migration starts at 1, this only guards.
        version: entries.version.max(1),
        token_ids: entries.tokens.iter().map(|t| t.token_id.clone()).collect(),
        agents,
    }
}

/// The registry's revocations plus the snapshot polls are answered from.
#[derive(Debug)]
pub struct RevocationStore {
    registry: AgentRegistry,
    current: RwLock<Arc<RevocationList>>,
    /// Serializes reloads, so a slower reload from an older read never replaces a newer one.
    reload: tokio::sync::Mutex<()>,
}

impl RevocationStore {
    /// Read the revocations in force from `registry`.
    pub async fn open(registry: AgentRegistry) -> Result<RevocationStore, RegistryError> {
        let entries = registry.revocations(cutoff(unix_now())).await?;
        Ok(RevocationStore {
            registry,
            current: RwLock::new(Arc::new(wire_list(&entries))),
            reload: tokio::sync::Mutex::new(()),
        })
    }

    /// The list in force (cheap: an `Arc` clone under a read lock).
    pub fn list(&self) -> Arc<RevocationList> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every entry in force, read from the registry (for the admin API).
    pub async fn entries(&self) -> Result<RevocationEntries, RegistryError> {
        self.registry.revocations(cutoff(unix_now())).await
    }

    /// Store `revocation` and reload the snapshot.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), RegistryError> {
        match revocation {
            Revocation::Token {
                token_id,
                expires_at,
            } => self.registry.revoke_token(token_id, *expires_at).await?,
            Revocation::Agent { agent, expires_at } => {
                self.registry.revoke_agent(agent, *expires_at).await?;
            }
        }
        self.reload().await?;
        Ok(())
    }

    /// Re-read the registry and swap in a new snapshot; on error the old one stays.
    pub async fn reload(&self) -> Result<Arc<RevocationList>, RegistryError> {
        let _guard = self.reload.lock().await;
        let entries = self.registry.revocations(cutoff(unix_now())).await?;
        let list = Arc::new(wire_list(&entries));
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if list.version != current.version {
            tracing::info!(
                version = list.version,
                tokens = list.token_ids.len(),
                agents = list.agents.len(),
                "revocation list changed"
            );
        }
        *current = list.clone();
        Ok(list)
    }

    /// Purge the entries whose tokens can no longer verify, then reload. Answers how many were
    /// purged.
    pub async fn sweep(&self) -> Result<u64, RegistryError> {
        let purged = self.registry.purge_revocations(cutoff(unix_now())).await?;
        self.reload().await?;
        Ok(purged)
    }
}

/// Sweep every [`SWEEP_INTERVAL`] until the task is dropped; errors are logged and retried.
pub async fn sweep_periodically(store: Arc<RevocationStore>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match store.sweep().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired revocations"),
            // The snapshot held stays in force: revocation never switches itself off.
            Err(err) => tracing::warn!(error = %err, "cannot sweep the revocation list"),
        }
    }
}

/// `GET /v1/revocations`: the snapshot, never the database (every Envoy worker polls every
/// second). Unauthenticated like `/v1/decide`: it is on the sidecar's local listener and names
/// only ids.
pub async fn revocation_list(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(state.revocations.list().as_ref().clone()),
    )
        .into_response()
}

/// Entries whose `expires_at` is at or before this are over at `now`.
fn cutoff(now: i64) -> i64 {
    now.saturating_sub(CLOCK_SKEW_GRACE_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AgentEnrollment;
    use crate::registry::AgentRevocationReason;
    use crate::registry::tests::sqlite_registry;

    fn token(id: &str, expires_at: Option<i64>) -> RevocationRequest {
        RevocationRequest {
            token_id: Some(id.to_owned()),
            agent: None,
            expires_at,
        }
    }

    #[test]
    fn requests_are_validated() {
        let now = 1_000_000;
        assert_eq!(
            token("j1", Some(now + 300)).validate(now),
            Ok(Revocation::Token {
                token_id: "j1".to_owned(),
                expires_at: now + 300
            })
        );
        // Default: the longest lifetime.
        assert_eq!(
            token("j1", None).validate(now),
            Ok(Revocation::Token {
                token_id: "j1".to_owned(),
                expires_at: now + MAX_TOKEN_LIFETIME_SECS
            })
        );
        // Just expired but still inside Envoy's clock-skew allowance: still worth revoking.
        assert!(token("j1", Some(now - 30)).validate(now).is_ok());
        assert_eq!(
            token("j1", Some(now - 61)).validate(now),
            Err(InvalidRevocation::Expired {
                expires_at: now - 61
            })
        );
        let far = now + MAX_TOKEN_LIFETIME_SECS + CLOCK_SKEW_GRACE_SECS + 1;
        assert_eq!(
            token("j1", Some(far)).validate(now),
            Err(InvalidRevocation::TooFar { expires_at: far })
        );
        for bad in ["", "has space", "é", &"x".repeat(MAX_TOKEN_ID_LEN + 1)] {
            assert_eq!(
                token(bad, None).validate(now),
                Err(InvalidRevocation::Id { field: "tokenId" }),
                "{bad:?}"
            );
        }
        let both = RevocationRequest {
            agent: Some("a".to_owned()),
            ..token("j", None)
        };
        assert_eq!(both.validate(now), Err(InvalidRevocation::Target));
        let neither = RevocationRequest {
            token_id: None,
            agent: None,
            expires_at: None,
        };
        assert_eq!(neither.validate(now), Err(InvalidRevocation::Target));
    }

    #[tokio::test]
    async fn store_starts_at_version_one_and_never_goes_back_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let registry = sqlite_registry(dir.path()).await;
        let store = RevocationStore::open(registry.clone()).await.unwrap();
        let empty = store.list();
        assert_eq!(empty.version, 1);
        assert!(empty.token_ids.is_empty() && empty.agents.is_empty());

        let now = unix_now();
        store
            .revoke(&token("j1", Some(now + 300)).validate(now).unwrap())
            .await
            .unwrap();
        let after_token = store.list();
        assert!(after_token.version > 1);
        assert_eq!(after_token.token_ids, ["j1"]);
        let agent = RevocationRequest {
            token_id: None,
            agent: Some("mallory".to_owned()),
            expires_at: None,
        };
        store.revoke(&agent.validate(now).unwrap()).await.unwrap();
        let after_agent = store.list();
        assert!(after_agent.version > after_token.version);
        assert_eq!(after_agent.agents, ["mallory"]);
        registry.close().await;

        let reopened = RevocationStore::open(sqlite_registry(dir.path()).await)
            .await
            .unwrap();
        assert_eq!(*reopened.list(), *after_agent);
        let entries = reopened.entries().await.unwrap();
        assert_eq!(entries.tokens[0].expires_at, now + 300);
        assert_eq!(entries.agents[0].reason, AgentRevocationReason::Revoked);
        assert_eq!(
            entries.agents[0].expires_at,
            Some(now + MAX_TOKEN_LIFETIME_SECS)
        );
    }

    #[tokio::test]
    async fn expired_entries_are_left_out_then_purged_with_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let registry = sqlite_registry(dir.path()).await;
        let store = RevocationStore::open(registry.clone()).await.unwrap();
        let now = unix_now();
        // Written straight to the registry: the admin API refuses entries already over.
        registry.revoke_token("over", now - 120).await.unwrap();
        registry.revoke_token("live", now + 120).await.unwrap();
        registry.revoke_agent("gone", now - 120).await.unwrap();
        let before = store.reload().await.unwrap();
        assert_eq!(before.token_ids, ["live"]);
        assert!(before.agents.is_empty());

        assert_eq!(store.sweep().await.unwrap(), 2);
        let after = store.list();
        assert!(after.version > before.version);
        assert_eq!(after.token_ids, ["live"]);
        // Nothing left to purge: the version stays.
        assert_eq!(store.sweep().await.unwrap(), 0);
        assert_eq!(store.list().version, after.version);
        // Revoking the same id again keeps the later expiry.
        registry.revoke_token("live", now + 60).await.unwrap();
        let entries = store.entries().await.unwrap();
        assert_eq!(entries.tokens[0].expires_at, now + 120);
    }

    #[tokio::test]
    async fn disable_enable_and_delete_change_the_agent_list() {
        let dir = tempfile::tempdir().unwrap();
        let registry = sqlite_registry(dir.path()).await;
        registry
            .enroll(&AgentEnrollment::new("agent-a"), &[], true)
            .await
            .unwrap();
        registry
            .enroll(&AgentEnrollment::new("agent-off"), &[], false)
            .await
            .unwrap();
        let store = RevocationStore::open(registry.clone()).await.unwrap();
        let start = store.list();
        assert_eq!(start.agents, ["agent-off"]);

        registry.set_enabled("agent-a", false).await.unwrap();
        let disabled = store.reload().await.unwrap();
        assert!(disabled.version > start.version);
        assert_eq!(disabled.agents, ["agent-a", "agent-off"]);
        let entries = store.entries().await.unwrap();
        assert_eq!(entries.agents[0].reason, AgentRevocationReason::Disabled);
        assert_eq!(entries.agents[0].expires_at, None);

        registry.set_enabled("agent-a", true).await.unwrap();
        let enabled = store.reload().await.unwrap();
        assert!(enabled.version > disabled.version);
        assert_eq!(enabled.agents, ["agent-off"]);

        // Deleted: a tombstone for the longest token lifetime, even though the row is gone.
        let now = unix_now();
        registry.delete("agent-a").await.unwrap();
        let deleted = store.reload().await.unwrap();
        assert!(deleted.version > enabled.version);
        assert_eq!(deleted.agents, ["agent-a", "agent-off"]);
        let entries = store.entries().await.unwrap();
        assert_eq!(entries.agents[0].reason, AgentRevocationReason::Deleted);
        let until = entries.agents[0].expires_at.unwrap();
        assert!(until >= now + MAX_TOKEN_LIFETIME_SECS, "{until}");
        // A deleted disabled agent: the tombstone replaces the disabled state.
        registry.delete("agent-off").await.unwrap();
        let entries = store.entries().await.unwrap();
        assert_eq!(entries.agents.len(), 2);
        assert!(
            entries
                .agents
                .iter()
                .all(|a| a.reason == AgentRevocationReason::Deleted)
        );
        // Re-enrolled under the same id and enabled by the operator: the tombstone is lifted.
        registry
            .enroll(&AgentEnrollment::new("agent-a"), &[], false)
            .await
            .unwrap();
        registry.set_enabled("agent-a", true).await.unwrap();
        assert_eq!(store.reload().await.unwrap().agents, ["agent-off"]);
    }
}
