//! The persistent agent registry: who the agents are, what they may use, which public keys they
//! authenticate with, and whether they are enabled.
//!
//! SQLite by default (one file, created at first start), PostgreSQL when `database_url` names
//! one. Both run the same embedded migrations (`migrations/`, portable SQL) and the same queries
//! (`$n` placeholders work on both). Decisions never read the database: [`crate::directory`]
//! keeps an in-memory snapshot, rebuilt after every change made through the admin API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::client_key::{ClientJwk, ClientKey};
use crate::config::{AgentEnrollment, MAX_TOKEN_TTL_SECS, RegistryLocation, ServerGrant};

/// How long a SQLite writer waits for another connection's lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool: admin changes are rare and decisions never touch the database.
const POOL_CONNECTIONS: u32 = 4;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database could not be opened.
    #[error("cannot open the agent registry {location}: {source}")]
    Open {
        /// File path, or `PostgreSQL` (the URL may hold a password).
        location: String,
        /// The driver error.
        source: sqlx::Error,
    },
    /// The SQLite file's folder could not be created.
    #[error("cannot create the folder of the agent registry {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The schema could not be migrated.
    #[error("cannot migrate the agent registry: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("agent registry query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored row does not decode (written by something else).
    #[error("agent registry row for `{agent}` is corrupt: {reason}")]
    Corrupt {
        /// The agent.
        agent: String,
        /// What did not decode.
        reason: String,
    },
    /// No agent with this id.
    #[error("agent `{0}` is not enrolled")]
    NotFound(String),
    /// An agent with this id already exists.
    #[error("agent `{0}` is already enrolled")]
    AlreadyEnrolled(String),
    /// The agent already has a key with this kid.
    #[error("agent `{agent}` already has a key with kid `{kid}`")]
    KeyExists {
        /// The agent.
        agent: String,
        /// The kid.
        kid: String,
    },
    /// The agent has no key with this kid.
    #[error("agent `{agent}` has no key with kid `{kid}`")]
    KeyNotFound {
        /// The agent.
        agent: String,
        /// The kid.
        kid: String,
    },
}

/// One agent as stored: its enrollment, public keys, state and times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    /// Id, owner, roles, scopes, servers.
    #[serde(flatten)]
    pub enrollment: AgentEnrollment,
    /// Registered public keys (normalized JWKs, `kid` unique).
    pub keys: Vec<ClientJwk>,
    /// Disabled agents get no tokens and every decision for them denies.
    pub enabled: bool,
    /// Enrollment time, seconds since the epoch.
    pub created_at: i64,
    /// Last change, seconds since the epoch.
    pub updated_at: i64,
}

/// A revoked access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct RevokedToken {
    /// Its `jti`.
    pub token_id: String,
    /// Its `exp`: kept on the list until then (plus the verifier's clock-skew allowance).
    pub expires_at: i64,
    /// When it was revoked.
    pub revoked_at: i64,
}

/// Why every token of an agent is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AgentRevocationReason {
    /// The agent is disabled (for as long as it stays disabled).
    Disabled,
    /// The agent was deleted; its tokens may still verify until the tombstone expires.
    Deleted,
    /// Revoked through the admin API.
    Revoked,
}

impl AgentRevocationReason {
    fn as_str(self) -> &'static str {
        match self {
            AgentRevocationReason::Disabled => "disabled",
            AgentRevocationReason::Deleted => "deleted",
            AgentRevocationReason::Revoked => "revoked",
        }
    }
}

/// An agent whose every token is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedAgent {
    /// The agent id (token `sub`).
    pub agent: String,
    /// Why.
    pub reason: AgentRevocationReason,
    /// Until when; `None` while the agent stays disabled.
    pub expires_at: Option<i64>,
    /// When it was revoked (for a disabled agent: its last change).
    pub revoked_at: i64,
}

/// Every revocation in force, with the list version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevocationEntries {
    /// Raised with every change; never below 1.
    pub version: u64,
    /// Revoked tokens, by id.
    pub tokens: Vec<RevokedToken>,
    /// Revoked agents, by id.
    pub agents: Vec<RevokedAgent>,
}

#[derive(Debug, sqlx::FromRow)]
struct AgentRow {
    id: String,
    owner: Option<String>,
    roles: String,
    scopes: String,
    servers: String,
    may_act: String,
    service_accounts: String,
    clients: String,
    enabled: i64,
    created_at: i64,
    updated_at: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct KeyRow {
    agent_id: String,
    jwk: String,
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run `$body` with `$pool` bound to the concrete pool: the queries are the same text on both
/// databases, only the driver types differ.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// Raise the revocation list's version; used inside the transaction of every change to it.
macro_rules! bump_revocation_version {
    ($tx:expr) => {
        sqlx::query("UPDATE authz_revocation_version SET version = version + 1 WHERE id = 1")
            .execute($tx)
            .await
    };
}

/// Insert or replace an agent-level revocation, keeping the later expiry.
macro_rules! upsert_agent_revocation {
    ($tx:expr, $agent:expr, $reason:expr, $expires_at:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO authz_revoked_agents (agent_id, reason, expires_at, revoked_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (agent_id) DO UPDATE SET \
             reason = excluded.reason, revoked_at = excluded.revoked_at, expires_at = CASE \
             WHEN excluded.expires_at > authz_revoked_agents.expires_at THEN excluded.expires_at \
             ELSE authz_revoked_agents.expires_at END",
        )
        .bind($agent)
        .bind($reason.as_str())
        .bind($expires_at)
        .bind($now)
        .execute($tx)
        .await
    };
}

const AGENT_COLUMNS: &str = "id, owner, roles, scopes, servers, may_act, service_accounts, clients, enabled, created_at, updated_at";

const APPROVAL_COLUMNS: &str = "id, request_key, agent_id, delegation, server, method, target, \
     arguments, reason, trace_id, status, created_at, expires_at, decided_at, decided_by, used_at, \
     decided_with";

/// One held request and what became of it (table `authz_approvals`, migration 0004).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApprovalRecord {
    /// Random id, shown to approvers and agents.
    pub id: String,
    /// SHA-256 (hex) of what is approved: a retry of the same call has the same key.
    pub request_key: String,
    /// The agent the call is for.
    pub agent_id: String,
    /// Its delegation chain, as a JSON array.
    pub delegation: String,
    /// Server, method and target of the call.
    pub server: String,
    /// JSON-RPC method.
    pub method: String,
    /// Tool name, resource URI or prompt name.
    pub target: String,
    /// The call's arguments, as JSON, shown to the approver.
    pub arguments: String,
    /// Why the policy wants an approval.
    pub reason: String,
    /// Trace id of the call that was held.
    pub trace_id: String,
    /// `pending`, `approved`, `rejected` or `used`.
    pub status: String,
    /// When it was held.
    pub created_at: i64,
    /// After this it counts for nothing.
    pub expires_at: i64,
    /// When it was approved or rejected.
    pub decided_at: Option<i64>,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When the approved call went through.
    pub used_at: Option<i64>,
    /// How the decider was known: `approver` (their own credential) or `admin` (the name the
    /// admin credential gave); `None` before it was decided, or decided before migration 0005.
    pub decided_with: Option<String>,
}

/// The registry, over a connection pool.
#[derive(Debug, Clone)]
pub struct AgentRegistry {
    pool: Pool,
}

impl AgentRegistry {
    /// Open (creating a SQLite file if needed) and migrate the registry at `location`.
    pub async fn open(location: &RegistryLocation) -> Result<AgentRegistry, RegistryError> {
        let pool = match location {
            RegistryLocation::Sqlite(path) => Pool::Sqlite(open_sqlite(path).await?),
            RegistryLocation::Postgres(url) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(POOL_CONNECTIONS)
                    .connect(url)
                    .await
                    .map_err(|source| RegistryError::Open {
                        location: "PostgreSQL".to_owned(),
                        source,
                    })?,
            ),
        };
        let registry = AgentRegistry { pool };
        on_pool!(registry, pool => sqlx::migrate!("./migrations").run(pool).await?);
        Ok(registry)
    }

