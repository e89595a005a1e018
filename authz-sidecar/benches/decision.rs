//! Speed of one policy decision with the default bundle (`policies/`), in process: what
//! `POST /v1/decide` spends in regorus, without HTTP. DESIGN budget: p50 ≤ 10 µs, p99 ≤ 50 µs.
//!
//! `cargo bench -p behavry-authz --bench decision`. 100 enrolled agents, each with the
//! `developer` role and grants of its own on 3 servers, so the data document is not trivially
//! small. Before the criterion runs, a percentile table (p50, p99, mean over
//! [`PERCENTILE_RUNS`] decisions per case) is printed for `decide` and, for comparison, for the
//! interpreter path `decide_interpreted`. For instruction counts, see [`count_runs`].

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use behavry_authz::policy::{Counters, PolicyInput};
use behavry_authz::policy_cases::zero_counters;
use behavry_authz::{AgentEnrollment, PolicyBundle, ServerGrant};
use behavry_core::wire::{AgentIdentity, DecisionRequest, RequestFacts};
use criterion::Criterion;
use serde_json::json;

/// Timed decisions per case for the percentile table.
const PERCENTILE_RUNS: usize = 20_000;

fn agents() -> Vec<AgentEnrollment> {
    (0..100)
        .map(|i| AgentEnrollment {
            roles: vec!["developer".to_owned()],
            servers: ["everything", "scripted", "files"]
                .iter()
                .map(|server| {
                    (
                        (*server).to_owned(),
                        ServerGrant {
                            tools: vec![
                                "echo".to_owned(),
                                "get-sum".to_owned(),
                                "read_file".to_owned(),
                                format!("t{i}"),
                            ],
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

fn request(agent: &str, server: &str, method: &str, tool: Option<&str>) -> DecisionRequest {
    DecisionRequest {
        trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(),
        agent: AgentIdentity {
            id: agent.to_owned(),
            scopes: vec!["mcp".to_owned()],
            ..AgentIdentity::default()
        },
        request: RequestFacts {
            server: server.to_owned(),
            method: method.to_owned(),
            tool: tool.map(str::to_owned),
            arguments: tool.map(|_| json!({"message": "hello", "n": 3})),
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

fn call(agent: &str, tool: &str) -> DecisionRequest {
    request(agent, "everything", "tools/call", Some(tool))
}

/// The benchmarked cases: name, request, blast-radius usage.
fn cases() -> Vec<(&'static str, DecisionRequest, Counters)> {
    let windows = ["1m".to_owned(), "1h".to_owned()];
    let zero = zero_counters(&windows, &Counters::new());
    let mut read_file = request("agent-42", "scripted", "tools/call", Some("read_file"));
    read_file.request.arguments = Some(json!({"path": "/srv/shared/reports/q3.txt"}));
    let over: Counters =
        serde_json::from_value(json!({"agent": {"1m": {"calls": 1200}}})).unwrap_or_default();
    vec![
        (
            "allow (granted tool)",
            call("agent-42", "echo"),
            zero.clone(),
        ),
        (
            "deny (tool not granted)",
            call("agent-42", "printEnv"),
            zero.clone(),
        ),
        (
            "deny (step-up scope)",
            call("agent-42", "get-sum"),
            zero.clone(),
        ),
        (
            "deny (unknown agent)",
            call("intruder", "echo"),
            zero.clone(),
        ),
        (
            "allow (tools/list)",
            request("agent-42", "everything", "tools/list", None),
            zero.clone(),
        ),
        ("allow (path argument rule)", read_file, zero.clone()),
        (
            "deny (budget exceeded)",
            call("agent-42", "echo"),
            zero_counters(&windows, &over),
        ),
    ]
}

/// p50, p99 and mean of `runs` timed calls of `f`, in µs.
fn percentiles(runs: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..runs / 10 {
        f();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| {
        let index = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(index).copied().map(micros).unwrap_or(f64::NAN)
    };
    let mean = times.iter().copied().map(micros).sum::<f64>() / times.len().max(1) as f64;
    (at(0.5), at(0.99), mean)
}

fn load() -> Option<PolicyBundle> {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    // Under an instruction counter (tens of times slower) the 50 ms bound would cut the run.
    let limit = if std::env::var_os("BEHAVRY_DECISION_RUNS").is_some() {
        Duration::from_secs(30)
    } else {
        Duration::from_millis(50)
    };
    match PolicyBundle::load(&policies, &agents(), limit) {
        Ok(bundle) => Some(bundle),
        Err(err) => {
            eprintln!("cannot load the default bundle: {err}");
            None
        }
    }
}

fn percentile_table(bundle: &PolicyBundle) {
    println!("| case | path | p50 µs | p99 µs | mean µs |");
    println!("|---|---|---|---|---|");
    for (name, request, counters) in cases() {
        let input = PolicyInput::new(&request, None, &counters, SystemTime::now());
        let (p50, p99, mean) = percentiles(PERCENTILE_RUNS, || {
            black_box(bundle.decide(black_box(&input)).ok());
        });
        println!("| {name} | decide | {p50:.2} | {p99:.2} | {mean:.2} |");
        let (p50, p99, mean) = percentiles(PERCENTILE_RUNS / 4, || {
            black_box(bundle.decide_interpreted(black_box(&input)).ok());
        });
        println!("| {name} | interpreter | {p50:.2} | {p99:.2} | {mean:.2} |");
    }
}

fn decisions(c: &mut Criterion, bundle: &PolicyBundle) {
    let mut group = c.benchmark_group("decide");
    for (name, request, counters) in cases() {
        let input = PolicyInput::new(&request, None, &counters, SystemTime::now());
        group.bench_function(name, |b| {
            b.iter(|| black_box(bundle.decide(black_box(&input))));
        });
    }
    group.finish();
}

/// `BEHAVRY_DECISION_CASE=<case name> BEHAVRY_DECISION_RUNS=<n>`: decide that case `n` times and
/// exit, for instruction counts (`valgrind --tool=callgrind`), which do not depend on what else
/// the machine is doing: run it with `n` and with 0 and take the difference.
fn count_runs(bundle: &PolicyBundle) -> bool {
    let (Ok(name), Ok(runs)) = (
        std::env::var("BEHAVRY_DECISION_CASE"),
        std::env::var("BEHAVRY_DECISION_RUNS"),
    ) else {
        return false;
    };
    let runs: usize = runs.parse().unwrap_or(0);
    let Some((_, request, counters)) = cases().into_iter().find(|(case, _, _)| *case == name)
    else {
        eprintln!("no case named {name:?}");
        return true;
    };
    let input = PolicyInput::new(&request, None, &counters, SystemTime::now());
    for _ in 0..runs {
        black_box(bundle.decide(black_box(&input)).ok());
    }
    true
}

fn main() {
    let Some(bundle) = load() else {
        return;
    };
    if count_runs(&bundle) {
        return;
    }
    // `cargo test --benches` runs each benchmark once: no table then.
    if !std::env::args().any(|arg| arg == "--test") {
        percentile_table(&bundle);
    }
    let mut criterion = Criterion::default()
        .sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    decisions(&mut criterion, &bundle);
    criterion.final_summary();
}
