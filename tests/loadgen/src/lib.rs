//! `behavry-loadgen`: the closed-loop load generator of Behavry's benchmarks.
//!
//! It POSTs one fixed JSON-RPC body (a `tools/call`) over keep-alive HTTP/1.1 connections, one
//! connection per concurrent worker, and reports latency percentiles and throughput as one JSON
//! line ([`Report`]). `tests/bench/tools_call_latency.py` runs it against the upstream directly,
//! through bare Envoy and through Envoy with Behavry, in the same run (docs/performance.md).
//!
//! This library holds the pure parts, tested here: the percentile math ([`LatencySummary`]), the
//! check that an answer is a successful JSON-RPC response ([`check_response`]), and the parsing of
//! the command-line target and headers. The binary (`src/main.rs`) is the I/O around them.

use serde::Serialize;
use serde_json::Value;

/// Latency percentiles, in microseconds, of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl LatencySummary {
    /// Percentiles of `samples` (any order); `None` when there are none.
    pub fn from_samples(mut samples: Vec<u64>) -> Option<LatencySummary> {
        samples.sort_unstable();
        Some(LatencySummary {
            p50_us: nearest_rank(&samples, 50.0)?,
            p90_us: nearest_rank(&samples, 90.0)?,
            p99_us: nearest_rank(&samples, 99.0)?,
            p999_us: nearest_rank(&samples, 99.9)?,
            max_us: *samples.last()?,
        })
    }
}

/// The `p`-th percentile of ascending `sorted` by the nearest-rank method: the smallest sample
/// such that at least `p` percent of the samples are less than or equal to it, i.e. the sample at
/// 1-based rank `ceil(p / 100 * n)` (rank 1 for `p` = 0). Every answer is a real sample, never an
/// interpolation. `None` for no samples or `p` outside `0..=100`.
pub fn nearest_rank(sorted: &[u64], p: f64) -> Option<u64> {
    if !(0.0..=100.0).contains(&p) {
        return None;
    }
    let n = sorted.len();
    // The product is at most n, so the conversions are exact for any realistic sample count.
    // A tiny epsilon keeps e.g. 99.9 / 100 * 1000 = 999.0000000000001 at rank 999.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "0 <= p/100*n <= n, well inside f64's exact integer range"
    )]
    let rank = ((p / 100.0 * n as f64) - 1e-9).ceil().max(1.0) as usize;
    sorted.get(rank.min(n).checked_sub(1)?).copied()
}

/// Why an answer does not count as a successful `tools/call`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The HTTP status was not 200.
    #[error("HTTP status {status}: {body_start}")]
    Status {
        /// The status received.
        status: u16,
        /// The first bytes of the body, for the report.
        body_start: String,
    },
    /// The body is not JSON.
    #[error("body is not JSON ({reason}): {body_start}")]
    NotJson {
        /// serde_json's message.
        reason: String,
        /// The first bytes of the body.
        body_start: String,
    },
    /// The body is JSON but not the JSON-RPC 2.0 response expected (`result`, or `error` with
    /// `--expect error`).
    #[error("not the JSON-RPC answer expected: {body_start}")]
    NoResult {
        /// The first bytes of the body.
        body_start: String,
    },
    /// The response answers another request id.
    #[error("response id {got} does not match request id {expected}")]
    WrongId {
        /// The request's id.
        expected: String,
        /// The response's id.
        got: String,
    },
}

/// How much of a bad body goes into an error message.
const BODY_START_CHARS: usize = 160;

fn body_start(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(BODY_START_CHARS)
        .collect()
}

/// What counts as a successful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Expect {
    /// A JSON-RPC 2.0 response with `result` (a call that went through).
    #[default]
    Result,
    /// A JSON-RPC 2.0 response with `error` (a call a proxy denied, on purpose).
    Error,
    /// Any JSON body (an endpoint that does not speak JSON-RPC).
    Json,
}

