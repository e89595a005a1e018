//! Hand-written HTTP answers for malformed-upstream scenarios (plain axum, no rmcp).
//!
//! An SDK never produces these bytes, yet a hostile or buggy upstream can, and Behavry's filter
//! must survive them (DESIGN.md "Failure and bad input"): SSE events split at arbitrary byte
//! boundaries including inside a CRLF (HTML Living Standard §9.2.6 lets a line end in CR, LF
//! or CRLF, so a parser must not treat a lone trailing CR as the end of the matter), SSE `data`
//! that is not JSON, one SSE event larger than any sane buffer, and an `application/json` body
//! that does not parse.
//!
//! Every route answers POST, ignores the body except for the JSON-RPC `id`, which it echoes
//! back so the answer belongs to the request (default `1` when the body has none).

use std::time::Duration;

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::Query,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use futures::{StreamExt, stream};
use serde::Deserialize;
use serde_json::{Value, json};

/// JSON-RPC id used when the request body carries none (or is not JSON at all).
pub const DEFAULT_REQUEST_ID: i64 = 1;

/// Default chunk size of `/raw/split-sse`, in bytes.
pub const DEFAULT_SPLIT_CHUNK_BYTES: usize = 3;

/// Default pause between two chunks of `/raw/split-sse`, in milliseconds.
pub const DEFAULT_SPLIT_DELAY_MS: u64 = 2;

/// Longest pause between two chunks of `/raw/split-sse`, in milliseconds.
pub const MAX_SPLIT_DELAY_MS: u64 = 1_000;

/// Default size of the payload inside the `/raw/huge-sse-event` event: 2 MiB.
pub const DEFAULT_HUGE_EVENT_BYTES: usize = 2 * 1024 * 1024;

/// Largest payload `/raw/huge-sse-event` agrees to build: 64 MiB.
pub const MAX_HUGE_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// Size of the body chunks `/raw/huge-sse-event` is streamed in.
const HUGE_EVENT_CHUNK_BYTES: usize = 64 * 1024;

const EVENT_STREAM: &str = "text/event-stream";
const JSON: &str = "application/json";

/// Bad query parameters of a raw route; turned into HTTP 400 in [`IntoResponse`] only.
#[derive(Debug, thiserror::Error)]
pub enum RawRouteError {
    #[error("bytes must be at most {MAX_HUGE_EVENT_BYTES}, got {requested}")]
    HugeEventTooBig { requested: usize },
    #[error("chunkBytes must be at least 1")]
    EmptyChunks,
    #[error("delayMs must be at most {MAX_SPLIT_DELAY_MS}, got {requested}")]
    SplitDelayTooLong { requested: u64 },
}

impl IntoResponse for RawRouteError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::HugeEventTooBig { .. } | Self::EmptyChunks | Self::SplitDelayTooLong { .. } => {
                StatusCode::BAD_REQUEST
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// The `/raw/...` routes (POST only).
pub fn routes() -> Router {
    Router::new()
        .route("/raw/split-sse", post(split_sse))
        .route("/raw/bad-json-sse", post(bad_json_sse))
        .route("/raw/huge-sse-event", post(huge_sse_event))
        .route("/raw/bad-json", post(bad_json))
        .route("/raw/echo-headers", post(echo_headers))
}

/// Query parameters of `/raw/split-sse`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SplitSseQuery {
    /// Largest chunk, in bytes. Default: [`DEFAULT_SPLIT_CHUNK_BYTES`].
    #[serde(default = "default_split_chunk_bytes")]
    pub chunk_bytes: usize,
    /// Pause between chunks, in milliseconds. Default: [`DEFAULT_SPLIT_DELAY_MS`].
    #[serde(default = "default_split_delay_ms")]
    pub delay_ms: u64,
}

fn default_split_chunk_bytes() -> usize {
    DEFAULT_SPLIT_CHUNK_BYTES
}

fn default_split_delay_ms() -> u64 {
    DEFAULT_SPLIT_DELAY_MS
}

/// Query parameters of `/raw/huge-sse-event`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HugeSseEventQuery {
    /// Size of the text inside the event. Default: [`DEFAULT_HUGE_EVENT_BYTES`].
    #[serde(default = "default_huge_event_bytes")]
    pub bytes: usize,
}

