//! Criterion benches of the DLP scanner (`behavry_core::dlp`), natively: the whole built-in
//! detector set over 64 KB bodies of three kinds (log lines with a few secrets, prose, a CSV of
//! numbers), and the JSON walk over a 64 KB `tools/call` result. The same workloads run in V8
//! and wasmtime through `examples/dlp_throughput.rs`; numbers in docs/performance.md ("DLP").
//!
//! The prompt-injection scanner (`behavry_core::injection`) runs over the same workloads: the
//! filter reads a result with both.
//!
//! Run with `cargo bench -p behavry-core --bench dlp` (part of `make bench`).

use std::hint::black_box;
use std::time::Duration;

use behavry_core::dlp::{DlpConfig, Scanner, scan_json};
use behavry_core::injection;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "dlp_workload.rs"]
mod workload;

/// One scanner over the three text workloads and the 64 KB `tools/call` result.
fn scanner_group(
    c: &mut Criterion,
    name: &str,
    scan_text: impl Fn(&str),
    scan_value: impl Fn(&serde_json::Value),
) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (name, text) in [
        ("scan_text/logs_64k", workload::logs()),
        ("scan_text/prose_64k", workload::prose()),
        ("scan_text/csv_numbers_64k", workload::csv_numbers()),
    ] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| b.iter(|| scan_text(black_box(&text))));
    }
    let doc = workload::tool_result_json();
    let bytes = serde_json::to_vec(&doc).map_or(0, |v| v.len());
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("scan_json/tool_result_64k", |b| {
        b.iter(|| scan_value(black_box(&doc)))
    });
    group.finish();
}

fn dlp(c: &mut Criterion) {
    let Ok(scanner) = Scanner::new(&DlpConfig::default()) else {
        return;
    };
    scanner_group(
        c,
        "dlp",
        |text| {
            black_box(scanner.scan_text(text));
        },
        |doc| {
            black_box(scan_json(&scanner, doc));
        },
    );
}

fn injection(c: &mut Criterion) {
    scanner_group(
        c,
        "injection",
        |text| {
            black_box(injection::scan_text(text, ""));
        },
        |doc| {
            black_box(injection::scan_value(doc));
        },
    );
}

criterion_group!(benches, dlp, injection);
criterion_main!(benches);
