//! behavry-authz: the authz-sidecar that runs next to Envoy.
//!
//! It answers three questions for the rest of Behavry:
//! - *who is this agent?* — it keeps the agent registry (SQLite or PostgreSQL: owner, roles,
//!   grants, public keys, enabled or not), issues short-lived RS256 access tokens at
//!   `POST /oauth/token` to agents that authenticate with a `private_key_jwt` client assertion
//!   (RFC 7523), and serves its public key as a JWK Set that Envoy's `jwt_authn` verifies tokens
//!   with. `behavry token mint` mints offline for the config's agents ([`token::mint_token`]);
//! - *may this call proceed?* — `POST /v1/decide` evaluates the Rego bundle (regorus) against a
//!   [`behavry_core::wire::DecisionRequest`] from the filter, with the enabled agents' grants;
//! - *which policy decided?* — every decision carries the bundle digest; the bundle is reloaded
//!   from `policy_dir` when it changes (every `policy_reload_ms`), a bad one refused.
//!
//! Layout: [`config`] (TOML + env, validated at load), [`signing_key`] (RSA key file, JWKS),
//! [`token`] (JWT minting), [`policy`] (bundle loading, decisions, Rego tests), [`registry`]
//! (the database), [`directory`] (the in-memory snapshot decisions read), [`client_key`] and
//! [`assertion`] (client public keys, assertion checks), [`oauth`] (token endpoint, RFC 8414
//! metadata), [`revocation`] (the list of revoked tokens and agents the filter polls at
//! `GET /v1/revocations`), [`credentials`] (`POST /v1/credentials`: the filter's upstream
//! credentials, exchanged tokens or secrets from [`upstream::SecretsConfig`]), [`admin`] (admin API), [`http`] (routes and the error → HTTP mapping). The binary
//! `behavry-authz-sidecar` is a thin shell over [`run`].

pub mod admin;
pub mod approvals;
pub mod assertion;
pub mod bearer;
pub mod blast_radius;
pub mod budget;
pub mod client_key;
pub mod config;
pub mod credentials;
pub mod directory;
pub mod http;
pub mod key_ring;
pub mod kubernetes;
pub mod manifest;
pub mod oauth;
pub mod pins;
pub mod policy;
pub mod policy_audit;
pub mod policy_cases;
pub mod registry;
pub mod revocation;
pub mod signing_key;
pub mod token;
pub mod token_exchange;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::upstream::SecretsConfigExt as _;

pub use client_key::{ClientKey, KeyFormatError, parse_public_key};
pub use config::{AgentEnrollment, Config, ConfigError, EnvSource, ProcessEnv, ServerGrant};
pub use credentials::CredentialService;
pub use directory::{AgentDirectory, DirectoryError, PolicyStatus, ReloadOutcome};
pub use http::{AppState, app};
pub use key_ring::{KeyRing, Rotation};
pub use oauth::AuthorizationServer;
pub use policy::{PolicyBundle, PolicyError, PolicySource};
pub use registry::{AgentRecord, AgentRegistry, RegistryError};
pub use revocation::RevocationStore;
pub use signing_key::{JwkSet, KeyError, KeyOrigin, SigningKey};
pub use token::{TokenError, mint_token};