    /// Enroll each of `seeds` that is not in the registry yet; existing agents are left as they
    /// are (the registry, changed through the admin API, wins over the config). Answers how many
    /// were added.
    pub async fn seed(&self, seeds: &[AgentEnrollment]) -> Result<usize, RegistryError> {
        let now = unix_now();
        let mut added = 0;
        for seed in seeds {
            let row = encode_enrollment(seed)?;
            let result = on_pool!(self, pool => sqlx::query(
                "INSERT INTO authz_agents (id, owner, roles, scopes, servers, may_act, service_accounts, clients, enabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&seed.id)
            .bind(&seed.owner)
            .bind(&row.roles)
            .bind(&row.scopes)
            .bind(&row.servers)
            .bind(&row.may_act)
            .bind(&row.service_accounts)
            .bind(&row.clients)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected());
            if result > 0 {
                added += 1;
            }
        }
        Ok(added)
    }

    /// Enroll a new agent with its keys (kids must be unique).
    pub async fn enroll(
        &self,
        enrollment: &AgentEnrollment,
        keys: &[ClientKey],
        enabled: bool,
    ) -> Result<AgentRecord, RegistryError> {
        let row = encode_enrollment(enrollment)?;
        let now = unix_now();
        let id = enrollment.id.as_str();
        let encoded_keys = keys
            .iter()
            .map(|key| encode_key(id, key))
            .collect::<Result<Vec<_>, _>>()?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO authz_agents (id, owner, roles, scopes, servers, may_act, service_accounts, clients, enabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            )
            .bind(id)
            .bind(&enrollment.owner)
            .bind(&row.roles)
            .bind(&row.scopes)
            .bind(&row.servers)
            .bind(&row.may_act)
            .bind(&row.service_accounts)
            .bind(&row.clients)
            .bind(i64::from(enabled))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|err| unique_violation(err, || RegistryError::AlreadyEnrolled(id.to_owned())))?;
            for (kid, jwk) in &encoded_keys {
                sqlx::query(
                    "INSERT INTO authz_agent_keys (agent_id, kid, jwk, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(kid)
                .bind(jwk)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|err| unique_violation(err, || RegistryError::KeyExists {
                    agent: id.to_owned(),
                    kid: kid.clone(),
                }))?;
            }
            if !enabled {
                // A disabled agent is on the revocation list from the start.
                bump_revocation_version!(&mut *tx)?;
            }
            tx.commit().await?;
        });
        self.get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
    }

    /// Every agent, by id.
    pub async fn list(&self) -> Result<Vec<AgentRecord>, RegistryError> {
        let query = format!("SELECT {AGENT_COLUMNS} FROM authz_agents ORDER BY id");
        let rows: Vec<AgentRow> =
            on_pool!(self, pool => sqlx::query_as(&query).fetch_all(pool).await?);
        let keys: Vec<KeyRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT agent_id, jwk FROM authz_agent_keys ORDER BY agent_id, created_at, kid",
        )
        .fetch_all(pool)
        .await?);
        let mut keys_by_agent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in keys {
            keys_by_agent.entry(key.agent_id).or_default().push(key.jwk);
        }
        rows.into_iter()
            .map(|row| {
                let keys = keys_by_agent.remove(&row.id).unwrap_or_default();
                decode_record(row, keys)
            })
            .collect()
    }

    /// One agent, if enrolled.
    pub async fn get(&self, id: &str) -> Result<Option<AgentRecord>, RegistryError> {
        let query = format!("SELECT {AGENT_COLUMNS} FROM authz_agents WHERE id = $1");
        let row: Option<AgentRow> =
            on_pool!(self, pool => sqlx::query_as(&query).bind(id).fetch_optional(pool).await?);
        let Some(row) = row else {
            return Ok(None);
        };
        let keys: Vec<KeyRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT agent_id, jwk FROM authz_agent_keys WHERE agent_id = $1 ORDER BY created_at, kid",
        )
        .bind(id)
        .fetch_all(pool)
        .await?);
        decode_record(row, keys.into_iter().map(|key| key.jwk).collect()).map(Some)
    }

    /// Enable or disable an agent. A disabled agent is on the revocation list; enabling it also
    /// lifts any agent-level revocation or deletion tombstone of its id (docs/identity.md).
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<AgentRecord, RegistryError> {
        let changed = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE authz_agents SET enabled = $1, updated_at = $2 WHERE id = $3",
            )
            .bind(i64::from(enabled))
            .bind(unix_now())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed > 0 {
                if enabled {
                    sqlx::query("DELETE FROM authz_revoked_agents WHERE agent_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                bump_revocation_version!(&mut *tx)?;
            }
            tx.commit().await?;
            changed
        });
        if changed == 0 {
            return Err(RegistryError::NotFound(id.to_owned()));
        }
        self.get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
    }

    /// Delete an agent and its keys, leaving a tombstone on the revocation list until the last
    /// token it could hold has expired (now + [`MAX_TOKEN_TTL_SECS`]): a deleted agent's tokens
    /// still verify at Envoy until then.
    pub async fn delete(&self, id: &str) -> Result<(), RegistryError> {
        let max_token_lifetime_secs = i64::try_from(MAX_TOKEN_TTL_SECS).unwrap_or(i64::MAX);
        let now = unix_now();
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM authz_agent_keys WHERE agent_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let deleted = sqlx::query("DELETE FROM authz_agents WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted > 0 {
                upsert_agent_revocation!(
                    &mut *tx,
                    id,
                    AgentRevocationReason::Deleted,
                    now.saturating_add(max_token_lifetime_secs),
                    now
                )?;
                bump_revocation_version!(&mut *tx)?;
            }
            tx.commit().await?;
            deleted
        });
        if deleted == 0 {
            return Err(RegistryError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    /// Revoke the access token `token_id` (its `jti`) until `expires_at` (its `exp`). Revoking
    /// it again keeps the later expiry.
    pub async fn revoke_token(&self, token_id: &str, expires_at: i64) -> Result<(), RegistryError> {
        let now = unix_now();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // `CASE` rather than MAX()/GREATEST(): the one spelling both databases accept.
            sqlx::query(
                "INSERT INTO authz_revoked_tokens (token_id, expires_at, revoked_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (token_id) DO UPDATE SET expires_at = CASE \
                 WHEN excluded.expires_at > authz_revoked_tokens.expires_at THEN excluded.expires_at \
                 ELSE authz_revoked_tokens.expires_at END",
            )
            .bind(token_id)
            .bind(expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            bump_revocation_version!(&mut *tx)?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Revoke every token of agent `agent` until `expires_at`, enrolled or not.
    pub async fn revoke_agent(&self, agent: &str, expires_at: i64) -> Result<(), RegistryError> {
        let now = unix_now();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            upsert_agent_revocation!(&mut *tx, agent, AgentRevocationReason::Revoked, expires_at, now)?;
            bump_revocation_version!(&mut *tx)?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The revocations in force at `cutoff` (entries with `expires_at > cutoff`), with the
    /// version they are at least as new as.
    pub async fn revocations(&self, cutoff: i64) -> Result<RevocationEntries, RegistryError> {
        // The version is read before the entries: a change committed in between makes the
        // entries newer than the version, never older, so a poller that skips an equal version
        // never misses a change (it gets it again with the next version).
        let version: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT version FROM authz_revocation_version WHERE id = 1",
        )
        .fetch_one(pool)
        .await?);
        let tokens: Vec<RevokedToken> = on_pool!(self, pool => sqlx::query_as(
            "SELECT token_id, expires_at, revoked_at FROM authz_revoked_tokens \
             WHERE expires_at > $1 ORDER BY token_id",
        )
        .bind(cutoff)
        .fetch_all(pool)
        .await?);
        let stored: Vec<(String, String, i64, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT agent_id, reason, expires_at, revoked_at FROM authz_revoked_agents \
             WHERE expires_at > $1",
        )
        .bind(cutoff)
        .fetch_all(pool)
        .await?);
        let disabled: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, updated_at FROM authz_agents WHERE enabled = 0",
        )
        .fetch_all(pool)
        .await?);
        let mut agents = Vec::with_capacity(stored.len() + disabled.len());
        for (agent, reason, expires_at, revoked_at) in stored {
            let reason = match reason.as_str() {
                "revoked" => AgentRevocationReason::Revoked,
                "deleted" => AgentRevocationReason::Deleted,
                other => {
                    return Err(RegistryError::Corrupt {
                        agent,
                        reason: format!("unknown revocation reason `{other}`"),
                    });
                }
            };
            agents.push(RevokedAgent {
                agent,
                reason,
                expires_at: Some(expires_at),
                revoked_at,
            });
        }
        agents.extend(
            disabled
                .into_iter()
                .map(|(agent, updated_at)| RevokedAgent {
                    agent,
                    reason: AgentRevocationReason::Disabled,
                    expires_at: None,
                    revoked_at: updated_at,
                }),
        );
        agents.sort_by(|a, b| a.agent.cmp(&b.agent));
        Ok(RevocationEntries {
            version: u64::try_from(version).unwrap_or(0),
            tokens,
            agents,
        })
    }

    /// Delete the revocations that ended at `cutoff` (`expires_at <= cutoff`); answers how many.
    /// The version is raised only when something was deleted.
    pub async fn purge_revocations(&self, cutoff: i64) -> Result<u64, RegistryError> {
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let tokens = sqlx::query("DELETE FROM authz_revoked_tokens WHERE expires_at <= $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let agents = sqlx::query("DELETE FROM authz_revoked_agents WHERE expires_at <= $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let purged = tokens + agents;
            if purged > 0 {
                bump_revocation_version!(&mut *tx)?;
            }
            tx.commit().await?;
            purged
        }))
    }

    /// Register another public key for an agent.
    pub async fn add_key(&self, id: &str, key: &ClientKey) -> Result<AgentRecord, RegistryError> {
        let (kid, jwk) = encode_key(id, key)?;
        let now = unix_now();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let touched = sqlx::query("UPDATE authz_agents SET updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if touched == 0 {
                return Err(RegistryError::NotFound(id.to_owned()));
            }
            sqlx::query(
                "INSERT INTO authz_agent_keys (agent_id, kid, jwk, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(&kid)
            .bind(&jwk)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|err| unique_violation(err, || RegistryError::KeyExists {
                agent: id.to_owned(),
                kid: kid.clone(),
            }))?;
            tx.commit().await?;
        });
        self.get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
    }

    /// Remove one of an agent's public keys.
    pub async fn remove_key(&self, id: &str, kid: &str) -> Result<AgentRecord, RegistryError> {
        let removed = on_pool!(self, pool => sqlx::query(
            "DELETE FROM authz_agent_keys WHERE agent_id = $1 AND kid = $2",
        )
        .bind(id)
        .bind(kid)
        .execute(pool)
        .await?
        .rows_affected());
        if removed == 0 {
            return match self.get(id).await? {
                Some(_) => Err(RegistryError::KeyNotFound {
                    agent: id.to_owned(),
                    kid: kid.to_owned(),
                }),
                None => Err(RegistryError::NotFound(id.to_owned())),
            };
        }
        on_pool!(self, pool => sqlx::query("UPDATE authz_agents SET updated_at = $1 WHERE id = $2")
            .bind(unix_now())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        self.get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
    }

    /// Store a new held request.
    pub async fn insert_approval(&self, approval: &ApprovalRecord) -> Result<(), RegistryError> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO authz_approvals (id, request_key, agent_id, delegation, server, method, \
             target, arguments, reason, trace_id, status, created_at, expires_at, decided_at, \
             decided_by, used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&approval.id)
        .bind(&approval.request_key)
        .bind(&approval.agent_id)
        .bind(&approval.delegation)
        .bind(&approval.server)
        .bind(&approval.method)
        .bind(&approval.target)
        .bind(&approval.arguments)
        .bind(&approval.reason)
        .bind(&approval.trace_id)
        .bind(&approval.status)
        .bind(approval.created_at)
        .bind(approval.expires_at)
        .bind(approval.decided_at)
        .bind(&approval.decided_by)
        .bind(approval.used_at)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// The newest approval for `request_key` that still counts at `now` (not used, not expired).
    pub async fn current_approval(
        &self,
        request_key: &str,
        now: i64,
    ) -> Result<Option<ApprovalRecord>, RegistryError> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM authz_approvals WHERE request_key = $1 \
             AND status <> 'used' AND expires_at > $2 ORDER BY created_at DESC, id LIMIT 1"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(request_key)
            .bind(now)
            .fetch_optional(pool)
            .await?))
    }

    /// One approval by id, whatever its state.
    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, RegistryError> {
        let sql = format!("SELECT {APPROVAL_COLUMNS} FROM authz_approvals WHERE id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
    }

    /// Approvals that have not expired at `now`, newest first (at most `limit`), with `status`
    /// when given.
    pub async fn list_approvals(
        &self,
        status: Option<&str>,
        now: i64,
        limit: i64,
    ) -> Result<Vec<ApprovalRecord>, RegistryError> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM authz_approvals WHERE expires_at > $1 \
             AND ($2 = '' OR status = $2) ORDER BY created_at DESC, id LIMIT $3"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(now)
            .bind(status.unwrap_or_default())
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Decide a pending, unexpired approval: `approved` or `rejected`, by `by` (known `with`:
    /// `approver` or `admin`) at `now`; an approval then counts until `expires_at`. `false` when
    /// there is no such pending approval.
    pub async fn decide_approval(
        &self,
        id: &str,
        status: &str,
        (by, with): (&str, &str),
        now: i64,
        expires_at: i64,
    ) -> Result<bool, RegistryError> {
        let result = on_pool!(self, pool => sqlx::query(
            "UPDATE authz_approvals SET status = $1, decided_by = $2, decided_at = $3, \
             expires_at = $4, decided_with = $6 \
             WHERE id = $5 AND status = 'pending' AND expires_at > $3",
        )
        .bind(status)
        .bind(by)
        .bind(now)
        .bind(expires_at)
        .bind(id)
        .bind(with)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(result == 1)
    }

    /// Mark an approved, unexpired approval used: `false` when it is not (any more) — each
    /// approval lets exactly one call through, also when two retries race for it.
    pub async fn use_approval(&self, id: &str, now: i64) -> Result<bool, RegistryError> {
        let result = on_pool!(self, pool => sqlx::query(
            "UPDATE authz_approvals SET status = 'used', used_at = $1 \
             WHERE id = $2 AND status = 'approved' AND expires_at > $1",
        )
        .bind(now)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(result == 1)
    }

    /// Delete approvals that expired before `cutoff` or were used before it.
    pub async fn purge_approvals(&self, cutoff: i64) -> Result<u64, RegistryError> {
        let result = on_pool!(self, pool => sqlx::query(
            "DELETE FROM authz_approvals WHERE expires_at <= $1 OR used_at <= $1",
        )
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(result)
    }

    /// Close the pool.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }
}

/// A tool's pin set to a definition (`source` bound as $6), over what it was.
const PIN_UPSERT: &str = "INSERT INTO authz_tool_pins (tenant, server, tool, hash, definition, source, pinned_at, pinned_by) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant, server, tool) DO UPDATE SET \
     hash = excluded.hash, definition = excluded.definition, source = excluded.source, \
     pinned_at = excluded.pinned_at, pinned_by = excluded.pinned_by";

/// A held definition that is no longer held (it became the pin).
const CANDIDATE_DELETE: &str = "DELETE FROM authz_pin_candidates \
     WHERE tenant = $1 AND server = $2 AND tool = $3 AND hash = $4";

/// Raise the pin set's version; used inside the transaction of every change to it.
macro_rules! bump_pin_version {
    ($tx:expr) => {
        sqlx::query("UPDATE authz_pin_version SET version = version + 1 WHERE id = 1")
            .execute($tx)
            .await
    };
}

/// Bind a [`ToolRef`] as `$1` (tenant), `$2` (server) and `$3` (tool).
macro_rules! bind_tool {
    ($query:expr, $tool:expr) => {
        $query
            .bind($tool.tenant)
            .bind($tool.server)
            .bind($tool.tool)
    };
}

/// Make `hash` (canonical `definition`) the pin of `tool` from `source`, by `by`, and drop it
/// from the held definitions: the shared step of an approval and of a manifest.
macro_rules! pin_definition {
    ($tx:expr, $tool:expr, $hash:expr, $definition:expr, $source:expr, $now:expr, $by:expr) => {{
        bind_tool!(sqlx::query(PIN_UPSERT), $tool)
            .bind($hash)
            .bind($definition)
            .bind($source)
            .bind($now)
            .bind($by)
            .execute(&mut *$tx)
            .await?;
        bind_tool!(sqlx::query(CANDIDATE_DELETE), $tool)
            .bind($hash)
            .execute(&mut *$tx)
            .await?;
    }};
}

const PIN_COLUMNS: &str = "tenant, server, tool, hash, definition, source, pinned_at, pinned_by";
const CANDIDATE_COLUMNS: &str =
    "tenant, server, tool, hash, definition, status, first_seen, last_seen, decided_at, decided_by";

/// One tool of one server, as one tenant pins it (docs/pins.md, "Tenants").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolRef<'a> {
    pub tenant: &'a str,
    pub server: &'a str,
    pub tool: &'a str,
}

/// The definition a tool is pinned to (table `authz_tool_pins`, migrations 0006 and 0007).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PinRecord {
    /// Whose pin it is.
    pub tenant: String,
    /// The server's logical name.
    pub server: String,
    /// The tool's name.
    pub tool: String,
    /// `sha256:` and the hex SHA-256 of `definition`.
    pub hash: String,
    /// The definition in its RFC 8785 canonical form.
    pub definition: String,
    /// `first_use`, `approved` or `manifest`.
    pub source: String,
    /// When it was pinned.
    pub pinned_at: i64,
    /// Who approved it (`None` for a first use).
    pub pinned_by: Option<String>,
}

/// A definition held for a decision (table `authz_pin_candidates`, migrations 0006 and 0007).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CandidateRecord {
    /// Whose decision it waits for.
    pub tenant: String,
    /// The server's logical name.
    pub server: String,
    /// The tool's name.
    pub tool: String,
    /// `sha256:` and the hex SHA-256 of `definition`.
    pub hash: String,
    /// The definition in its RFC 8785 canonical form.
    pub definition: String,
    /// `pending` or `rejected`.
    pub status: String,
    /// When a proxy first reported it.
    pub first_seen: i64,
    /// When a proxy last reported it.
    pub last_seen: i64,
    /// When it was rejected.
    pub decided_at: Option<i64>,
    /// Who rejected it.
    pub decided_by: Option<String>,
}

/// What became of a definition a proxy reported ([`AgentRegistry::observe_definition`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// It is the pinned one already.
    Pinned,
    /// It became the tool's pin (trust on first use): the pin set changed.
    FirstUse,
    /// It is held for a decision (new, or seen again).
    Held,
}

