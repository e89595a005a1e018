//! `behavry-loadgen`: POSTs one JSON-RPC body N times over C keep-alive connections and prints
//! one JSON line of latency percentiles and throughput (see the library docs).
//!
//! Closed loop: each worker owns one HTTP/1.1 connection and sends its next request when the
//! previous answer is read, so latency is measured per request and throughput is what C
//! outstanding requests achieve. Requests are handed out from one shared counter, so the run is
//! bounded by `--requests` and, as a safety net, by `--duration-limit-secs`.
//!
//! Exit status: 0 when every measured request succeeded, 1 when some failed or the time limit
//! cut the run short (the JSON line is printed in every case), 2 on bad arguments.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use behavry_loadgen::{ArgError, Expect, Report, Target, check_answer, parse_header, request_id};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::Instant;

/// Default number of measured requests.
const DEFAULT_REQUESTS: u64 = 1000;
/// Default safety bound on the whole run (warm-up included), seconds.
const DEFAULT_DURATION_LIMIT_SECS: u64 = 120;
/// Distinct error messages kept for the report.
const MAX_ERROR_SAMPLES: usize = 5;

/// Closed-loop HTTP load generator for one JSON-RPC request (Behavry benchmarks).
#[derive(Debug, Parser)]
#[command(name = "behavry-loadgen", version)]
struct Cli {
    /// Target, `http://host:port/path`.
    #[arg(long)]
    url: String,
    /// Extra request header `Name: value` (repeatable), e.g. `Authorization: Bearer ...`.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// File holding the JSON-RPC request body.
    #[arg(long, conflicts_with = "body", required_unless_present = "body")]
    body_file: Option<std::path::PathBuf>,
    /// The JSON-RPC request body itself.
    #[arg(long)]
    body: Option<String>,
    /// Measured requests, in total over all workers.
    #[arg(long, default_value_t = DEFAULT_REQUESTS)]
    requests: u64,
    /// Concurrent workers, each with its own keep-alive connection.
    #[arg(long, default_value_t = 1)]
    concurrency: u64,
    /// Requests sent before measuring (connections opened, caches warm); not reported.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Stop after this many seconds whatever is left (warm-up included).
    #[arg(long, default_value_t = DEFAULT_DURATION_LIMIT_SECS)]
    duration_limit_secs: u64,
    /// Runtime threads; 1 (the default) keeps the generator on one core, leaving the others to
    /// the system under test on a small machine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// What counts as a success: a JSON-RPC `result` (default), a JSON-RPC `error` (calls a
    /// proxy denies on purpose), or any JSON body (`json`, for non-JSON-RPC endpoints).
    #[arg(long, value_enum, default_value_t = Expect::Result)]
    expect: Expect,
}