fn default_huge_event_bytes() -> usize {
    DEFAULT_HUGE_EVENT_BYTES
}

/// The JSON-RPC `id` of the request body, or [`DEFAULT_REQUEST_ID`].
pub fn request_id(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|message| message.get("id").cloned())
        .filter(|id| id.is_string() || id.is_number())
        .unwrap_or_else(|| json!(DEFAULT_REQUEST_ID))
}

/// The request's `params._meta.progressToken`, or `"split-sse"` so the notification is
/// well-formed even when the client asked for none.
fn progress_token(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|message| message.pointer("/params/_meta/progressToken").cloned())
        .unwrap_or_else(|| json!("split-sse"))
}

/// The text of `/raw/split-sse`'s result: the request's `params.arguments.message` when it has
/// one (so a test can put a secret in a stream that arrives 3 bytes at a time), or
/// `params.arguments.messageBase64` decoded (content the request did not carry as such, as a
/// server that reads it from a file produces it), else `split-sse done`.
fn split_sse_text(body: &[u8]) -> String {
    use base64::Engine as _;
    let request = serde_json::from_slice::<Value>(body).unwrap_or_default();
    let argument = |name: &str| {
        request
            .pointer(&format!("/params/arguments/{name}"))
            .and_then(Value::as_str)
    };
    if let Some(text) = argument("message") {
        return text.to_owned();
    }
    argument("messageBase64")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|| "split-sse done".to_owned())
}

/// The complete SSE document `/raw/split-sse` sends: a progress notification event, then the
/// result for `id` with `text`. Lines end in CRLF so that the split falls between CR and LF.
pub fn split_sse_document(id: &Value, progress_token: &Value, text: &str) -> String {
    let progress = json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": progress_token, "progress": 1, "total": 1, "message": "split-sse progress"},
    });
    let result = json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {"content": [{"type": "text", "text": text}], "isError": false},
    });
    format!("event: message\r\ndata: {progress}\r\n\r\nevent: message\r\ndata: {result}\r\n\r\n")
}

/// Cuts `document` into chunks of at most `chunk_bytes`, and additionally after every CR, so
/// each CRLF line ending is split between two chunks.
pub fn split_chunks(document: &[u8], chunk_bytes: usize) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut current = Vec::with_capacity(chunk_bytes);
    for byte in document {
        current.push(*byte);
        if current.len() >= chunk_bytes || *byte == b'\r' {
            chunks.push(Bytes::from(std::mem::take(&mut current)));
        }
    }
    if !current.is_empty() {
        chunks.push(Bytes::from(current));
    }
    chunks
}

async fn split_sse(
    Query(query): Query<SplitSseQuery>,
    body: Bytes,
) -> Result<Response, RawRouteError> {
    if query.chunk_bytes == 0 {
        return Err(RawRouteError::EmptyChunks);
    }
    if query.delay_ms > MAX_SPLIT_DELAY_MS {
        return Err(RawRouteError::SplitDelayTooLong {
            requested: query.delay_ms,
        });
    }
    let document = split_sse_document(
        &request_id(&body),
        &progress_token(&body),
        &split_sse_text(&body),
    );
    let delay = Duration::from_millis(query.delay_ms);
    let chunks = split_chunks(document.as_bytes(), query.chunk_bytes);
    // Each chunk is a separate body frame; the pause makes hyper flush it as its own
    // HTTP/1.1 chunk instead of coalescing them into one write.
    let stream = stream::iter(chunks).then(move |chunk| async move {
        tokio::time::sleep(delay).await;
        Ok::<Bytes, std::convert::Infallible>(chunk)
    });
    Ok(with_content_type(Body::from_stream(stream), EVENT_STREAM))
}

/// The SSE document of `/raw/bad-json-sse`: one `message` event whose data is not JSON. No
/// valid result follows, so a client that skipped the event would wait forever.
pub fn bad_json_sse_document(id: &Value) -> String {
    format!(
        "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\": this is not JSON\n\n"
    )
}

async fn bad_json_sse(body: Bytes) -> Response {
    with_content_type(
        Body::from(bad_json_sse_document(&request_id(&body))),
        EVENT_STREAM,
    )
}

