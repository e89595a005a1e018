//! Criterion benches of behavry-core's parsers, the work the filter does on every message.
//!
//! - `parse_message`: bytes to a validated JSON-RPC message (size and depth checks, UTF-8,
//!   duplicate-key-refusing JSON parse, JSON-RPC 2.0 validation) for a typical `tools/call`
//!   request and for a 64 KiB `tools/call` result;
//! - `sse_decode`: an MCP Streamable HTTP response stream (priming event, progress
//!   notifications, a large result) fed in 1 KiB chunks, as Envoy may hand the body to the filter.
//!
//! Run with `cargo bench -p behavry-core` (or `make bench`); results in docs/performance.md.
//! Kept quick on purpose: small sample size, about 2 s of measurement per bench.

use std::hint::black_box;
use std::time::Duration;

use behavry_core::limits::Limits;
use behavry_core::mcp::parse_message;
use behavry_core::sse::SseDecoder;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A `tools/call` request as an MCP client sends it (2025-06-18 shape, with `_meta`).
const TOOLS_CALL: &[u8] = br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search_issues","arguments":{"query":"label:bug state:open sort:updated","repository":"behavry/behavry","limit":25,"includeComments":false},"_meta":{"progressToken":"c2f1e0d4-7a1b-4f0e-9d2a-5b8c6e3f1a27"}}}"#;

/// Size of the large result body.
const LARGE_RESULT_BYTES: usize = 64 * 1024;
/// Size of the chunks the SSE decoder is fed.
const SSE_CHUNK_BYTES: usize = 1024;

/// Text that looks like tool output: words, numbers, and the escapes JSON needs (quotes, newlines).
fn tool_output_text(approx_len: usize) -> String {
    // Already JSON-escaped (raw string): `\"` and `\n` are what a serializer writes.
    let line = r#"line {n}: status=\"ok\" path=/srv/data/file_{n}.txt size={n}0 bytes, checksum a1b2c3d4\n"#;
    let mut text = String::with_capacity(approx_len + line.len());
    let mut n = 0u32;
    while text.len() < approx_len {
        text.push_str(&line.replace("{n}", &n.to_string()));
        n += 1;
    }
    text
}

/// A JSON-RPC `tools/call` result of exactly `size` bytes (padding the text to fit).
fn large_result(size: usize) -> Vec<u8> {
    let head = r#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":""#;
    let tail = r#""}],"isError":false}}"#;
    let mut text = tool_output_text(size);
    text.truncate(size.saturating_sub(head.len() + tail.len()));
    // Do not end on a lone backslash: it would escape the closing quote.
    while text.ends_with('\\') {
        text.pop();
        text.push(' ');
    }
    let mut body = String::with_capacity(size);
    body.push_str(head);
    body.push_str(&text);
    body.push_str(tail);
    body.into_bytes()
}

/// What a server answers a long tool call with: a priming event, progress notifications, the
/// result (about 237 KiB in all).
fn sse_stream() -> Vec<u8> {
    let mut stream = String::from("id: 0\ndata: \n\n");
    for i in 1..=1000u32 {
        stream.push_str(&format!(
            "event: message\nid: {i}\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":\"c2f1e0d4\",\"progress\":{i},\"total\":1000,\"message\":\"step {i} of 1000\"}}}}\n\n"
        ));
    }
    let result = String::from_utf8_lossy(&large_result(LARGE_RESULT_BYTES)).into_owned();
    stream.push_str("event: message\nid: 1001\ndata: ");
    stream.push_str(&result);
    stream.push_str("\n\n");
    stream.into_bytes()
}

fn bench_parse_message(c: &mut Criterion) {
    let limits = Limits::default();
    let large = large_result(LARGE_RESULT_BYTES);
    assert!(
        parse_message(TOOLS_CALL, &limits).is_ok(),
        "tools/call must parse"
    );
    let parsed = parse_message(&large, &limits);
    assert!(parsed.is_ok(), "the large result must parse: {parsed:?}");

    let mut group = c.benchmark_group("parse_message");
    group.throughput(Throughput::Bytes(TOOLS_CALL.len() as u64));
    group.bench_function("tools_call_request", |b| {
        b.iter(|| parse_message(black_box(TOOLS_CALL), &limits))
    });
    group.throughput(Throughput::Bytes(large.len() as u64));
    group.bench_function("tools_call_result_64KiB", |b| {
        b.iter(|| parse_message(black_box(&large), &limits))
    });
    group.finish();
}

fn bench_sse_decode(c: &mut Criterion) {
    let stream = sse_stream();
    let limits = Limits::default();
    let decode_all = |input: &[u8]| -> usize {
        let mut decoder = SseDecoder::new(limits.max_sse_event_bytes);
        let mut events = 0;
        for chunk in input.chunks(SSE_CHUNK_BYTES) {
            events += decoder.feed(chunk).map_or(0, |decoded| decoded.len());
        }
        events
    };
    assert_eq!(decode_all(&stream), 1002, "every event must decode");

    let mut group = c.benchmark_group("sse_decode");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("mcp_stream_1KiB_chunks", |b| {
        b.iter(|| decode_all(black_box(&stream)))
    });
    group.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = quick();
    targets = bench_parse_message, bench_sse_decode
}
criterion_main!(benches);
