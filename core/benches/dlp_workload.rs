//! The DLP bench workloads, shared by `benches/dlp.rs` (criterion, native) and
//! `examples/dlp_throughput.rs` (the same scan compiled to wasm32-wasip1 and run in V8 and
//! wasmtime). Deterministic: the same bytes every run.

/// Size of each workload: the DESIGN.md budget speaks of a 64 KB body.
pub const BODY_BYTES: usize = 64 * 1024;

/// Log lines as a shell or log-search tool returns them: timestamps, public addresses, UUIDs,
/// durations, paths, and one secret (an e-mail address, an internal address, a token) every
/// 40 lines or so.
pub fn logs() -> String {
    let mut out = String::with_capacity(BODY_BYTES + 256);
    let mut n: u64 = 0;
    while out.len() < BODY_BYTES {
        let line = match n % 40 {
            7 => format!(
                "2026-11-30T10:{:02}:{:02}Z WARN user jane.doe{}@corp.example.com failed login from 10.1.{}.{}\n",
                n % 60,
                (n * 7) % 60,
                n,
                n % 250,
                (n * 3) % 250
            ),
            23 => format!(
                "2026-11-30T10:{:02}:{:02}Z DEBUG env GITHUB_TOKEN=ghp_{:0>36} (rotated)\n",
                n % 60,
                (n * 7) % 60,
                n
            ),
            _ => format!(
                "2026-11-30T10:{:02}:{:02}.{:03}Z INFO req={:08x}-{:04x}-4abc-9def-{:012x} GET /api/v2/items/{} from 34.{}.{}.{} took {}.{} ms status=200 bytes={}\n",
                n % 60,
                (n * 7) % 60,
                n % 1000,
                n * 2_654_435_761 % 0xffff_ffff,
                n % 0xffff,
                n * 97,
                n,
                n % 256,
                (n * 5) % 256,
                (n * 11) % 256,
                n % 90,
                n % 10,
                n * 37
            ),
        };
        out.push_str(&line);
        n += 1;
    }
    out
}

/// Prose, as a fetch or documentation tool returns it: words, punctuation, few digits, no
/// secrets.
pub fn prose() -> String {
    const WORDS: &[&str] = &[
        "the",
        "server",
        "returns",
        "a",
        "list",
        "of",
        "tools",
        "each",
        "with",
        "its",
        "name,",
        "description",
        "and",
        "input",
        "schema;",
        "clients",
        "call",
        "them",
        "by",
        "name.",
        "Authorization",
        "is",
        "optional",
        "but",
        "recommended",
        "for",
        "remote",
        "servers",
        "(see",
        "section",
        "2.1).",
        "Tokens",
        "must",
        "never",
        "be",
        "logged.",
    ];
    let mut out = String::with_capacity(BODY_BYTES + 64);
    let mut n = 0usize;
    while out.len() < BODY_BYTES {
        out.push_str(WORDS.get(n * 7 % WORDS.len()).copied().unwrap_or("word"));
        out.push(if n % 17 == 16 { '\n' } else { ' ' });
        n += 1;
    }
    out
}

/// A CSV export: nothing but numbers, dates and separators, the worst case for the numeric
/// detectors (every field starts a digit run).
pub fn csv_numbers() -> String {
    let mut out = String::with_capacity(BODY_BYTES + 128);
    let mut n: u64 = 1;
    while out.len() < BODY_BYTES {
        out.push_str(&format!(
            "{},{},2026-{:02}-{:02},{}.{:02},{},{}\n",
            n,
            n * 7_919,
            n % 12 + 1,
            n % 28 + 1,
            n * 13 % 10_000,
            n % 100,
            n * 1_000_003 % 9_999_999_999,
            n % 997
        ));
        n += 1;
    }
    out
}

/// A `tools/call` result of about 64 KB as the filter sees it: text content items holding the
/// log workload, and structured content with nested fields, one of them a password.
pub fn tool_result_json() -> serde_json::Value {
    let logs = logs();
    let mut content = Vec::new();
    for chunk in logs.as_bytes().chunks(4096) {
        content.push(serde_json::json!({
            "type": "text",
            "text": String::from_utf8_lossy(chunk),
        }));
    }
    serde_json::json!({
        "content": content,
        "structuredContent": {
            "rows": (0..20).map(|i| serde_json::json!({"id": i, "owner": format!("team-{i}"), "region": "eu-west-1"})).collect::<Vec<_>>(),
            "connection": {"host": "db.internal", "password": "Zx9!Lq2#Mv8$Rt5%"},
        },
        "isError": false,
    })
}