async fn huge_sse_event(
    Query(query): Query<HugeSseEventQuery>,
    body: Bytes,
) -> Result<Response, RawRouteError> {
    if query.bytes > MAX_HUGE_EVENT_BYTES {
        return Err(RawRouteError::HugeEventTooBig {
            requested: query.bytes,
        });
    }
    // A valid JSON-RPC result whose text alone is `bytes` long: only its size is wrong.
    let id = request_id(&body);
    let head = format!(
        "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\""
    );
    let tail = "\"}],\"isError\":false}}\n\n";
    let filler = Bytes::from(vec![b'x'; HUGE_EVENT_CHUNK_BYTES]);
    let full_chunks = query.bytes / HUGE_EVENT_CHUNK_BYTES;
    let last_chunk = filler.slice(..query.bytes % HUGE_EVENT_CHUNK_BYTES);
    let stream = stream::iter(
        std::iter::once(Bytes::from(head))
            .chain(std::iter::repeat_n(filler, full_chunks))
            .chain(std::iter::once(last_chunk))
            .chain(std::iter::once(Bytes::from_static(tail.as_bytes())))
            .map(Ok::<Bytes, std::convert::Infallible>),
    );
    Ok(with_content_type(Body::from_stream(stream), EVENT_STREAM))
}

/// The body of `/raw/bad-json`: a JSON-RPC response cut off in the middle.
pub fn bad_json_body(id: &Value) -> String {
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"content\":[{{\"type\":\"text\",")
}

async fn bad_json(body: Bytes) -> Response {
    with_content_type(Body::from(bad_json_body(&request_id(&body))), JSON)
}

/// `/raw/echo-headers`: a valid JSON-RPC result whose text is the request headers the upstream
/// received, as a JSON object (names lowercase). Lets tests prove what a proxy forwards, e.g.
/// that the agent's `Authorization` never reaches the server.
async fn echo_headers(headers: axum::http::HeaderMap, body: Bytes) -> Response {
    let seen: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            )
        })
        .collect();
    let answer = serde_json::json!({
        "jsonrpc": "2.0",
        "id": request_id(&body),
        "result": {"content": [{"type": "text", "text": Value::Object(seen).to_string()}]},
    });
    with_content_type(Body::from(answer.to_string()), JSON)
}