/// A pin or a rejected definition as the pin set needs it: tenant, server, tool, hash.
pub type PinKey = (String, String, String, String);

impl AgentRegistry {
    /// The pin set's version, read before its rows (see [`Self::revocations`] for why).
    pub async fn pin_version(&self) -> Result<i64, RegistryError> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT version FROM authz_pin_version WHERE id = 1",
        )
        .fetch_one(pool)
        .await?))
    }

    /// Every pin of every tenant, and every rejected definition the same way.
    pub async fn pin_hashes(&self) -> Result<(Vec<PinKey>, Vec<PinKey>), RegistryError> {
        let pinned: Vec<PinKey> = on_pool!(self, pool => sqlx::query_as(
            "SELECT tenant, server, tool, hash FROM authz_tool_pins",
        )
        .fetch_all(pool)
        .await?);
        let rejected: Vec<PinKey> = on_pool!(self, pool => sqlx::query_as(
            "SELECT tenant, server, tool, hash FROM authz_pin_candidates WHERE status = 'rejected'",
        )
        .fetch_all(pool)
        .await?);
        Ok((pinned, rejected))
    }

    /// Record a definition a proxy saw listed that its pin set did not hold as pinned: with
    /// `first_use` (the server is trusted on first use) it becomes the pin of a tool that has
    /// none; otherwise, or when another definition is pinned (two proxies raced, or it changed),
    /// it is held for a decision. `definition` is canonical, `hash` its hash (checked by the
    /// caller).
    pub async fn observe_definition(
        &self,
        tool: ToolRef<'_>,
        hash: &str,
        definition: &str,
        first_use: bool,
        now: i64,
    ) -> Result<Observed, RegistryError> {
        if first_use {
            let pinned = on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let inserted = bind_tool!(sqlx::query(
                    "INSERT INTO authz_tool_pins (tenant, server, tool, hash, definition, source, pinned_at, pinned_by) \
                     VALUES ($1, $2, $3, $4, $5, 'first_use', $6, NULL) ON CONFLICT (tenant, server, tool) DO NOTHING",
                ), tool)
                .bind(hash)
                .bind(definition)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 1 {
                    bump_pin_version!(&mut *tx)?;
                }
                tx.commit().await?;
                inserted == 1
            });
            if pinned {
                return Ok(Observed::FirstUse);
            }
        }
        if self.pin_of(tool).await?.is_some_and(|pin| pin.hash == hash) {
            return Ok(Observed::Pinned);
        }
        on_pool!(self, pool => bind_tool!(sqlx::query(
            "INSERT INTO authz_pin_candidates (tenant, server, tool, hash, definition, status, first_seen, last_seen) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6) \
             ON CONFLICT (tenant, server, tool, hash) DO UPDATE SET last_seen = excluded.last_seen",
        ), tool)
        .bind(hash)
        .bind(definition)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(Observed::Held)
    }

    /// The pin of `tool`.
    pub async fn pin_of(&self, tool: ToolRef<'_>) -> Result<Option<PinRecord>, RegistryError> {
        let sql = format!(
            "SELECT {PIN_COLUMNS} FROM authz_tool_pins WHERE tenant = $1 AND server = $2 AND tool = $3"
        );
        Ok(
            on_pool!(self, pool => bind_tool!(sqlx::query_as(&sql), tool).fetch_optional(pool).await?),
        )
    }

    /// Pins, by tenant, server and tool (of `tenant` only, when given; at most `limit`).
    pub async fn list_pins(
        &self,
        tenant: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PinRecord>, RegistryError> {
        let sql = format!(
            "SELECT {PIN_COLUMNS} FROM authz_tool_pins WHERE ($1 = '' OR tenant = $1) \
             ORDER BY tenant, server, tool LIMIT $2"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(tenant.unwrap_or_default())
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Held definitions, newest report first: of `tenant` when given, of one tool when `tool`
    /// is given (its tenant then counts), with `status` when given (at most `limit`).
    pub async fn list_candidates(
        &self,
        tenant: Option<&str>,
        tool: Option<ToolRef<'_>>,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CandidateRecord>, RegistryError> {
        let any = ToolRef {
            tenant: tenant.unwrap_or_default(),
            server: "",
            tool: "",
        };
        let sql = format!(
            "SELECT {CANDIDATE_COLUMNS} FROM authz_pin_candidates \
             WHERE ($1 = '' OR tenant = $1) AND ($2 = '' OR (server = $2 AND tool = $3)) \
             AND ($4 = '' OR status = $4) \
             ORDER BY last_seen DESC, tenant, server, tool, hash LIMIT $5"
        );
        Ok(
            on_pool!(self, pool => bind_tool!(sqlx::query_as(&sql), tool.unwrap_or(any))
            .bind(status.unwrap_or_default())
            .bind(limit)
            .fetch_all(pool)
            .await?),
        )
    }

    /// Make the held definition `hash` of `tool` the tool's pin (`approved`, by `by`); a
    /// rejected one may be approved too. `None` when no such definition is held, else the pin it
    /// replaced.
    pub async fn approve_definition(
        &self,
        tool: ToolRef<'_>,
        hash: &str,
        by: &str,
        now: i64,
    ) -> Result<Option<Option<PinRecord>>, RegistryError> {
        let previous = self.pin_of(tool).await?;
        let approved = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let definition: Option<String> = bind_tool!(sqlx::query_scalar(
                "SELECT definition FROM authz_pin_candidates \
                 WHERE tenant = $1 AND server = $2 AND tool = $3 AND hash = $4",
            ), tool)
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
            match definition {
                None => false,
                Some(definition) => {
                    pin_definition!(tx, tool, hash, &definition, "approved", now, by);
                    bump_pin_version!(&mut *tx)?;
                    tx.commit().await?;
                    true
                }
            }
        });
        Ok(approved.then_some(previous))
    }

    /// Pin every definition of a verified signed manifest (`(tool, hash, canonical definition)`)
    /// of `server` for `tenant`, by `by`, in one transaction: each becomes its tool's pin (source
    /// `manifest`) and a held definition with the same hash is no longer held. Returns each
    /// tool's previous pin hash.
    pub async fn pin_manifest(
        &self,
        tenant: &str,
        server: &str,
        tools: &[(String, String, String)],
        by: &str,
        now: i64,
    ) -> Result<Vec<Option<String>>, RegistryError> {
        let mut previous = Vec::with_capacity(tools.len());
        for (tool, _, _) in tools {
            let tool = ToolRef {
                tenant,
                server,
                tool,
            };
            previous.push(self.pin_of(tool).await?.map(|p| p.hash));
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (tool, hash, definition) in tools {
                let tool = ToolRef { tenant, server, tool };
                pin_definition!(tx, tool, hash, definition, "manifest", now, by);
            }
            bump_pin_version!(&mut *tx)?;
            tx.commit().await?;
        });
        Ok(previous)
    }

    /// Reject the held, pending definition `hash` of `tool` (by `by`): `false` when there is no
    /// such pending definition.
    pub async fn reject_definition(
        &self,
        tool: ToolRef<'_>,
        hash: &str,
        by: &str,
        now: i64,
    ) -> Result<bool, RegistryError> {
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let rejected = bind_tool!(sqlx::query(
                "UPDATE authz_pin_candidates SET status = 'rejected', decided_at = $5, decided_by = $6 \
                 WHERE tenant = $1 AND server = $2 AND tool = $3 AND hash = $4 AND status = 'pending'",
            ), tool)
            .bind(hash)
            .bind(now)
            .bind(by)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if rejected == 1 {
                bump_pin_version!(&mut *tx)?;
            }
            tx.commit().await?;
            rejected == 1
        }))
    }
}

