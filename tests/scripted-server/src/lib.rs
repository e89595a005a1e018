//! `behavry-scripted-server`: a scripted upstream MCP server for Behavry's end-to-end tests.
//!
//! It plays the upstream scenarios that `@modelcontextprotocol/server-everything` cannot:
//!
//! * an MCP server (official Rust SDK `rmcp`, Streamable HTTP transport, MCP 2025-06-18
//!   "Transports" section) at `/mcp` with the tools `echo`, `progress`, `ask_client`, `ask_later`, `big`
//!   and `fail` ([`tools`]);
//! * hand-written, deliberately malformed HTTP answers under `/raw/...` that no SDK would ever
//!   produce ([`raw`]): SSE split into tiny chunks, non-JSON SSE data, an oversized SSE event,
//!   a broken JSON body;
//! * a request counter at `GET /raw/count` ([`request_counter`]) so a test can prove that a
//!   request Behavry blocked never reached the upstream;
//! * optionally, an upstream's own credential demanded on every route ([`upstream_auth`]).
//!
//! The binary (`src/main.rs`) is a thin shell around [`serve`]; tests call [`app`] or [`serve`]
//! in-process.

pub mod raw;
pub mod request_counter;
pub mod tools;
pub mod upstream_auth;

use std::future::Future;

use axum::Router;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::request_counter::RequestCounter;
use crate::tools::ScriptedTools;

/// The path the rmcp Streamable HTTP service is mounted on.
pub const MCP_PATH: &str = "/mcp";

/// Which `Host` headers the MCP endpoint accepts.
///
/// rmcp validates `Host` to stop DNS-rebinding attacks on local servers (MCP 2025-06-18,
/// "Transports" > "Security Warning"). Behind Envoy the `Host` header is whatever the test
/// client sent to Envoy, so tests may need to widen the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedHosts {
    /// rmcp's default: `localhost`, `127.0.0.1`, `::1` (any port).
    #[default]
    Loopback,
    /// Exactly these host names or `host:port` authorities.
    Only(Vec<String>),
    /// No `Host` validation at all.
    Any,
}

/// How the scripted server answers; built from the command line by the binary.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Answer POSTs with `application/json` instead of an SSE stream where possible.
    ///
    /// This runs rmcp in stateless mode (no `Mcp-Session-Id`): rmcp only honours
    /// `json_response` without sessions. A call that emits notifications before its result
    /// (`progress` with a token) still falls back to `text/event-stream`, and server→client
    /// requests (`ask_client`) need a session, so they fail in this mode. Default: `false`
    /// (stateful sessions, every POST answered with SSE).
    pub json_response: bool,
    /// Accepted `Host` headers on `/mcp`. Default: [`AllowedHosts::Loopback`].
    pub allowed_hosts: AllowedHosts,
    /// The credential callers must present. Default: none.
    pub auth: upstream_auth::UpstreamAuth,
}

/// Errors of the server shell (binding and serving).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Accepting or serving connections failed.
    #[error("serving HTTP failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Builds the whole router: `/mcp`, the `/raw/...` routes and the request counter around all
/// of them. `shutdown` ends rmcp's open SSE streams so a graceful shutdown can finish.
pub fn app(options: &ServerOptions, shutdown: CancellationToken) -> Router {
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .with_json_response(options.json_response)
        // rmcp only answers with `application/json` when it runs without sessions.
        .with_legacy_session_mode(!options.json_response);
    config = match &options.allowed_hosts {
        AllowedHosts::Loopback => config,
        AllowedHosts::Only(hosts) => config.with_allowed_hosts(hosts.clone()),
        AllowedHosts::Any => config.disable_allowed_hosts(),
    };
    // One task store for every session: a task is reachable by its id from any session, as on a
    // server that sees all its clients behind one credential.
    let tasks = rmcp::task_manager::TaskManager::new();
    let mcp_service = StreamableHttpService::new(
        move || Ok(ScriptedTools::new(tasks.clone())),
        LocalSessionManager::default().into(),
        config,
    );
    let counter = RequestCounter::default();
    Router::new()
        .route_service(MCP_PATH, mcp_service)
        .merge(raw::routes())
        .merge(request_counter::routes(counter.clone()))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            options.auth.clone(),
            upstream_auth::require,
        ))
        // Layered last so it wraps every route above, the fallback included.
        .layer(axum::middleware::from_fn_with_state(
            counter,
            request_counter::count_requests,
        ))
}

async fn not_found() -> (axum::http::StatusCode, &'static str) {
    (axum::http::StatusCode::NOT_FOUND, "no such route")
}

/// Serves [`app`] on `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let cancel = CancellationToken::new();
    let router = app(options, cancel.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await
        .map_err(ServeError::Serve)
}