/// Why the sidecar could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The signing key could not be loaded or generated.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The policy bundle is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The agent registry could not be opened, migrated or seeded.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The blast-radius counter store could not be opened.
    #[error("blast radius counters: {0}")]
    BlastRadius(#[from] budget::BudgetError),
    /// The first snapshot of the registry could not be built.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Load the policy bundle, open the agent registry (seeding the config's agents when absent) and
/// the signing key (generated on first start) named by `config`.
pub async fn prepare(config: &Config) -> Result<AppState, StartError> {
    // The bundle first, checked with the config's agents: a config that cannot run must not
    // leave a new key file or database behind.
    let policy = PolicySource::load(
        &config.policy_dir,
        Duration::from_millis(config.decision_timeout_ms),
    )?
    .with_engine(config.policy_engine);
    policy.bundle(&config.agents)?;
    // The secret store too: a wrong key or an unreadable Vault token fails the start here,
    // naming the `[secrets]` field, before anything is written.
    let secrets = config
        .secrets
        .open(&ProcessEnv)
        .map_err(ConfigError::from)?;
    let credentials = CredentialService::new(config, secrets).map_err(ConfigError::from)?;
    tracing::info!(
        upstreams = config.upstreams.len(),
        credentials_endpoint = credentials.enabled(),
        file_secrets = config.secrets.file.is_some(),
        vault_secrets = config.secrets.vault.is_some(),
        "upstream credentials ready"
    );
    if config.proxy_token.is_none() {
        tracing::warn!(
            "no proxy_token_file: /v1/decide and /v1/policy/table answer anyone who can reach \
             the sidecar (decisions consume budgets and hold approvals)"
        );
    }
    let blast_radius = blast_radius::BlastRadius::open(&config.blast_radius).await?;
    tracing::info!(
        backend = blast_radius.backend_name(),
        windows = ?blast_radius.window_labels(),
        "blast radius counters ready"
    );
    let registry = AgentRegistry::open(&config.registry).await?;
    let seeded = registry.seed(&config.agents).await?;
    let revocations = RevocationStore::open(registry.clone()).await?;
    let pins = pins::PinStore::open(registry.clone(), config.pins.clone()).await?;
    let approvals = approvals::Approvals::new(
        registry.clone(),
        config.approval_ttl_secs,
        &config.public_url,
        config.approvers.clone(),
    );
    let directory = AgentDirectory::open(registry, policy).await?;
    let snapshot = directory.snapshot();
    tracing::info!(
        policy_dir = %config.policy_dir.display(),
        registry = ?config.registry,
        digest = snapshot.bundle.digest(),
        rego_vm = snapshot.bundle.uses_vm(),
        seeded,
        enabled_agents = snapshot.enabled_agents(),
        admin_api = config.admin_token.is_some(),
        approvers = config.approvers.len(),
        revocation_version = revocations.list().version,
        pin_version = pins.set(behavry_core::pins::DEFAULT_TENANT).version,
        "loaded policy bundle and agent registry"
    );
    // The active key signs; the next and the retired keys are published too (key_ring.rs), so
    // rotation never leaves a verifier without the key of a live token.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let (ring, origin) = KeyRing::load_or_init(&config.key_file, now)?;
    let kid = ring.active().kid();
    match origin {
        KeyOrigin::Generated => tracing::info!(
            path = %config.key_file.display(), kid, "generated a new signing key"
        ),
        KeyOrigin::Loaded => tracing::info!(
            path = %config.key_file.display(), kid, next = ring.next().kid(),
            retired = ring.retired().count(), "loaded the signing key ring"
        ),
    }
    let jwks = ring.jwks();
    let mut authorization_server = AuthorizationServer::new(config, ring.active().clone());
    authorization_server.set_verification_keys(&jwks);
    let jwks = Arc::new(jwks);
    tracing::info!(
        token_endpoint = authorization_server.token_endpoint(),
        "token endpoint ready"
    );
    Ok(AppState {
        directory: Arc::new(directory),
        revocations: Arc::new(revocations),
        jwks,
        authorization_server: Arc::new(authorization_server),
        admin_credential: config.admin_token.clone().map(Arc::new),
        credentials: Arc::new(credentials),
        blast_radius: Arc::new(blast_radius),
        approvals: Arc::new(approvals),
        pins: Arc::new(pins),
        proxy_credential: config.proxy_token.clone().map(Arc::new),
    })
}

/// Prepare, bind `config.listen`, and serve until `shutdown` completes (in-flight requests are
/// finished first).
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = prepare(config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    tracing::info!("authz-sidecar listening on {addr}");
    let sweeper = tokio::spawn(revocation::sweep_periodically(state.revocations.clone()));
    let pin_reloader = tokio::spawn(pins::reload_periodically(state.pins.clone()));
    let approval_purger = tokio::spawn(approvals::purge_periodically(state.approvals.clone()));
    // Policy changes go to the audit-sink when one is configured.
    let auditor = match &config.audit_url {
        Some(url) => Some(Arc::new(policy_audit::PolicyAuditor::new(url).map_err(
            |err| {
                StartError::Config(ConfigError::Invalid {
                    field: "audit_url".to_owned(),
                    reason: err.to_string(),
                })
            },
        )?)),
        None => None,
    };
    if let Some(auditor) = &auditor {
        state.pins.audit_with(auditor.clone());
        auditor.record(
            &policy_audit::PolicyChange::Loaded {
                digest: state.directory.snapshot().bundle.digest().to_owned(),
            },
            std::time::SystemTime::now(),
        );
        auditor.flush().await;
    }
    // Hot reload of the policy folder (0 = off): a bad bundle is refused, the old one kept.
    let reloader = (config.policy_reload_ms > 0).then(|| {
        tokio::spawn(directory::reload_policy_periodically(
            state.directory.clone(),
            config.policy_dir.clone(),
            Duration::from_millis(config.policy_reload_ms),
            auditor.clone(),
        ))
    });
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(StartError::Serve);
    sweeper.abort();
    pin_reloader.abort();
    approval_purger.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    served?;
    tracing::info!("authz-sidecar stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;

    fn config_in(dir: &Path, policy_dir: &Path) -> Config {
        let text = format!(
            "key_file = \"state/key.pem\"\npolicy_dir = {:?}\n[[agents]]\nid = \"demo-agent\"\n",
            policy_dir.display().to_string()
        );
        Config::from_toml_str(&text, &dir.join("authz.toml"), dir, &HashMap::new()).unwrap()
    }

    #[tokio::test]
    async fn prepare_generates_the_key_once_and_serves_it() {
        let dir = tempfile::tempdir().unwrap();
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let config = config_in(dir.path(), &policies);
        let first = prepare(&config).await.unwrap();
        assert!(dir.path().join("state/key.pem").is_file());
        assert!(dir.path().join(config::DEFAULT_REGISTRY_FILE).is_file());
        assert!(first.directory.snapshot().agent("demo-agent").is_some());
        first.directory.registry().close().await;
        let second = prepare(&config).await.unwrap();
        assert_eq!(first.jwks, second.jwks);
        assert_eq!(
            first.directory.snapshot().bundle.digest(),
            second.directory.snapshot().bundle.digest()
        );
    }

    #[tokio::test]
    async fn a_seed_disabled_in_the_registry_stays_disabled_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let config = config_in(dir.path(), &policies);
        let first = prepare(&config).await.unwrap();
        first
            .directory
            .registry()
            .set_enabled("demo-agent", false)
            .await
            .unwrap();
        first.directory.registry().close().await;
        let second = prepare(&config).await.unwrap();
        assert!(second.directory.snapshot().agent("demo-agent").is_none());
    }

    #[tokio::test]
    async fn a_wrong_secrets_key_refuses_to_start_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let key = behavry_secrets::FileStoreKey::generate().unwrap();
        behavry_secrets::EncryptedFileStore::create(dir.path().join("secrets.bin"), key).unwrap();
        behavry_secrets::FileStoreKey::generate()
            .unwrap()
            .write_key_file(&dir.path().join("wrong.key"))
            .unwrap();
        let text = format!(
            "key_file = \"state/key.pem\"\npolicy_dir = {:?}\n\
             [secrets.file]\npath = \"secrets.bin\"\nkey_file = \"wrong.key\"\n",
            policies.display().to_string()
        );
        let config = Config::from_toml_str(
            &text,
            &dir.path().join("authz.toml"),
            dir.path(),
            &HashMap::new(),
        )
        .unwrap();
        let err = prepare(&config).await.unwrap_err().to_string();
        assert!(err.contains("`secrets.file.key_file`"), "{err}");
        assert!(!dir.path().join("state/key.pem").exists());
        assert!(!dir.path().join(config::DEFAULT_REGISTRY_FILE).exists());
    }

    #[tokio::test]
    async fn bad_bundle_refuses_to_start_without_side_effects() {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(
            policies.join("broken.rego"),
            "package behavry.authz\ndecision if {\n",
        )
        .unwrap();
        let err = prepare(&config_in(dir.path(), &policies))
            .await
            .unwrap_err();
        assert!(matches!(err, StartError::Policy(_)), "{err}");
        assert!(err.to_string().contains("broken.rego"), "{err}");
        assert!(!dir.path().join("state/key.pem").exists());
        assert!(!dir.path().join(config::DEFAULT_REGISTRY_FILE).exists());
    }
}