async fn open_sqlite(path: &Path) -> Result<SqlitePool, RegistryError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| RegistryError::CreateDir {
            path: parent.to_owned(),
            source,
        })?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    SqlitePoolOptions::new()
        .max_connections(POOL_CONNECTIONS)
        .connect_with(options)
        .await
        .map_err(|source| RegistryError::Open {
            location: path.display().to_string(),
            source,
        })
}

/// A unique-constraint violation becomes `conflict()`; anything else stays a query error.
fn unique_violation(err: sqlx::Error, conflict: impl FnOnce() -> RegistryError) -> RegistryError {
    let is_unique = err
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation());
    if is_unique {
        conflict()
    } else {
        RegistryError::Query(err)
    }
}

struct EncodedEnrollment {
    roles: String,
    scopes: String,
    servers: String,
    may_act: String,
    service_accounts: String,
    clients: String,
}

fn encode_enrollment(enrollment: &AgentEnrollment) -> Result<EncodedEnrollment, RegistryError> {
    let corrupt = |err: serde_json::Error| RegistryError::Corrupt {
        agent: enrollment.id.clone(),
        reason: err.to_string(),
    };
    Ok(EncodedEnrollment {
        roles: serde_json::to_string(&enrollment.roles).map_err(corrupt)?,
        scopes: serde_json::to_string(&enrollment.scopes).map_err(corrupt)?,
        servers: serde_json::to_string(&enrollment.servers).map_err(corrupt)?,
        may_act: serde_json::to_string(&enrollment.may_act).map_err(corrupt)?,
        service_accounts: serde_json::to_string(&enrollment.service_accounts).map_err(corrupt)?,
        clients: serde_json::to_string(&enrollment.clients).map_err(corrupt)?,
    })
}

