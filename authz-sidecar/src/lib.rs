//! behavry-authz: the authz-sidecar that runs next to Envoy.
//!
//! It answers three questions for the rest of Behavry:
//! - *who is this agent?* — it mints short-lived RS256 access tokens for enrolled agents
//!   ([`token::mint_token`], also used offline by `behavry token mint`) and serves the public key
//!   as a JWK Set that Envoy's `jwt_authn` verifies them with;
//! - *may this call proceed?* — `POST /v1/decide` evaluates the Rego bundle (regorus) against a
//!   [`behavry_core::wire::DecisionRequest`] from the filter;
//! - *which policy decided?* — every decision carries the bundle digest.
//!
//! Layout: [`config`] (TOML + env, validated at load), [`signing_key`] (RSA key file, JWKS),
//! [`token`] (JWT minting), [`policy`] (bundle loading, decisions, Rego tests), [`http`] (routes and
//! the error → HTTP mapping). The binary `behavry-authz-sidecar` is a thin shell over [`run`].

pub mod config;
pub mod http;
pub mod policy;
pub mod signing_key;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::{Config, ConfigError, EnvSource, ProcessEnv};
pub use http::{AppState, app};
pub use policy::{PolicyBundle, PolicyError};
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

/// Load the policy bundle and the signing key (generated on first start) named by `config`.
pub fn prepare(config: &Config) -> Result<AppState, StartError> {
    // The bundle first: a config that cannot run must not leave a new key file behind.
    let bundle = PolicyBundle::load(
        &config.policy_dir,
        &config.agents,
        Duration::from_millis(config.decision_timeout_ms),
    )?;
    tracing::info!(
        policy_dir = %config.policy_dir.display(),
        digest = bundle.digest(),
        agents = config.agents.len(),
        "loaded policy bundle"
    );
    let (key, origin) = SigningKey::load_or_generate(&config.key_file)?;
    match origin {
        KeyOrigin::Generated => tracing::info!(
            path = %config.key_file.display(), kid = key.kid(), "generated a new signing key"
        ),
        KeyOrigin::Loaded => tracing::info!(
            path = %config.key_file.display(), kid = key.kid(), "loaded signing key"
        ),
    }
    Ok(AppState {
        bundle: Arc::new(bundle),
        jwks: Arc::new(key.jwks()),
    })
}

/// Prepare, bind `config.listen`, and serve until `shutdown` completes (in-flight requests are
/// finished first).
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = prepare(config)?;
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
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(StartError::Serve)?;
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

    #[test]
    fn prepare_generates_the_key_once_and_serves_it() {
        let dir = tempfile::tempdir().unwrap();
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let config = config_in(dir.path(), &policies);
        let first = prepare(&config).unwrap();
        assert!(dir.path().join("state/key.pem").is_file());
        let second = prepare(&config).unwrap();
        assert_eq!(first.jwks, second.jwks);
        assert_eq!(first.bundle.digest(), second.bundle.digest());
    }

    #[test]
    fn bad_bundle_refuses_to_start_without_side_effects() {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(
            policies.join("broken.rego"),
            "package behavry.authz\ndecision if {\n",
        )
        .unwrap();
        let err = prepare(&config_in(dir.path(), &policies)).unwrap_err();
        assert!(matches!(err, StartError::Policy(_)), "{err}");
        assert!(err.to_string().contains("broken.rego"), "{err}");
        assert!(!dir.path().join("state/key.pem").exists());
    }
}