/// Accepts only HTTP 200 with a JSON-RPC 2.0 response object that has `result` (JSON-RPC 2.0
/// section 5: a response holds exactly one of `result` and `error`) and, when the request had an
/// id, the same id.
pub fn check_response(
    status: u16,
    body: &[u8],
    expected_id: Option<&Value>,
) -> Result<(), ResponseError> {
    check_answer(status, body, expected_id, Expect::Result)
}

/// [`check_response`] for what `expect` says a success is.
pub fn check_answer(
    status: u16,
    body: &[u8],
    expected_id: Option<&Value>,
    expect: Expect,
) -> Result<(), ResponseError> {
    if status != 200 {
        return Err(ResponseError::Status {
            status,
            body_start: body_start(body),
        });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| ResponseError::NotJson {
        reason: e.to_string(),
        body_start: body_start(body),
    })?;
    if expect == Expect::Json {
        return Ok(());
    }
    let (wanted, other) = match expect {
        Expect::Error => ("error", "result"),
        _ => ("result", "error"),
    };
    let is_expected = value.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
        && value.get(wanted).is_some()
        && value.get(other).is_none();
    if !is_expected {
        return Err(ResponseError::NoResult {
            body_start: body_start(body),
        });
    }
    if let Some(expected) = expected_id {
        let got = value.get("id").unwrap_or(&Value::Null);
        if got != expected {
            return Err(ResponseError::WrongId {
                expected: expected.to_string(),
                got: got.to_string(),
            });
        }
    }
    Ok(())
}

/// A bad command-line argument, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// `--header` without `Name: value` form.
    #[error("--header {0:?} is not `Name: value`")]
    Header(String),
    /// `--url` is not `http://host[:port]/path`.
    #[error("--url {url:?}: {reason}")]
    Url {
        /// The argument.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is not a JSON object.
    #[error("the request body is not a JSON object: {0}")]
    Body(String),
    /// A count that must be positive is zero.
    #[error("--{0} must be greater than 0")]
    Zero(&'static str),
}

/// Splits `Name: value` (the value trimmed of surrounding spaces, RFC 9110 section 5.5).
pub fn parse_header(arg: &str) -> Result<(String, String), ArgError> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| ArgError::Header(arg.to_owned()))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(ArgError::Header(arg.to_owned()));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// Where requests go: a plain-HTTP URL (benchmarks run on loopback; TLS would measure TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host to connect to.
    pub host: String,
    /// Port to connect to (80 when the URL has none).
    pub port: u16,
    /// `host[:port]` for the Host header.
    pub authority: String,
    /// Path and query sent in the request line.
    pub path_and_query: String,
}

impl Target {
    /// Parses `http://host[:port][/path][?query]`.
    pub fn parse(url: &str) -> Result<Target, ArgError> {
        let bad = |reason: &str| ArgError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let path_and_query = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Target {
            host: authority.host().to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query: if path_and_query.is_empty() {
                "/".to_owned()
            } else {
                path_and_query
            },
        })
    }
}

/// The id of a JSON-RPC request body, which every response must echo.
pub fn request_id(body: &[u8]) -> Result<Option<Value>, ArgError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ArgError::Body(e.to_string()))?;
    if !value.is_object() {
        return Err(ArgError::Body("not an object".to_owned()));
    }
    Ok(value.get("id").cloned())
}

/// The one JSON line the binary prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Measured requests that completed (successful or not); warm-up excluded.
    pub requests: u64,
    /// Of those, the ones that failed (transport error, non-200, not a JSON-RPC result).
    pub errors: u64,
    /// Concurrent workers, one keep-alive connection each.
    pub concurrency: u64,
    /// Wall time of the measured phase, seconds.
    pub elapsed_s: f64,
    /// Successful requests per second of `elapsed_s`.
    pub throughput_rps: f64,
    /// Latency percentiles of the successful requests (all zero when there were none).
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Warm-up requests sent before measuring (not in any other number).
    pub warmup: u64,
    /// True when `--duration-limit-secs` ended the run before every request was sent.
    pub limit_hit: bool,
    /// The first distinct error messages, so a failing run says why.
    pub error_samples: Vec<String>,
}