fn encode_key(agent: &str, key: &ClientKey) -> Result<(String, String), RegistryError> {
    let jwk = serde_json::to_string(key.jwk()).map_err(|err| RegistryError::Corrupt {
        agent: agent.to_owned(),
        reason: err.to_string(),
    })?;
    Ok((key.kid().to_owned(), jwk))
}

fn decode_record(row: AgentRow, keys: Vec<String>) -> Result<AgentRecord, RegistryError> {
    let agent = row.id.clone();
    let corrupt = |what: &str, err: serde_json::Error| RegistryError::Corrupt {
        agent: agent.clone(),
        reason: format!("{what}: {err}"),
    };
    let roles: Vec<String> = serde_json::from_str(&row.roles).map_err(|e| corrupt("roles", e))?;
    let scopes: Vec<String> =
        serde_json::from_str(&row.scopes).map_err(|e| corrupt("scopes", e))?;
    let servers: BTreeMap<String, ServerGrant> =
        serde_json::from_str(&row.servers).map_err(|e| corrupt("servers", e))?;
    let may_act: Vec<String> =
        serde_json::from_str(&row.may_act).map_err(|e| corrupt("may_act", e))?;
    let service_accounts: Vec<String> =
        serde_json::from_str(&row.service_accounts).map_err(|e| corrupt("service_accounts", e))?;
    let clients: Vec<String> =
        serde_json::from_str(&row.clients).map_err(|e| corrupt("clients", e))?;
    let keys = keys
        .iter()
        .map(|jwk| serde_json::from_str(jwk).map_err(|e| corrupt("key", e)))
        .collect::<Result<Vec<ClientJwk>, _>>()?;
    Ok(AgentRecord {
        enrollment: AgentEnrollment {
            id: row.id,
            owner: row.owner,
            roles,
            scopes,
            servers,
            may_act,
            service_accounts,
            clients,
        },
        keys,
        enabled: row.enabled != 0,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Seconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use rsa::rand_core::{OsRng, RngCore};

    use super::*;
    use crate::client_key::tests::TestClientKey;

    /// The PostgreSQL every development and CI machine has (DESIGN.md, test layers).
    const TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// A registry in a fresh schema of the test PostgreSQL, dropped by [`PostgresSchema::drop_now`].
    struct PostgresSchema {
        admin: PgPool,
        name: String,
    }

    impl PostgresSchema {
        async fn create() -> (PostgresSchema, AgentRegistry) {
            let base = std::env::var("BEHAVRY_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| TEST_POSTGRES_URL.to_owned());
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect(&base)
                .await
                .unwrap();
            let name = format!("behavry_authz_test_{:016x}", OsRng.next_u64());
            sqlx::query(&format!("CREATE SCHEMA {name}"))
                .execute(&admin)
                .await
                .unwrap();
            // libpq `options`: every connection of the registry's pool uses the test schema.
            let separator = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{separator}options=-c%20search_path%3D{name}");
            let registry = AgentRegistry::open(&RegistryLocation::Postgres(url))
                .await
                .unwrap();
            (PostgresSchema { admin, name }, registry)
        }

        async fn drop_now(self, registry: AgentRegistry) {
            registry.close().await;
            sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
                .execute(&self.admin)
                .await
                .unwrap();
        }
    }

    pub(crate) async fn sqlite_registry(dir: &Path) -> AgentRegistry {
        AgentRegistry::open(&RegistryLocation::Sqlite(dir.join("state/registry.db")))
            .await
            .unwrap()
    }

    fn enrollment(id: &str) -> AgentEnrollment {
        AgentEnrollment {
            owner: Some("team-a".to_owned()),
            roles: vec!["reader".to_owned()],
            servers: BTreeMap::from([(
                "everything".to_owned(),
                ServerGrant {
                    tools: vec!["echo".to_owned()],
                    ..ServerGrant::default()
                },
            )]),
            may_act: vec!["orchestrator".to_owned()],
            service_accounts: vec![format!("system:serviceaccount:agents:{id}")],
            clients: vec!["claude-code".to_owned()],
            ..AgentEnrollment::new(id)
        }
    }

    fn key(kid: &str) -> ClientKey {
        ClientKey::from_value(TestClientKey::ec().public_jwk(kid)).unwrap()
    }

    /// The same behaviour on both backends.
    async fn exercise(registry: &AgentRegistry) {
        let record = registry
            .enroll(&enrollment("agent-a"), &[key("k1")], true)
            .await
            .unwrap();
        assert_eq!(record.enrollment, enrollment("agent-a"));
        assert_eq!(record.keys.len(), 1);
        assert_eq!(record.keys[0].kid.as_deref(), Some("k1"));
        assert!(record.enabled);
        assert!(record.created_at > 0);

        assert!(matches!(
            registry.enroll(&enrollment("agent-a"), &[], true).await,
            Err(RegistryError::AlreadyEnrolled(id)) if id == "agent-a"
        ));
        // Two keys with the same kid in one enrollment: refused, nothing written.
        assert!(matches!(
            registry
                .enroll(&enrollment("agent-b"), &[key("same"), key("same")], true)
                .await,
            Err(RegistryError::KeyExists { .. })
        ));
        assert_eq!(registry.get("agent-b").await.unwrap(), None);

        // Seeds are added only when absent.
        let mut changed_seed = enrollment("agent-a");
        changed_seed.roles = vec!["admin".to_owned()];
        let added = registry
            .seed(&[changed_seed, AgentEnrollment::new("agent-c")])
            .await
            .unwrap();
        assert_eq!(added, 1);
        assert_eq!(
            registry
                .get("agent-a")
                .await
                .unwrap()
                .unwrap()
                .enrollment
                .roles,
            ["reader"]
        );

        let record = registry.set_enabled("agent-a", false).await.unwrap();
        assert!(!record.enabled);
        assert!(registry.set_enabled("agent-a", true).await.unwrap().enabled);
        assert!(matches!(
            registry.set_enabled("nobody", false).await,
            Err(RegistryError::NotFound(_))
        ));

        let record = registry.add_key("agent-a", &key("k2")).await.unwrap();
        let kids: Vec<_> = record.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["k1", "k2"]);
        assert!(matches!(
            registry.add_key("agent-a", &key("k2")).await,
            Err(RegistryError::KeyExists { .. })
        ));
        assert!(matches!(
            registry.add_key("nobody", &key("k3")).await,
            Err(RegistryError::NotFound(_))
        ));
        // The same kid on another agent is fine: kids are unique per agent.
        registry.add_key("agent-c", &key("k1")).await.unwrap();

        let record = registry.remove_key("agent-a", "k1").await.unwrap();
        assert_eq!(record.keys.len(), 1);
        assert!(matches!(
            registry.remove_key("agent-a", "k1").await,
            Err(RegistryError::KeyNotFound { .. })
        ));

        let ids: Vec<_> = registry
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.enrollment.id)
            .collect();
        assert_eq!(ids, ["agent-a", "agent-c"]);

        registry.delete("agent-a").await.unwrap();
        assert_eq!(registry.get("agent-a").await.unwrap(), None);
        // The deleted agent stays on the revocation list (a tombstone) while its tokens verify.
        let revoked = registry.revocations(unix_now()).await.unwrap();
        assert!(
            revoked
                .agents
                .iter()
                .any(|a| a.agent == "agent-a" && a.reason == AgentRevocationReason::Deleted)
        );
        assert!(revoked.version > 1);
        // Token revocations: the later expiry wins, and purging raises the version.
        let now = unix_now();
        registry.revoke_token("jti-1", now + 60).await.unwrap();
        registry.revoke_token("jti-1", now + 30).await.unwrap();
        registry.revoke_agent("agent-z", now - 10).await.unwrap();
        let revoked = registry.revocations(now).await.unwrap();
        assert_eq!(revoked.tokens.len(), 1);
        assert_eq!(revoked.tokens[0].expires_at, now + 60);
        assert!(!revoked.agents.iter().any(|a| a.agent == "agent-z"));
        assert_eq!(registry.purge_revocations(now).await.unwrap(), 1);
        assert!(registry.revocations(now).await.unwrap().version > revoked.version);
        assert_eq!(registry.purge_revocations(now).await.unwrap(), 0);
        assert!(matches!(
            registry.delete("agent-a").await,
            Err(RegistryError::NotFound(_))
        ));
        // Re-enrolling a deleted id starts clean (its old keys are gone).
        let record = registry
            .enroll(&enrollment("agent-a"), &[], true)
            .await
            .unwrap();
        assert!(record.keys.is_empty());
    }

    /// The approval queries, the same on both databases.
    async fn exercise_approvals(registry: &AgentRegistry) {
        let record = |id: &str, key: &str, created_at: i64| ApprovalRecord {
            id: id.to_owned(),
            request_key: key.to_owned(),
            agent_id: "bot".to_owned(),
            delegation: "[]".to_owned(),
            server: "files".to_owned(),
            method: "tools/call".to_owned(),
            target: "delete_item".to_owned(),
            arguments: r#"{"id":7}"#.to_owned(),
            reason: "destructive".to_owned(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(),
            status: "pending".to_owned(),
            created_at,
            expires_at: created_at + 100,
            decided_at: None,
            decided_by: None,
            used_at: None,
            decided_with: None,
        };
        registry
            .insert_approval(&record("a1", "k", 1000))
            .await
            .unwrap();
        registry
            .insert_approval(&record("a2", "k", 1001))
            .await
            .unwrap();
        registry
            .insert_approval(&record("b1", "other", 1002))
            .await
            .unwrap();
        // The newest one for the key counts.
        let current = registry.current_approval("k", 1050).await.unwrap().unwrap();
        assert_eq!(current.id, "a2");
        assert_eq!(current, record("a2", "k", 1001));
        // Expired: nothing.
        assert!(
            registry
                .current_approval("k", 1101)
                .await
                .unwrap()
                .is_none()
        );

        assert!(
            registry
                .decide_approval("a2", "approved", ("alice", "approver"), 1060, 2000)
                .await
                .unwrap()
        );
        // Only once, and not after it expired.
        assert!(
            !registry
                .decide_approval("a2", "rejected", ("bob", "admin"), 1061, 2000)
                .await
                .unwrap()
        );
        assert!(
            !registry
                .decide_approval("a1", "approved", ("bob", "admin"), 1200, 2000)
                .await
                .unwrap()
        );
        let approved = registry.approval("a2").await.unwrap().unwrap();
        assert_eq!(
            (
                approved.status.as_str(),
                approved.decided_by.as_deref(),
                approved.decided_with.as_deref(),
                approved.expires_at
            ),
            ("approved", Some("alice"), Some("approver"), 2000)
        );
        let pending = registry
            .list_approvals(Some("pending"), 1050, 10)
            .await
            .unwrap();
        assert_eq!(
            pending.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b1", "a1"]
        );
        assert_eq!(
            registry.list_approvals(None, 1050, 10).await.unwrap().len(),
            3
        );

        assert!(registry.use_approval("a2", 1070).await.unwrap());
        assert!(!registry.use_approval("a2", 1071).await.unwrap());
        assert!(!registry.use_approval("b1", 1071).await.unwrap());
        assert!(
            registry
                .current_approval("k", 1072)
                .await
                .unwrap()
                .is_some_and(|r| r.id == "a1")
        );

        // a1 and b1 expired at 1100 and 1102, a2 was used at 1070.
        assert_eq!(registry.purge_approvals(1101).await.unwrap(), 2);
        assert!(registry.approval("a2").await.unwrap().is_none());
        assert!(registry.approval("b1").await.unwrap().is_some());
    }

    /// Pins: first use, a change held, approval, rejection, versions; the same on both databases.
    async fn exercise_pins(registry: &AgentRegistry) {
        let v0 = registry.pin_version().await.unwrap();
        const READ: ToolRef<'static> = ToolRef {
            tenant: "default",
            server: "files",
            tool: "read",
        };
        let seen = |hash: &'static str, first_use: bool| async move {
            registry
                .observe_definition(READ, hash, "{\"name\":\"read\"}", first_use, 100)
                .await
                .unwrap()
        };
        // Not trusted on first use: held, no pin.
        assert_eq!(seen("sha256:a", false).await, Observed::Held);
        assert!(registry.pin_of(READ).await.unwrap().is_none());
        assert_eq!(registry.pin_version().await.unwrap(), v0);
        // Trusted on first use: pinned once; the same again is the pin; another is held.
        assert_eq!(seen("sha256:b", true).await, Observed::FirstUse);
        assert_eq!(seen("sha256:b", true).await, Observed::Pinned);
        assert_eq!(seen("sha256:c", true).await, Observed::Held);
        assert_eq!(seen("sha256:c", true).await, Observed::Held);
        let v1 = registry.pin_version().await.unwrap();
        assert_eq!(v1, v0 + 1);
        let pin = registry.pin_of(READ).await.unwrap().unwrap();
        assert_eq!(
            (pin.hash.as_str(), pin.source.as_str()),
            ("sha256:b", "first_use")
        );
        let held = registry
            .list_candidates(None, Some(READ), Some("pending"), 10)
            .await
            .unwrap();
        let hashes: Vec<&str> = held.iter().map(|c| c.hash.as_str()).collect();
        assert_eq!(hashes.len(), 2);
        assert!(hashes.contains(&"sha256:a") && hashes.contains(&"sha256:c"));
        // Approve c: it replaces b and leaves the held rows.
        let replaced = registry
            .approve_definition(READ, "sha256:c", "ops", 200)
            .await
            .unwrap();
        assert_eq!(replaced.unwrap().unwrap().hash, "sha256:b");
        let pin = registry.pin_of(READ).await.unwrap().unwrap();
        assert_eq!(
            (
                pin.hash.as_str(),
                pin.source.as_str(),
                pin.pinned_by.as_deref()
            ),
            ("sha256:c", "approved", Some("ops"))
        );
        assert_eq!(registry.pin_version().await.unwrap(), v1 + 1);
        assert!(
            registry
                .approve_definition(READ, "sha256:c", "ops", 200)
                .await
                .unwrap()
                .is_none()
        );
        // Reject a: it is in the set's rejections; it cannot be rejected twice.
        assert!(
            registry
                .reject_definition(READ, "sha256:a", "ops", 300)
                .await
                .unwrap()
        );
        assert!(
            !registry
                .reject_definition(READ, "sha256:a", "ops", 300)
                .await
                .unwrap()
        );
        let (pinned, rejected) = registry.pin_hashes().await.unwrap();
        assert_eq!(pinned, [pin_key("default", "sha256:c")]);
        assert_eq!(rejected, [pin_key("default", "sha256:a")]);
        assert_eq!(registry.pin_version().await.unwrap(), v1 + 2);
        assert_eq!(registry.list_pins(None, 10).await.unwrap().len(), 1);
        // A signed manifest pins its definitions in one change, over what was there.
        let previous = registry
            .pin_manifest(
                "default",
                "files",
                &[
                    (
                        "read".into(),
                        "sha256:m".into(),
                        "{\"name\":\"read\"}".into(),
                    ),
                    (
                        "write".into(),
                        "sha256:w".into(),
                        "{\"name\":\"write\"}".into(),
                    ),
                ],
                "release-bot",
                400,
            )
            .await
            .unwrap();
        assert_eq!(previous, [Some("sha256:c".to_owned()), None]);
        assert_eq!(registry.pin_version().await.unwrap(), v1 + 3);
        let read = registry.pin_of(READ).await.unwrap().unwrap();
        assert_eq!(
            (read.hash.as_str(), read.source.as_str()),
            ("sha256:m", "manifest")
        );
        assert_eq!(registry.list_pins(None, 10).await.unwrap().len(), 2);
        // Another tenant trusts the same server's tool on its own: its first use is its own pin,
        // the default tenant's pin and held definitions are not its.
        let blue = ToolRef {
            tenant: "blue",
            ..READ
        };
        assert_eq!(
            registry
                .observe_definition(blue, "sha256:b", "{\"name\":\"read\"}", true, 500)
                .await
                .unwrap(),
            Observed::FirstUse
        );
        assert_eq!(
            registry.pin_of(blue).await.unwrap().unwrap().hash,
            "sha256:b"
        );
        assert_eq!(
            registry.pin_of(READ).await.unwrap().unwrap().hash,
            "sha256:m"
        );
        assert!(
            registry
                .list_candidates(Some("blue"), None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            registry
                .approve_definition(blue, "sha256:c", "ops", 600)
                .await
                .unwrap()
                .is_none(),
            "a definition held for the default tenant is not held for blue"
        );
        assert_eq!(registry.list_pins(Some("blue"), 10).await.unwrap().len(), 1);
        assert_eq!(registry.list_pins(None, 10).await.unwrap().len(), 3);
        let (pinned, _) = registry.pin_hashes().await.unwrap();
        assert!(pinned.contains(&pin_key("blue", "sha256:b")));
    }

    fn pin_key(tenant: &str, hash: &str) -> PinKey {
        (
            tenant.to_owned(),
            "files".to_owned(),
            "read".to_owned(),
            hash.to_owned(),
        )
    }

    #[tokio::test]
    async fn sqlite_registry_behaves_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let registry = sqlite_registry(dir.path()).await;
        exercise(&registry).await;
        exercise_approvals(&registry).await;
        exercise_pins(&registry).await;
        registry.close().await;
        // Reopening the file (migrations already applied) finds the same agents.
        let reopened = sqlite_registry(dir.path()).await;
        assert_eq!(reopened.list().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn postgres_registry_behaves_the_same() {
        let (schema, registry) = PostgresSchema::create().await;
        exercise(&registry).await;
        exercise_approvals(&registry).await;
        exercise_pins(&registry).await;
        schema.drop_now(registry).await;
    }
}