/// Failures before any request is sent.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Arg(#[from] ArgError),
    #[error("cannot read --body-file {path}: {source}")]
    BodyFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid header {name:?}: {reason}")]
    HeaderValue { name: String, reason: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Why one request failed (counted, and sampled into the report).
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP/1.1 handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("send: {0}")]
    Send(#[source] hyper::Error),
    #[error("read body: {0}")]
    Body(#[source] hyper::Error),
    #[error("cannot build the request: {0}")]
    Build(#[source] hyper::http::Error),
    #[error(transparent)]
    Response(#[from] behavry_loadgen::ResponseError),
}

/// What every worker needs, shared.
#[derive(Debug)]
struct Plan {
    target: Target,
    headers: hyper::HeaderMap,
    body: Bytes,
    expected_id: Option<Value>,
    expect: Expect,
    warmup: u64,
    requests: u64,
    deadline: Instant,
    warmup_tickets: AtomicU64,
    measured_tickets: AtomicU64,
    /// Every worker and the main task meet here between warm-up and measuring.
    start_line: Barrier,
}

/// One worker's results.
#[derive(Debug, Default)]
struct WorkerResult {
    samples_us: Vec<u64>,
    errors: u64,
    error_samples: Vec<String>,
    limit_hit: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match start(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("behavry-loadgen: {err}");
            ExitCode::from(2)
        }
    }
}

fn start(cli: Cli) -> Result<ExitCode, StartError> {
    if cli.requests == 0 {
        return Err(ArgError::Zero("requests").into());
    }
    if cli.concurrency == 0 {
        return Err(ArgError::Zero("concurrency").into());
    }
    if cli.threads == 0 {
        return Err(ArgError::Zero("threads").into());
    }
    let target = Target::parse(&cli.url)?;
    let body = match (&cli.body_file, &cli.body) {
        (Some(path), _) => std::fs::read(path).map_err(|source| StartError::BodyFile {
            path: path.clone(),
            source,
        })?,
        (None, Some(body)) => body.clone().into_bytes(),
        // clap requires one of the two.
        (None, None) => return Err(ArgError::Body("no body given".to_owned()).into()),
    };
    let expected_id = request_id(&body)?;
    let headers = build_headers(&target, &cli.headers)?;

    let runtime = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    }
    .map_err(StartError::Runtime)?;

    let report = runtime.block_on(async {
        let concurrency = usize::try_from(cli.concurrency).unwrap_or(usize::MAX);
        let plan = Arc::new(Plan {
            target,
            headers,
            body: Bytes::from(body),
            expected_id,
            expect: cli.expect,
            warmup: cli.warmup,
            requests: cli.requests,
            deadline: Instant::now() + Duration::from_secs(cli.duration_limit_secs),
            warmup_tickets: AtomicU64::new(0),
            measured_tickets: AtomicU64::new(0),
            start_line: Barrier::new(concurrency.saturating_add(1)),
        });
        run(plan, cli.concurrency).await
    });
    let failed = report.errors > 0 || report.limit_hit;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    for message in &report.error_samples {
        eprintln!("behavry-loadgen: error: {message}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn build_headers(target: &Target, args: &[String]) -> Result<hyper::HeaderMap, StartError> {
    use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
    let mut headers = hyper::HeaderMap::new();
    let host = HeaderValue::from_str(&target.authority).map_err(|e| StartError::HeaderValue {
        name: "host".to_owned(),
        reason: e.to_string(),
    })?;
    headers.insert(HOST, host);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // MCP Streamable HTTP (2025-06-18, "Sending Messages to the Server"): the client must
    // accept both answer forms.
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    for arg in args {
        let (name, value) = parse_header(arg)?;
        let bad = |reason: String| StartError::HeaderValue {
            name: name.clone(),
            reason,
        };
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let header_value = HeaderValue::from_str(&value).map_err(|e| bad(e.to_string()))?;
        headers.insert(header_name, header_value);
    }
    Ok(headers)
}

async fn run(plan: Arc<Plan>, concurrency: u64) -> Report {
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&plan))))
        .collect();
    plan.start_line.wait().await;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(usize::try_from(plan.requests).unwrap_or(0));
    let mut errors = 0;
    let mut error_samples: Vec<String> = Vec::new();
    let mut limit_hit = false;
    for handle in workers {
        match handle.await {
            Ok(result) => {
                samples.extend(result.samples_us);
                errors += result.errors;
                limit_hit |= result.limit_hit;
                for message in result.error_samples {
                    keep_error_sample(&mut error_samples, message);
                }
            }
            Err(join_error) => {
                errors += 1;
                keep_error_sample(&mut error_samples, format!("worker failed: {join_error}"));
            }
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let mut report = Report::new(samples, errors, concurrency, elapsed_s, plan.warmup);
    report.limit_hit = limit_hit || report.requests < plan.requests;
    report.error_samples = error_samples;
    report
}

fn keep_error_sample(samples: &mut Vec<String>, message: String) {
    if samples.len() < MAX_ERROR_SAMPLES && !samples.contains(&message) {
        samples.push(message);
    }
}

/// One connection, reopened after a failure; warm-up, then the barrier, then measured requests.
async fn worker(plan: Arc<Plan>) -> WorkerResult {
    let mut result = WorkerResult::default();
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;

    while plan.warmup_tickets.fetch_add(1, Ordering::Relaxed) < plan.warmup {
        match tokio::time::timeout_at(plan.deadline, exchange(&plan, &mut connection)).await {
            Ok(Ok(())) => {}
            // Warm-up failures show up again in the measured phase; they are not counted.
            Ok(Err(_)) => connection = None,
            Err(_) => {
                result.limit_hit = true;
                break;
            }
        }
    }
    // Every worker reaches the barrier exactly once, or the main task would wait forever.
    plan.start_line.wait().await;
    if result.limit_hit {
        return result;
    }

    while plan.measured_tickets.fetch_add(1, Ordering::Relaxed) < plan.requests {
        let sent = Instant::now();
        match tokio::time::timeout_at(plan.deadline, exchange(&plan, &mut connection)).await {
            Ok(Ok(())) => {
                let micros = sent.elapsed().as_micros();
                result
                    .samples_us
                    .push(u64::try_from(micros).unwrap_or(u64::MAX));
            }
            Ok(Err(err)) => {
                connection = None;
                result.errors += 1;
                keep_error_sample(&mut result.error_samples, err.to_string());
            }
            Err(_) => {
                result.limit_hit = true;
                break;
            }
        }
    }
    result
}

/// One request and its checked answer, (re)connecting first when needed.
async fn exchange(
    plan: &Plan,
    connection: &mut Option<SendRequest<Full<Bytes>>>,
) -> Result<(), RequestError> {
    let sender = match connection {
        Some(sender) if !sender.is_closed() => sender,
        _ => connection.insert(connect(&plan.target).await?),
    };
    sender.ready().await.map_err(RequestError::Send)?;
    let mut request = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(plan.target.path_and_query.as_str())
        .body(Full::new(plan.body.clone()))
        .map_err(RequestError::Build)?;
    *request.headers_mut() = plan.headers.clone();
    let response = sender
        .send_request(request)
        .await
        .map_err(RequestError::Send)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(RequestError::Body)?
        .to_bytes();
    check_answer(status, &body, plan.expected_id.as_ref(), plan.expect)?;
    Ok(())
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, RequestError> {
    let address = format!("{}:{}", target.host, target.port);
    let stream = TcpStream::connect(&address)
        .await
        .map_err(|source| RequestError::Connect {
            address: address.clone(),
            source,
        })?;
    // Requests are small and latency is what is measured: no Nagle delay.
    stream
        .set_nodelay(true)
        .map_err(|source| RequestError::Connect { address, source })?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(RequestError::Handshake)?;
    // The connection task ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        let _closed = conn.await;
    });
    Ok(sender)
}