impl Report {
    /// Assembles the report of a measured phase.
    pub fn new(
        samples: Vec<u64>,
        errors: u64,
        concurrency: u64,
        elapsed_s: f64,
        warmup: u64,
    ) -> Report {
        let successes = samples.len() as u64;
        #[allow(
            clippy::cast_precision_loss,
            reason = "request counts are far below 2^52"
        )]
        let throughput_rps = if elapsed_s > 0.0 {
            successes as f64 / elapsed_s
        } else {
            0.0
        };
        Report {
            requests: successes + errors,
            errors,
            concurrency,
            elapsed_s,
            throughput_rps,
            latency: LatencySummary::from_samples(samples).unwrap_or(LatencySummary {
                p50_us: 0,
                p90_us: 0,
                p99_us: 0,
                p999_us: 0,
                max_us: 0,
            }),
            warmup,
            limit_hit: false,
            error_samples: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nearest_rank_on_one_to_hundred_is_the_percent_itself() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&samples, 50.0), Some(50));
        assert_eq!(nearest_rank(&samples, 90.0), Some(90));
        assert_eq!(nearest_rank(&samples, 99.0), Some(99));
        assert_eq!(nearest_rank(&samples, 99.9), Some(100));
        assert_eq!(nearest_rank(&samples, 100.0), Some(100));
        assert_eq!(nearest_rank(&samples, 0.0), Some(1));
        assert_eq!(nearest_rank(&samples, 0.5), Some(1));
        assert_eq!(nearest_rank(&samples, 1.0), Some(1));
        assert_eq!(nearest_rank(&samples, 1.5), Some(2));
    }

    #[test]
    fn nearest_rank_does_not_round_up_on_float_noise() {
        // 99.9% of 1000 is exactly rank 999; 0.999 * 1000 in f64 is 999.0000000000001.
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(nearest_rank(&samples, 99.9), Some(999));
        assert_eq!(nearest_rank(&samples, 99.0), Some(990));
        let samples: Vec<u64> = (1..=10).collect();
        assert_eq!(nearest_rank(&samples, 70.0), Some(7));
    }

    #[test]
    fn nearest_rank_of_small_sets() {
        assert_eq!(nearest_rank(&[], 50.0), None);
        assert_eq!(nearest_rank(&[7], 50.0), Some(7));
        assert_eq!(nearest_rank(&[7], 99.9), Some(7));
        assert_eq!(nearest_rank(&[1, 2], 50.0), Some(1));
        assert_eq!(nearest_rank(&[1, 2], 50.1), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3], 101.0), None);
        assert_eq!(nearest_rank(&[1, 2, 3], -1.0), None);
    }

    #[test]
    fn summary_sorts_its_input() {
        let mut samples: Vec<u64> = (1..=1000).rev().collect();
        samples.swap(3, 700);
        let summary = LatencySummary::from_samples(samples).unwrap();
        assert_eq!(
            summary,
            LatencySummary {
                p50_us: 500,
                p90_us: 900,
                p99_us: 990,
                p999_us: 999,
                max_us: 1000
            }
        );
        assert_eq!(LatencySummary::from_samples(Vec::new()), None);
    }

    #[test]
    fn summary_sees_a_single_outlier_only_at_the_top() {
        let mut samples = vec![100u64; 999];
        samples.push(50_000);
        let summary = LatencySummary::from_samples(samples).unwrap();
        assert_eq!(summary.p99_us, 100);
        assert_eq!(summary.p999_us, 100);
        assert_eq!(summary.max_us, 50_000);
    }

    #[test]
    fn report_counts_errors_as_requests_but_not_throughput() {
        let report = Report::new(vec![10, 20, 30, 40], 1, 2, 2.0, 5);
        assert_eq!(report.requests, 5);
        assert_eq!(report.errors, 1);
        assert!((report.throughput_rps - 2.0).abs() < f64::EPSILON);
        assert_eq!(report.latency.p50_us, 20);
        let line = serde_json::to_value(&report).unwrap();
        for field in [
            "requests",
            "errors",
            "concurrency",
            "elapsed_s",
            "throughput_rps",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
        ] {
            assert!(line.get(field).is_some(), "missing {field} in {line}");
        }
    }

    #[test]
    fn an_expected_error_or_any_json_can_count_as_success() {
        let id = serde_json::json!(7);
        let denied =
            br#"{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"Unknown tool: x"}}"#;
        let ok = br#"{"jsonrpc":"2.0","id":7,"result":{}}"#;
        assert_eq!(check_answer(200, denied, Some(&id), Expect::Error), Ok(()));
        assert!(check_answer(200, ok, Some(&id), Expect::Error).is_err());
        assert!(check_answer(500, denied, Some(&id), Expect::Error).is_err());
        assert_eq!(
            check_answer(200, br#"{"allow":true}"#, Some(&id), Expect::Json),
            Ok(())
        );
        assert!(check_answer(200, b"not json", Some(&id), Expect::Json).is_err());
    }

    #[test]
    fn only_a_json_rpc_result_with_the_right_id_passes() {
        let id = json!(7);
        let ok = br#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#;
        assert_eq!(check_response(200, ok, Some(&id)), Ok(()));
        assert!(matches!(
            check_response(403, ok, Some(&id)),
            Err(ResponseError::Status { status: 403, .. })
        ));
        let denied = br#"{"jsonrpc":"2.0","id":7,"error":{"code":-32001,"message":"denied"}}"#;
        assert!(matches!(
            check_response(200, denied, Some(&id)),
            Err(ResponseError::NoResult { .. })
        ));
        let both = br#"{"jsonrpc":"2.0","id":7,"result":{},"error":{"code":1,"message":"x"}}"#;
        assert!(matches!(
            check_response(200, both, Some(&id)),
            Err(ResponseError::NoResult { .. })
        ));
        let sse = b"event: message\ndata: {}\n\n";
        assert!(matches!(
            check_response(200, sse, Some(&id)),
            Err(ResponseError::NotJson { .. })
        ));
        let other = br#"{"jsonrpc":"2.0","id":8,"result":{}}"#;
        assert!(matches!(
            check_response(200, other, Some(&id)),
            Err(ResponseError::WrongId { .. })
        ));
        let no_version = br#"{"id":7,"result":{}}"#;
        assert!(check_response(200, no_version, Some(&id)).is_err());
    }

    #[test]
    fn headers_split_on_the_first_colon() {
        assert_eq!(
            parse_header("Authorization: Bearer a:b"),
            Ok(("Authorization".to_owned(), "Bearer a:b".to_owned()))
        );
        assert_eq!(
            parse_header("x-empty:"),
            Ok(("x-empty".to_owned(), String::new()))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
        assert!(parse_header("bad name: v").is_err());
    }

    #[test]
    fn targets_are_plain_http_urls() {
        assert_eq!(
            Target::parse("http://127.0.0.1:8080/mcp/scripted").unwrap(),
            Target {
                host: "127.0.0.1".to_owned(),
                port: 8080,
                authority: "127.0.0.1:8080".to_owned(),
                path_and_query: "/mcp/scripted".to_owned()
            }
        );
        let bare = Target::parse("http://localhost").unwrap();
        assert_eq!((bare.port, bare.path_and_query.as_str()), (80, "/"));
        assert!(Target::parse("https://127.0.0.1/mcp").is_err());
        assert!(Target::parse("127.0.0.1:80/mcp").is_err());
    }

    #[test]
    fn request_id_comes_from_the_body() {
        assert_eq!(
            request_id(br#"{"jsonrpc":"2.0","id":"a","method":"tools/call"}"#),
            Ok(Some(json!("a")))
        );
        assert_eq!(
            request_id(br#"{"jsonrpc":"2.0","method":"notifications/x"}"#),
            Ok(None)
        );
        assert!(request_id(b"[1]").is_err());
        assert!(request_id(b"{").is_err());
    }
}