fn with_content_type(body: Body, content_type: &'static str) -> Response {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == EVENT_STREAM {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn post(uri: &str, body: &str) -> Response {
        routes()
            .oneshot(
                Request::post(uri)
                    .body(Body::from(body.to_owned()))
                    .unwrap(),
            )
            .await
            .unwrap()
    }

    fn content_type(response: &Response) -> &str {
        response.headers()[header::CONTENT_TYPE].to_str().unwrap()
    }

    async fn frames(response: Response) -> Vec<Bytes> {
        response
            .into_body()
            .into_data_stream()
            .map(Result::unwrap)
            .collect()
            .await
    }

    async fn text(response: Response) -> String {
        String::from_utf8(frames(response).await.concat()).unwrap()
    }

    /// `data:` payloads of a complete SSE document (CRLF or LF line endings).
    fn data_lines(document: &str) -> Vec<&str> {
        document
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .collect()
    }

    #[test]
    fn request_id_is_echoed_or_defaults_to_one() {
        assert_eq!(request_id(br#"{"id": 42}"#), json!(42));
        assert_eq!(request_id(br#"{"id": "abc"}"#), json!("abc"));
        assert_eq!(request_id(br#"{"id": null}"#), json!(1));
        assert_eq!(request_id(br#"{"method": "x"}"#), json!(1));
        assert_eq!(request_id(b"not json"), json!(1));
        assert_eq!(request_id(b""), json!(1));
    }

    #[test]
    fn split_chunks_are_small_and_split_every_crlf() {
        let document = split_sse_document(&json!(5), &json!("token"), "split-sse done");
        let chunks = split_chunks(document.as_bytes(), 3);
        assert_eq!(chunks.concat(), document.as_bytes());
        assert!(
            chunks
                .iter()
                .all(|chunk| !chunk.is_empty() && chunk.len() <= 3)
        );
        let crlf_count = document.matches("\r\n").count();
        let split_crlfs = chunks
            .windows(2)
            .filter(|pair| pair[0].ends_with(b"\r") && pair[1].starts_with(b"\n"))
            .count();
        assert_eq!(split_crlfs, crlf_count);
        assert!(crlf_count >= 6);
    }

    #[tokio::test]
    async fn split_sse_streams_progress_then_result_in_tiny_frames() {
        let response = post(
            "/raw/split-sse?delayMs=0",
            r#"{"jsonrpc":"2.0","id":"req-7","method":"tools/call","params":{"name":"x","_meta":{"progressToken":99}}}"#,
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(content_type(&response), "text/event-stream");
        let frames = frames(response).await;
        assert!(frames.len() > 10);
        assert!(
            frames
                .iter()
                .all(|frame| frame.len() <= DEFAULT_SPLIT_CHUNK_BYTES)
        );
        let document = String::from_utf8(frames.concat()).unwrap();
        let events: Vec<Value> = data_lines(&document)
            .into_iter()
            .map(|data| serde_json::from_str(data).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["method"], "notifications/progress");
        assert_eq!(events[0]["params"]["progressToken"], 99);
        assert_eq!(events[1]["id"], "req-7");
        assert_eq!(events[1]["result"]["content"][0]["text"], "split-sse done");
    }

    #[tokio::test]
    async fn split_sse_rejects_empty_chunks() {
        let response = post("/raw/split-sse?chunkBytes=0", "").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn bad_json_sse_sends_an_event_whose_data_is_not_json() {
        let response = post("/raw/bad-json-sse", r#"{"id": 3}"#).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(content_type(&response), "text/event-stream");
        let document = text(response).await;
        assert!(document.ends_with("\n\n"));
        let data = data_lines(&document);
        assert_eq!(data.len(), 1);
        assert!(data[0].contains(r#""id":3"#));
        assert!(serde_json::from_str::<Value>(data[0]).is_err());
    }

    #[tokio::test]
    async fn huge_sse_event_carries_one_terminated_event_of_the_requested_size() {
        let response = post("/raw/huge-sse-event?bytes=200000", r#"{"id": 8}"#).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(content_type(&response), "text/event-stream");
        let document = text(response).await;
        assert!(document.ends_with("\n\n"));
        let data = data_lines(&document);
        assert_eq!(data.len(), 1);
        assert!(data[0].len() > 200_000);
        let message: Value = serde_json::from_str(data[0]).unwrap();
        assert_eq!(message["id"], 8);
        let payload = message["result"]["content"][0]["text"].as_str().unwrap();
        assert_eq!(payload.len(), 200_000);
    }

    #[tokio::test]
    async fn huge_sse_event_defaults_to_two_mebibytes() {
        let document = text(post("/raw/huge-sse-event", "").await).await;
        assert!(data_lines(&document)[0].len() > DEFAULT_HUGE_EVENT_BYTES);
    }

    #[tokio::test]
    async fn huge_sse_event_refuses_sizes_beyond_its_limit() {
        let uri = format!("/raw/huge-sse-event?bytes={}", MAX_HUGE_EVENT_BYTES + 1);
        let response = post(&uri, "").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(text(response).await.contains("bytes must be at most"));
    }

    #[tokio::test]
    async fn echo_headers_returns_what_it_received() {
        let response = routes()
            .oneshot(
                Request::post("/raw/echo-headers")
                    .header("x-probe", "seen")
                    .body(Body::from(
                        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call"}"#,
                    ))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(content_type(&response), JSON);
        let value: Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(value["id"], 9);
        let seen: Value =
            serde_json::from_str(value["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(seen["x-probe"], "seen");
    }

    #[tokio::test]
    async fn bad_json_answers_application_json_that_does_not_parse() {
        let response = post("/raw/bad-json", r#"{"id": "q"}"#).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(content_type(&response), "application/json");
        let body = text(response).await;
        assert!(body.contains(r#""id":"q""#));
        assert!(serde_json::from_str::<Value>(&body).is_err());
    }

    #[tokio::test]
    async fn raw_routes_answer_post_only() {
        let response = routes()
            .oneshot(Request::get("/raw/bad-json").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
