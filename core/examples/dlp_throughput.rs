//! DLP scanner throughput, built for wasm32-wasip1 to measure the detectors where the filter
//! runs them: in V8 (Envoy's Wasm runtime; `node tests/bench/dlp_wasm.mjs` runs this in Node's
//! V8) and in wasmtime. Natively it runs too (`cargo run --release -p behavry-core --example
//! dlp_throughput`), for comparison. Prints one line per workload: MB/s and µs per 64 KB body,
//! for the DLP detectors and then for the prompt-injection rules (`injection/...`), which the
//! filter runs on the same answers.

use std::hint::black_box;
use std::time::{Duration, Instant};

use behavry_core::dlp::{DlpConfig, Scanner, scan_json};
use behavry_core::injection;

#[path = "../benches/dlp_workload.rs"]
mod workload;

/// Runs `f` repeatedly for about `budget` and returns the mean time per run.
fn time_per_run(budget: Duration, mut f: impl FnMut()) -> Duration {
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
    let report = |name: &str, bytes: usize, per_run: Duration| {
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
        let per_run = time_per_run(budget, || {
            black_box(scanner.scan_text(black_box(text)));
        });
        report(name, text.len(), per_run);
    }
    let per_run = time_per_run(budget, || {
        black_box(scan_json(&scanner, black_box(&doc)));
    });
    report("scan_json/tool_result_64k", bytes, per_run);
    for (name, text) in &texts {
        let per_run = time_per_run(budget, || {
            black_box(injection::scan_text(black_box(text), ""));
        });
        report(&format!("injection/{name}"), text.len(), per_run);
    }
    let per_run = time_per_run(budget, || {
        black_box(injection::scan_value(black_box(&doc)));
    });
    report("injection/scan_json/tool_result_64k", bytes, per_run);
}
