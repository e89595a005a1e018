//! Drives a running scripted server over real loopback TCP: the rmcp client for the MCP
//! tools, reqwest for the JSON mode and the request counter.

// .clippy.toml lets `#[test]` functions unwrap; the helpers below are test code too, and a
// failing unwrap in them is a failing test.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "integration-test helpers: a failing unwrap is a failing test"
)]

use std::sync::Arc;

use behavry_scripted_server::{ServerOptions, app, request_counter::RequestCount, serve};
use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
        ElicitRequestParams, ElicitResult, ElicitationAction, ErrorData, Implementation,
        ProgressNotificationParam,
    },
    service::{NotificationContext, RequestContext, RunningService},
    transport::StreamableHttpClientTransport,
};
use serde_json::{Value, json};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

/// A server on 127.0.0.1:0; dropping `stop` shuts it down.
struct RunningServer {
    base: String,
    _stop: oneshot::Sender<()>,
}

async fn start(options: ServerOptions) -> RunningServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, &options, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    RunningServer {
        base: format!("http://{address}"),
        _stop: stop,
    }
}

/// Test client: declares elicitation, answers every question with `answer`, and forwards
/// progress notifications to the test.
struct ScriptedClient {
    answer: String,
    progress: mpsc::UnboundedSender<ProgressNotificationParam>,
}

impl ClientHandler for ScriptedClient {
    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        match request {
            ElicitRequestParams::FormElicitationParams { message, .. } => {
                Ok(ElicitResult::new(ElicitationAction::Accept)
                    .with_content(json!({"answer": format!("{} to: {message}", self.answer)})))
            }
            _ => Ok(ElicitResult::new(ElicitationAction::Decline)),
        }
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.progress.send(params);
    }

    fn get_info(&self) -> ClientConfig {
        let capabilities: ClientCapabilities =
            serde_json::from_value(json!({"elicitation": {}})).unwrap();
        ClientConfig::new(
            capabilities,
            Implementation::new("scripted-server-test", "0"),
        )
    }
}

async fn connect(
    server: &RunningServer,
) -> (
    RunningService<RoleClient, ScriptedClient>,
    mpsc::UnboundedReceiver<ProgressNotificationParam>,
) {
    let (progress, progress_received) = mpsc::unbounded_channel();
    let client = ScriptedClient {
        answer: "blue".to_owned(),
        progress,
    };
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", server.base));
    (client.serve(transport).await.unwrap(), progress_received)
}

fn call(name: &'static str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("tool arguments must be an object");
    };
    CallToolRequestParams::new(name).with_arguments(arguments)
}

fn only_text(result: &CallToolResult) -> String {
    let content = serde_json::to_value(&result.content).unwrap();
    assert_eq!(content.as_array().unwrap().len(), 1);
    content[0]["text"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn echo_returns_the_message() {
    let server = start(ServerOptions::default()).await;
    let (client, _) = connect(&server).await;
    let result = client
        .call_tool(call("echo", json!({"message": "hello upstream"})))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false));
    assert_eq!(only_text(&result), "hello upstream");
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "add_numbers",
            "ask_client",
            "ask_later",
            "big",
            "echo",
            "fail",
            "forecast",
            "progress",
            "report",
            "rug_pull"
        ]
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_rug_pull_changes_the_listed_forecast_for_every_session() {
    let server = start(ServerOptions::default()).await;
    let (first, _) = connect(&server).await;
    let (second, _) = connect(&server).await;
    let description = |tools: Vec<rmcp::model::Tool>| {
        tools
            .into_iter()
            .find(|t| t.name == "forecast")
            .and_then(|t| t.description)
            .unwrap()
            .into_owned()
    };
    let before = description(second.list_all_tools().await.unwrap());
    assert_eq!(before, "Returns the weather forecast for a city.");
    first
        .call_tool(call("rug_pull", json!({"on": true})))
        .await
        .unwrap();
    let after = description(second.list_all_tools().await.unwrap());
    first
        .call_tool(call("rug_pull", json!({"on": false})))
        .await
        .unwrap();
    assert_eq!(
        after,
        behavry_scripted_server::tools::CHANGED_FORECAST_DESCRIPTION
    );
    assert_eq!(description(second.list_all_tools().await.unwrap()), before);
    let result = first
        .call_tool(call("forecast", json!({"city": "Oslo"})))
        .await
        .unwrap();
    assert_eq!(only_text(&result), "forecast for Oslo: sunny");
    first.cancel().await.unwrap();
    second.cancel().await.unwrap();
}

#[tokio::test]
async fn progress_notifications_arrive_before_the_result() {
    let server = start(ServerOptions::default()).await;
    let (client, mut progress) = connect(&server).await;
    let client = Arc::new(client);
    // The rmcp client puts a fresh `_meta.progressToken` on every request it sends.
    let params = call("progress", json!({"steps": 3, "delayMs": 300}));
    let caller = Arc::clone(&client);
    let mut pending_call = tokio::spawn(async move { caller.call_tool(params).await });

    // Streaming means the first notification is seen while the call is still running; the
    // server only answers after two more 300 ms pauses.
    let first = tokio::select! {
        biased;
        first = progress.recv() => first.unwrap(),
        finished = &mut pending_call => panic!("call finished before any progress: {finished:?}"),
    };
    assert_eq!(first.progress, 1.0);
    assert_eq!(first.total, Some(3.0));
    assert_eq!(first.message.as_deref(), Some("step 1 of 3"));

    let result = pending_call.await.unwrap().unwrap();
    assert_eq!(only_text(&result), "done after 3 steps");
    let mut rest = Vec::new();
    while let Ok(notification) = progress.try_recv() {
        assert_eq!(notification.progress_token, first.progress_token);
        rest.push(notification.progress);
    }
    assert_eq!(rest, [2.0, 3.0]);
}

