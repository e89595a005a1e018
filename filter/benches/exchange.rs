//! Criterion bench of the filter's own work per MCP call, natively: what the Wasm filter runs in
//! Envoy's V8 for each exchange, without Envoy's host work around it (docs/performance.md, "CPU
//! per call by process"). End-to-end runs on a shared 2-core machine vary by 20-30 % between
//! runs; this measures the filter's code alone, steadily enough to compare changes to it.
//!
//! - `leased_call`: an allowed `tools/call` decided by the worker under a lease: request head and
//!   body (parse, classify, facts), the lease lookup, the JSON response read for the outcome,
//!   the three audit events serialized as the shim queues them;
//! - `sidecar_denial`: a `tools/call` the sidecar denies: the decision request serialized, the
//!   answer applied, the JSON-RPC error built, the audit events serialized.
//!
//! Run with `cargo bench -p behavry-filter --bench exchange` (or `make bench`).

use std::hint::black_box;
use std::time::Duration;

use behavry_core::wire::{DecisionResponse, Lease, Obligations};
use behavry_filter::config::FilterConfig;
use behavry_filter::exchange::{BodyAction, Exchange, RequestHead};
use behavry_filter::inline::InlinePolicy;
use criterion::{Criterion, criterion_group, criterion_main};

const CONFIG: &str = r#"{
    "routes": [{"pathPrefix": "/mcp/scripted", "server": "scripted"}],
    "authz": {"cluster": "authz"},
    "audit": {"cluster": "audit"},
    "inline": {"enabled": true}
}"#;

/// The bench's call, as `make bench` sends it.
const CALL: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello from behavry-loadgen"}}}"#;
/// The upstream's answer to it.
const RESULT: &[u8] = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello from behavry-loadgen"}],"isError":false}}"#;
/// What jwt_authn forwards for the agent's verified token: base64url of
/// `{"sub":"bench-agent","exp":2000000000,"scope":"mcp","jti":"j-1"}`.
const PAYLOAD: &str =
    "eyJzdWIiOiJiZW5jaC1hZ2VudCIsImV4cCI6MjAwMDAwMDAwMCwic2NvcGUiOiJtY3AiLCJqdGkiOiJqLTEifQ";

fn head() -> RequestHead {
    RequestHead {
        method: "POST".into(),
        path: "/mcp/scripted".into(),
        agent: Some("bench-agent".into()),
        token_type: Some("at+jwt".into()),
        jwt_payload: Some(PAYLOAD.into()),
        ..RequestHead::default()
    }
}

fn decision(allow: bool, lease: Option<Lease>) -> DecisionResponse {
    DecisionResponse {
        allow,
        reasons: if allow {
            vec![]
        } else {
            vec!["the agent may not call this tool".into()]
        },
        rule_ids: vec![
            if allow {
                "behavry.tools.granted"
            } else {
                "behavry.tools.not_granted"
            }
            .into(),
        ],
        bundle_digest: "sha256:0123456789abcdef".into(),
        obligations: Obligations {
            lease,
            ..Obligations::default()
        },
        client_matches: None,
        approval: None,
    }
}

/// The exchange up to its decision: started, head and body read; `None` if it is not asked of
/// the sidecar (checked before measuring).
fn asked(config: &FilterConfig) -> Option<Exchange> {
    let mut exchange = Exchange::start(config, head(), [7; 24])?;
    exchange.on_request_head(false);
    match exchange.on_request_body(config, CALL.len(), Some(CALL), 1, &|_: &str| None) {
        BodyAction::AskAuthz(request) => {
            black_box(request);
            Some(exchange)
        }
        _ => None,
    }
}

/// The three audit events as the shim queues them: one JSON line each.
fn ship(exchange: &mut Exchange) -> usize {
    exchange
        .take_audit_events()
        .iter()
        .map(|event| serde_json::to_vec(event).map_or(0, |line| line.len()))
        .sum()
}

fn leased_call(c: &mut Criterion, config: &FilterConfig) {
    let mut inline = InlinePolicy::new(64);
    let lease = Lease {
        calls: u32::MAX,
        seconds: 3600,
        reserved_at_ms: Some(1),
        ..Lease::default()
    };
    let first = asked(config);
    assert!(
        first.is_some(),
        "the bench's call must be asked of the sidecar"
    );
    let Some(first) = first else { return };
    inline.remember(
        || first.decision_key(),
        || first.agent_identity(),
        &decision(true, Some(lease)),
        1,
    );
    assert!(
        asked(config).is_some_and(|e| e.local_decision(&mut inline, 2).is_some()),
        "the bench's call must be decided under the lease"
    );
    c.bench_function("leased_call", |b| {
        b.iter(|| {
            let Some(mut exchange) = asked(config) else {
                return 0;
            };
            let Some((decision, source)) = exchange.local_decision(&mut inline, 2) else {
                return 0;
            };
            exchange.on_local_decision(config, decision, source, 2);
            exchange.on_response_head(200, Some("application/json"), false, config, 3);
            exchange.on_response_body(config, RESULT.len(), RESULT, true, 4);
            exchange.on_done(5);
            black_box(ship(&mut exchange))
        });
    });
}

fn sidecar_denial(c: &mut Criterion, config: &FilterConfig) {
    c.bench_function("sidecar_denial", |b| {
        b.iter(|| {
            let Some(mut exchange) = asked(config) else {
                return 0;
            };
            black_box(exchange.on_decision(config, Ok(decision(false, None)), 2));
            exchange.on_done(3);
            black_box(ship(&mut exchange))
        });
    });
}

fn benches(c: &mut Criterion) {
    let config = FilterConfig::from_json(CONFIG.as_bytes());
    assert!(config.is_ok(), "the bench's configuration: {config:?}");
    let Ok(config) = config else { return };
    leased_call(c, &config);
    sidecar_denial(c, &config);
}

criterion_group! {
    name = exchange;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(exchange);
