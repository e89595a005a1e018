//! Speed of one policy decision with the default bundle (`policies/`), in process: what
//! `POST /v1/decide` spends in regorus, without HTTP. DESIGN budget: p50 ≤ 10 µs, p99 ≤ 50 µs.
//!
//! `cargo bench -p behavry-authz --bench decision`. 100 enrolled agents with grants on 3 servers,
//! so the data document is not trivially small.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime};

use behavry_authz::policy::{Counters, PolicyInput};
use behavry_authz::policy_cases::zero_counters;
use behavry_authz::{AgentEnrollment, PolicyBundle, ServerGrant};
use behavry_core::wire::{AgentIdentity, DecisionRequest, RequestFacts};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn agents() -> Vec<AgentEnrollment> {
    (0..100)
        .map(|i| AgentEnrollment {
            servers: ["everything", "scripted", "files"]
                .iter()
                .map(|server| {
                    (
                        (*server).to_owned(),
                        ServerGrant {
                            tools: vec!["echo".to_owned(), "get-sum".to_owned(), format!("t{i}")],
                            resources: vec![format!("file:///data/{i}")],
                            prompts: vec![],
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            ..AgentEnrollment::new(format!("agent-{i}"))
        })
        .collect()
}

fn call(agent: &str, tool: &str) -> DecisionRequest {
    DecisionRequest {
        trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(),
        agent: AgentIdentity {
            id: agent.to_owned(),
            scopes: vec!["mcp".to_owned()],
            ..AgentIdentity::default()
        },
        request: RequestFacts {
            server: "everything".to_owned(),
            method: "tools/call".to_owned(),
            tool: Some(tool.to_owned()),
            arguments: Some(json!({"message": "hello", "n": 3})),
            ..RequestFacts::default()
        },
        tool: None,
    }
}

fn decisions(c: &mut Criterion) {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let bundle = match PolicyBundle::load(&policies, &agents(), Duration::from_millis(50)) {
        Ok(bundle) => bundle,
        Err(err) => {
            eprintln!("cannot load the default bundle: {err}");
            return;
        }
    };
    let mut group = c.benchmark_group("decide");
    for (name, request) in [
        ("allow (granted tool)", call("agent-42", "echo")),
        ("deny (tool not granted)", call("agent-42", "printEnv")),
        ("deny (step-up scope)", call("agent-42", "get-sum")),
        ("deny (unknown agent)", call("intruder", "echo")),
    ] {
        let counters = zero_counters(&["1m".to_owned(), "1h".to_owned()], &Counters::new());
        let input = PolicyInput::new(&request, None, &counters, SystemTime::now());
        group.bench_function(name, |b| {
            b.iter(|| black_box(bundle.decide(black_box(&input))));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3));
    targets = decisions
}
criterion_main!(benches);
