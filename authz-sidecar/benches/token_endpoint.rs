//! Token endpoint latency: the real sidecar router on a loopback port, driven over HTTP/1.1
//! (one keep-alive connection, sequential requests).
//!
//! Cases: (a) `client_credentials` with a fresh ES256 `private_key_jwt` assertion per request
//! (signed before the clock starts); (b) token exchange (RFC 8693) of the agent's token with an
//! actor token. Prints p50/p99/p99.9 and requests per second per case and writes them to
//! `target/bench/token_endpoint.json` (override with `BEHAVRY_BENCH_OUT`). `BEHAVRY_BENCH_N`
//! sets the requests per case (default 2000).
//!
//! Run: `cargo bench -p behavry-authz --bench token_endpoint`.

// A bench is a test harness: panics on setup failures are its error reporting.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use behavry_authz::{AgentEnrollment, ClientKey, Config, app, prepare};
use p256::ecdsa::signature::Signer as _;
use rsa::rand_core::{OsRng, RngCore as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

const DEFAULT_REQUESTS: usize = 2000;
const EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Bound on one request, so a stuck server cannot hang the bench.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One agent's signing key, for client assertions.
struct Client {
    id: &'static str,
    key: p256::ecdsa::SigningKey,
}

impl Client {
    fn new(id: &'static str) -> Client {
        Client {
            id,
            key: p256::ecdsa::SigningKey::random(&mut OsRng),
        }
    }

    fn public_jwk(&self) -> Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        json!({
            "kty": "EC", "crv": "P-256", "kid": "bench",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        })
    }

    /// A fresh RFC 7523 assertion for `audience` (unique `jti`).
    fn assertion(&self, audience: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let header = json!({"alg": "ES256", "kid": "bench", "typ": "JWT"});
        let claims = json!({
            "iss": self.id, "sub": self.id, "aud": audience, "iat": now, "exp": now + 60,
            "jti": format!("{:016x}{:016x}", OsRng.next_u64(), OsRng.next_u64()),
        });
        let input = format!("{}.{}", b64(&header), b64(&claims));
        let signature: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(pairs);
    form.finish()
}

/// A minimal HTTP/1.1 keep-alive client: enough for `POST /oauth/token` against our own server.
struct Connection {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Connection {
    async fn open(addr: std::net::SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Connection {
            stream: BufReader::new(stream),
            host: addr.to_string(),
        }
    }

    /// POST `body` as a form; answers the status and the JSON body.
    async fn post_form(&mut self, body: &str) -> (u16, Value) {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(body))
            .await
            .expect("request timed out")
    }

    async fn exchange(&mut self, body: &str) -> (u16, Value) {
        let request = format!(
            "POST /oauth/token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).await.unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

/// Latency percentiles (microseconds) and throughput of one case.
fn summarize(name: &str, mut samples: Vec<Duration>, total: Duration) -> Value {
    samples.sort();
    let pick = |q: f64| {
        // Nearest-rank percentile.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1e6
    };
    #[allow(clippy::cast_precision_loss)]
    let rps = samples.len() as f64 / total.as_secs_f64();
    let result = json!({
        "case": name,
        "requests": samples.len(),
        "p50_us": pick(0.50).round(),
        "p99_us": pick(0.99).round(),
        "p999_us": pick(0.999).round(),
        "max_us": (samples.last().unwrap().as_secs_f64() * 1e6).round(),
        "req_per_s": rps.round(),
    });
    println!(
        "{name:<40} n={:<6} p50={:>8.0}us p99={:>8.0}us p99.9={:>8.0}us  {:>7.0} req/s",
        samples.len(),
        pick(0.50),
        pick(0.99),
        pick(0.999),
        rps
    );
    result
}

fn output_path() -> PathBuf {
    match std::env::var_os("BEHAVRY_BENCH_OUT") {
        Some(path) => PathBuf::from(path),
        None => {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            // The workspace's target folder (the crate sits one level below the root).
            manifest
                .parent()
                .unwrap_or(manifest)
                .join("target/bench/token_endpoint.json")
        }
    }
}

fn main() {
    let requests: usize = std::env::var("BEHAVRY_BENCH_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_REQUESTS)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(requests));
}

async fn run(requests: usize) {
    let dir = tempfile::tempdir().unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nkey_file = \"state/key.pem\"\npolicy_dir = {:?}\n",
        policies.display().to_string()
    );
    let config = Config::from_toml_str(
        &text,
        &dir.path().join("authz.toml"),
        dir.path(),
        &HashMap::new(),
    )
    .unwrap();
    let state = prepare(&config).await.unwrap();

    let agent = Client::new("bench-agent");
    let actor = Client::new("bench-actor");
    let registry = state.directory.registry();
    for (client, may_act) in [(&agent, vec!["bench-actor".to_owned()]), (&actor, vec![])] {
        let enrollment = AgentEnrollment {
            scopes: vec!["mcp".to_owned(), "mcp:read".to_owned()],
            may_act,
            ..AgentEnrollment::new(client.id)
        };
        let key = ClientKey::from_value(client.public_jwk()).unwrap();
        registry.enroll(&enrollment, &[key], true).await.unwrap();
    }
    state.directory.refresh().await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(state))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    // The issuer is an accepted assertion audience (RFC 7523 §3 item 3).
    let audience = config.issuer.clone();
    let mut connection = Connection::open(addr).await;

    // (a) client_credentials, a fresh assertion each time.
    let bodies: Vec<String> = (0..requests)
        .map(|_| {
            let assertion = agent.assertion(&audience);
            form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ])
        })
        .collect();
    let mut samples = Vec::with_capacity(requests);
    let started = Instant::now();
    for body in &bodies {
        let t = Instant::now();
        let (status, json) = connection.post_form(body).await;
        samples.push(t.elapsed());
        assert_eq!(status, 200, "{json}");
    }
    let client_credentials = summarize(
        "client_credentials + private_key_jwt",
        samples,
        started.elapsed(),
    );

    // (b) token exchange with an actor token.
    let token_of = |client: &Client| {
        form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &client.assertion(&audience)),
        ])
    };
    let subject = connection.post_form(&token_of(&agent)).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let actor_token = connection.post_form(&token_of(&actor)).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = form(&[
        ("grant_type", EXCHANGE_GRANT),
        ("subject_token", &subject),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("actor_token", &actor_token),
        ("actor_token_type", ACCESS_TOKEN_TYPE),
        ("scope", "mcp:read"),
    ]);
    let mut samples = Vec::with_capacity(requests);
    let started = Instant::now();
    for _ in 0..requests {
        let t = Instant::now();
        let (status, json) = connection.post_form(&body).await;
        samples.push(t.elapsed());
        assert_eq!(status, 200, "{json}");
    }
    let exchange = summarize(
        "token exchange (subject + actor token)",
        samples,
        started.elapsed(),
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;

    let report = json!({
        "bench": "token_endpoint",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cases": [client_credentials, exchange],
    });
    let path = output_path();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("wrote {}", path.display());
}
