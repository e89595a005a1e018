//! DLP scanner throughput, built for wasm32-wasip1 to measure the detectors where the filter
//! runs them: in V8 (Envoy's Wasm runtime; `node tests/bench/dlp_wasm.mjs` runs this in Node's
//! V8) and in wasmtime. Natively it runs too (`cargo run --release -p behavry-core --example
//! dlp_throughput`), for comparison. Prints one line per workload: MB/s and µs per 64 KB body,
//! for the DLP detectors and then for the prompt-injection rules (`injection/...`), which the
//! filter runs on the same answers.
//!
//! `DLP_BENCH_RUNS=<n>` runs each workload exactly `n` times instead (no warm-up), and
//! `DLP_BENCH_ONLY=<text>` only the workloads whose name starts with it: deterministic work for
//! `valgrind --tool=callgrind`, whose instruction counts compare runs on a noisy machine.

use std::hint::black_box;
use std::time::{Duration, Instant};

use behavry_core::dlp::{DlpConfig, Scanner, scan_json};
use behavry_core::injection;

#[path = "../benches/dlp_workload.rs"]
mod workload;

/// Runs `f` repeatedly for about `budget` (or exactly `runs` times) and returns the mean time
/// per run.
fn time_per_run(budget: Duration, runs: Option<u32>, mut f: impl FnMut()) -> Duration {
    if let Some(runs) = runs {
        let start = Instant::now();
        for _ in 0..runs {
            f();
        }
        return start.elapsed() / runs.max(1);
    }
    // Warm up (V8 tiers code up after the first calls).
    for _ in 0..20 {
        f();
    }
    let start = Instant::now();
    let mut runs = 0u32;
    while start.elapsed() < budget {
        f();
        runs += 1;
    }
    start.elapsed() / runs.max(1)
}

fn main() {
    let scanner = match Scanner::new(&DlpConfig::default()) {
        Ok(scanner) => scanner,
        Err(err) => {
            eprintln!("dlp_throughput: {err}");
            std::process::exit(2);
        }
    };
    let budget = Duration::from_millis(
        std::env::var("DLP_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );
    let runs: Option<u32> = std::env::var("DLP_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok());
    let only = std::env::var("DLP_BENCH_ONLY").unwrap_or_default();
    let timed = |name: &str, f: &mut dyn FnMut()| {
        name.starts_with(only.as_str())
            .then(|| time_per_run(budget, runs, f))
    };
    let report = |name: &str, bytes: usize, per_run: Option<Duration>| {
        let Some(per_run) = per_run else {
            return;
        };
        let mb_s = bytes as f64 / per_run.as_secs_f64() / 1e6;
        println!(
            "{name:<28} {mb_s:>8.1} MB/s {:>9.1} us per body ({bytes} bytes)",
            per_run.as_secs_f64() * 1e6
        );
    };
    let texts = [
        ("scan_text/logs_64k", workload::logs()),
        ("scan_text/prose_64k", workload::prose()),
        ("scan_text/csv_numbers_64k", workload::csv_numbers()),
    ];
    let doc = workload::tool_result_json();
    let bytes = serde_json::to_vec(&doc).map_or(0, |v| v.len());
    for (name, text) in &texts {
        let per_run = timed(name, &mut || {
            black_box(scanner.scan_text(black_box(text)));
        });
        report(name, text.len(), per_run);
    }
    let name = "scan_json/tool_result_64k";
    let per_run = timed(name, &mut || {
        black_box(scan_json(&scanner, black_box(&doc)));
    });
    report(name, bytes, per_run);
    for (name, text) in &texts {
        let name = format!("injection/{name}");
        let per_run = timed(&name, &mut || {
            black_box(injection::scan_text(black_box(text), ""));
        });
        report(&name, text.len(), per_run);
    }
    let name = "injection/scan_json/tool_result_64k";
    let per_run = timed(name, &mut || {
        black_box(injection::scan_value(black_box(&doc)));
    });
    report(name, bytes, per_run);
}
