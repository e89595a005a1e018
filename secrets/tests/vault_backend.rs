//! The Vault KV v2 backend against `behavry-vault-standin`, served on a real loopback socket.
//! The stand-in exists because no Vault server can be installed on these machines; it follows
//! Vault's documented KV v2 answers (token header, versioned reads, 403/404).

// Test code: a failing unwrap is a failing test, helpers included (clippy's test allowances
// cover only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use behavry_secrets::{
    SecretError, SecretRef, SecretStore, SecretValue, VaultError, VaultKvStore, VaultSettings,
    VaultToken,
};
use behavry_vault_standin::StandinState;
use serde_json::json;

const TOKEN: &str = "hvs.standin-test-token";
const SECRET_V1: &str = "ghp_version_one_value";
const SECRET_V2: &str = "ghp_version_two_value";

struct Standin {
    address: String,
    http: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Standin {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(behavry_vault_standin::serve(
            listener,
            Arc::new(StandinState::new(TOKEN)),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            address,
            http: reqwest::Client::new(),
            _shutdown: shutdown,
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.address))
            .header("X-Vault-Token", TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }

    fn store(&self, token: &str) -> VaultKvStore {
        VaultKvStore::new(
            VaultSettings::new(&self.address),
            VaultToken::new(token.to_owned()).unwrap(),
        )
        .unwrap()
    }

    /// Two versions of `kv/upstream/github` with a `token` field each.
    async fn with_two_versions() -> Self {
        let standin = Self::start().await;
        for value in [SECRET_V1, SECRET_V2] {
            standin
                .post(
                    "/v1/kv/data/upstream/github",
                    json!({"data": {"token": value, "other": "x"}}),
                )
                .await;
        }
        standin
    }
}

fn reference(text: &str) -> SecretRef {
    SecretRef::parse(text).unwrap()
}

/// No error message or debug form may contain a secret value or the token.
fn assert_no_leak(err: &SecretError) {
    for shown in [err.to_string(), format!("{err:?}")] {
        for secret in [SECRET_V1, SECRET_V2, TOKEN] {
            assert!(!shown.contains(secret), "{shown:?} leaks {secret}");
        }
    }
}

#[tokio::test]
async fn reads_the_latest_version() {
    let standin = Standin::with_two_versions().await;
    let value = standin
        .store(TOKEN)
        .get(&reference("vault:kv/upstream/github#token"))
        .await
        .unwrap();
    assert_eq!(value.expose(), SECRET_V2);
    assert_eq!(format!("{value:?} {value}"), "[REDACTED] [REDACTED]");
}

#[tokio::test]
async fn reads_a_given_version() {
    let standin = Standin::with_two_versions().await;
    let store = standin.store(TOKEN);
    let v1 = store
        .get(&reference("vault:kv/upstream/github#token?version=1"))
        .await
        .unwrap();
    assert_eq!(v1.expose(), SECRET_V1);
    let v2 = store
        .get(&reference("vault:kv/upstream/github#token?version=2"))
        .await
        .unwrap();
    assert_eq!(v2.expose(), SECRET_V2);
}

#[tokio::test]
async fn wrong_token_is_permission_denied() {
    let standin = Standin::with_two_versions().await;
    let err = standin
        .store("hvs.wrong-token")
        .get(&reference("vault:kv/upstream/github#token"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SecretError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "permission denied reading secret vault:kv/upstream/github#token"
    );
    assert_no_leak(&err);
}

#[tokio::test]
async fn unknown_secret_version_or_field_is_not_found() {
    let standin = Standin::with_two_versions().await;
    let store = standin.store(TOKEN);
    for text in [
        "vault:kv/upstream/gitlab#token",
        "vault:kv/upstream/github#token?version=3",
        "vault:kv/upstream/github#missing_field",
    ] {
        let err = store.get(&reference(text)).await.unwrap_err();
        assert!(
            matches!(err, SecretError::NotFound { .. }),
            "{text}: {err:?}"
        );
        assert_eq!(err.to_string(), format!("secret {text} not found"));
        assert_no_leak(&err);
    }
}

#[tokio::test]
async fn deleted_or_destroyed_version_is_not_found() {
    let standin = Standin::with_two_versions().await;
    let store = standin.store(TOKEN);
    let v1 = reference("vault:kv/upstream/github#token?version=1");
    assert!(store.get(&v1).await.is_ok());

    standin
        .post("/v1/kv/delete/upstream/github", json!({"versions": [1]}))
        .await;
    let err = store.get(&v1).await.unwrap_err();
    assert!(matches!(err, SecretError::NotFound { .. }), "{err:?}");
    assert_no_leak(&err);

    // Destroying the latest version hides "latest" too (Vault does not fall back to an older one).
    standin
        .post("/v1/kv/destroy/upstream/github", json!({"versions": [2]}))
        .await;
    let err = store
        .get(&reference("vault:kv/upstream/github#token"))
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn non_string_field_is_an_error_without_the_value() {
    let standin = Standin::start().await;
    standin
        .post("/v1/kv/data/numbers", json!({"data": {"pin": 123456789}}))
        .await;
    let err = standin
        .store(TOKEN)
        .get(&reference("vault:kv/numbers#pin"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SecretError::Vault { source, .. } if matches!(**source, VaultError::FieldNotString { .. })),
        "{err:?}"
    );
    assert!(!err.to_string().contains("123456789"));
}

#[tokio::test]
async fn cache_serves_repeated_reads_within_the_ttl() {
    let standin = Standin::with_two_versions().await;
    let mut settings = VaultSettings::new(&standin.address);
    settings.cache_ttl = Duration::from_secs(600);
    let store = VaultKvStore::new(settings, VaultToken::new(TOKEN.to_owned()).unwrap()).unwrap();
    let latest = reference("vault:kv/upstream/github#token");
    assert_eq!(store.get(&latest).await.unwrap().expose(), SECRET_V2);
    // A new version written after the first read is not seen until the entry expires.
    standin
        .post(
            "/v1/kv/data/upstream/github",
            json!({"data": {"token": "ghp_version_three"}}),
        )
        .await;
    assert_eq!(store.get(&latest).await.unwrap().expose(), SECRET_V2);
    // Without a cache the new version is read at once.
    assert_eq!(
        standin.store(TOKEN).get(&latest).await.unwrap().expose(),
        "ghp_version_three"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    // Accepted by the kernel (backlog) but never read: the request is sent and no answer comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = VaultSettings::new(format!("http://{}", silent.local_addr().unwrap()));
    settings.request_timeout = Duration::from_millis(300);
    let store = VaultKvStore::new(settings, VaultToken::new(TOKEN.to_owned()).unwrap()).unwrap();
    let latest = reference("vault:kv/upstream/github#token");
    let read = store.get(&latest);
    // The outer bound only keeps a broken timeout from hanging the test run.
    let err = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the client's own timeout must end the request")
        .unwrap_err();
    assert!(
        matches!(&err, SecretError::Vault { source, .. } if matches!(**source, VaultError::Timeout { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("did not answer within 300 ms"),
        "{err}"
    );
    assert_no_leak(&err);
    drop(silent);
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    // Bind then drop: the port is (very likely) closed, so the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let store = VaultKvStore::new(
        VaultSettings::new(address),
        VaultToken::new(TOKEN.to_owned()).unwrap(),
    )
    .unwrap();
    let err = store.get(&reference("vault:kv/a#b")).await.unwrap_err();
    assert!(
        matches!(&err, SecretError::Vault { source, .. } if matches!(**source, VaultError::Unreachable(_))),
        "{err:?}"
    );
    assert_no_leak(&err);
}

#[test]
fn secret_values_do_not_show_in_formatted_output() {
    let value = SecretValue::new(SECRET_V1.to_owned());
    let token = VaultToken::new(TOKEN.to_owned()).unwrap();
    let shown = format!("{value} {value:?} {token:?} {:?}", (value.clone(), &token));
    assert!(
        !shown.contains(SECRET_V1) && !shown.contains(TOKEN),
        "{shown}"
    );
}