#[tokio::test]
async fn ask_client_returns_the_elicited_answer() {
    let server = start(ServerOptions::default()).await;
    let (client, _) = connect(&server).await;
    let result = client
        .call_tool(call("ask_client", json!({"question": "favourite colour?"})))
        .await
        .unwrap();
    assert_eq!(only_text(&result), "blue to: favourite colour?");
}

#[tokio::test]
async fn big_returns_exactly_the_requested_bytes_and_refuses_more_than_8_mib() {
    let server = start(ServerOptions::default()).await;
    let (client, _) = connect(&server).await;
    let result = client
        .call_tool(call("big", json!({"bytes": 100_000})))
        .await
        .unwrap();
    assert_eq!(only_text(&result).len(), 100_000);
    let error = client
        .call_tool(call("big", json!({"bytes": 8 * 1024 * 1024 + 1})))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("at most 8388608"), "{error}");
}

#[tokio::test]
async fn fail_is_a_tool_error() {
    let server = start(ServerOptions::default()).await;
    let (client, _) = connect(&server).await;
    let result = client.call_tool(call("fail", json!({}))).await.unwrap();
    assert_eq!(result.is_error, Some(true));
}

const ACCEPT_BOTH: &str = "application/json, text/event-stream";

#[tokio::test]
async fn json_response_mode_answers_application_json() {
    let server = start(ServerOptions {
        json_response: true,
        ..ServerOptions::default()
    })
    .await;
    let response = post_json_mode(
        &server.base,
        json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "plain"}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], 11);
    assert_eq!(body["result"]["content"][0]["text"], "plain");
}

async fn post_json_mode(base: &str, message: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("accept", ACCEPT_BOTH)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&message)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn progress_without_a_token_sends_no_notifications() {
    let server = start(ServerOptions {
        json_response: true,
        ..ServerOptions::default()
    })
    .await;
    // With nothing to stream, JSON mode answers with the bare result.
    let response = post_json_mode(
        &server.base,
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": 2, "delayMs": 1}}}),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["content"][0]["text"], "done after 2 steps");
}

#[tokio::test]
async fn progress_with_a_token_streams_sse_even_in_json_mode() {
    let server = start(ServerOptions {
        json_response: true,
        ..ServerOptions::default()
    })
    .await;
    let response = post_json_mode(
        &server.base,
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": 2, "delayMs": 1},
                       "_meta": {"progressToken": "tok"}}}),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let document = response.text().await.unwrap();
    let messages: Vec<Value> = document
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| !data.is_empty())
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0]["method"], "notifications/progress");
    assert_eq!(messages[0]["params"]["progressToken"], "tok");
    assert_eq!(messages[1]["params"]["progress"], 2.0);
    assert_eq!(messages[2]["id"], 5);
    assert_eq!(
        messages[2]["result"]["content"][0]["text"],
        "done after 2 steps"
    );
}

#[tokio::test]
async fn default_mode_answers_a_post_with_sse() {
    let server = start(ServerOptions::default()).await;
    let response = reqwest::Client::new()
        .post(format!("{}/mcp", server.base))
        .header("accept", ACCEPT_BOTH)
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().contains_key("mcp-session-id"));
}

async fn count(client: &reqwest::Client, base: &str) -> u64 {
    let count: RequestCount = client
        .get(format!("{base}/raw/count"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    count.requests
}

#[tokio::test]
async fn counter_counts_every_request_except_reading_it() {
    let server = start(ServerOptions::default()).await;
    let http = reqwest::Client::new();
    assert_eq!(count(&http, &server.base).await, 0);
    assert_eq!(count(&http, &server.base).await, 0);

    http.post(format!("{}/raw/bad-json", server.base))
        .send()
        .await
        .unwrap();
    http.get(format!("{}/no/such/route", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(count(&http, &server.base).await, 2);

    // An MCP session (initialize, initialized, tools/call, ...) is counted too.
    let (client, _) = connect(&server).await;
    client
        .call_tool(call("echo", json!({"message": "x"})))
        .await
        .unwrap();
    assert!(count(&http, &server.base).await >= 5);
}

#[tokio::test]
async fn host_outside_the_allow_list_is_refused() {
    // DNS-rebinding protection (MCP 2025-06-18 "Transports" > "Security Warning") is on by
    // default; an unknown Host gets 403 without reaching the tools.
    let response = tower::ServiceExt::oneshot(
        app(&ServerOptions::default(), Default::default()),
        axum::http::Request::post("/mcp")
            .header("host", "attacker.example")
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            ))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_required_key_guards_every_route_but_the_counter() {
    use behavry_scripted_server::upstream_auth::UpstreamAuth;
    let server = start(ServerOptions {
        auth: UpstreamAuth::Header {
            name: "x-api-key".to_owned(),
            value: "k-123".to_owned(),
        },
        ..ServerOptions::default()
    })
    .await;
    let client = reqwest::Client::new();
    let echo = format!("{}/raw/echo-headers", server.base);
    let missing = client.post(&echo).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let wrong = client
        .post(&echo)
        .header("x-api-key", "k-124")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(!wrong.text().await.unwrap().contains("k-12"));
    let right = client
        .post(&echo)
        .header("x-api-key", "k-123")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let count = client
        .get(format!("{}/raw/count", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(count.status(), 200);
}
