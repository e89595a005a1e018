//! One HTTP exchange (request and response) on an MCP route, as a state machine with no host calls.
//!
//! The proxy-wasm shim in `lib.rs` feeds it what Envoy hands over (headers, body chunks, the
//! sidecar's answer) and carries out what it returns (pause, forward, reply locally, rewrite a
//! chunk). Everything here runs natively in unit tests.
//!
//! Rules it implements (see `docs/filter.md`):
//! - POST bodies are parsed as one JSON-RPC message (MCP Streamable HTTP, 2025-06-18 and later).
//! - `tools/call`, `resources/read` and `prompts/get` wait for an authz-sidecar decision; deny and
//!   sidecar failure become a JSON-RPC error carrying the request's id and the trace id.
//! - Responses are parsed message by message. SSE is re-emitted event by event: complete events
//!   go out unchanged and the incomplete tail waits in memory for the next chunk, so a problem can
//!   always be answered with a well-formed error event.
//! - Governed calls produce audit events: intent, decision, outcome.

use behavry_core::headers::{HeaderPresence, StandardHeaders, check_standard_headers};
use behavry_core::jsonrpc::{self, Message, RequestId};
use behavry_core::mcp::{self, CallKind, McpCall};
use behavry_core::limits::Limits;
use behavry_core::sse::{SseDecoder, SseEvent};
use behavry_core::trace::TraceParent;
use behavry_core::wire::{
    AgentIdentity, AuditEvent, AuditKind, DecisionRequest, DecisionResponse, RequestFacts,
};
use serde_json::{Value, json};

use crate::config::{FailureMode, FilterConfig};

/// Request headers the filter looks at, read once by the shim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
    pub mcp_method: Option<String>,
    pub mcp_name: Option<String>,
    pub traceparent: Option<String>,
    /// The verified `sub` claim from `jwt_authn` metadata; never from a request header.
    pub agent: Option<String>,
}

/// A reply the filter sends itself instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalReply {
    fn json(status: u32, body: Vec<u8>) -> Self {
        LocalReply {
            status,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body,
        }
    }
}

/// What to do after the request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadAction {
    /// Not governed here (or nothing to read): let it through now.
    Continue,
    /// Hold the headers until the body has been read and decided.
    WaitForBody,
    Reply(LocalReply),
}

/// What to do after (part of) the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    /// Keep buffering; more body is coming.
    Buffer,
    /// Forward the request as it is.
    Forward,
    /// Ask the authz-sidecar with this JSON body, and pause until it answers.
    AskAuthz(Vec<u8>),
    Reply(LocalReply),
}

/// What to do after the authz-sidecar answered (or failed to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionAction {
    Resume,
    Reply(LocalReply),
}

/// What to do with the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseHeadAction {
    Continue,
    /// Hold them: a JSON body is read whole (it is one message) before anything is sent, so that
    /// it can still be replaced by an error with a correct `content-length`.
    WaitForBody,
}

/// What to do with one response body chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkAction {
    /// Send the chunk as it came.
    Continue,
    /// Keep buffering (JSON bodies).
    Buffer,
    /// Send these bytes instead of the chunk (or of the buffered body).
    Replace(Vec<u8>),
}

/// Identifiers of one call in the Decision Trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
}

impl TraceIds {
    /// Joins the client's W3C `traceparent` when it is valid (W3C Trace Context §3.2); otherwise
    /// starts a new trace from `random`.
    pub fn new(traceparent: Option<&str>, random: [u8; 24]) -> Self {
        let (trace_bytes, span_bytes) = random.split_at(16);
        let trace_id = traceparent
            .and_then(|v| TraceParent::parse(v).ok())
            .map(|tp| tp.trace_id)
            .unwrap_or_else(|| to_hex(trace_bytes));
        TraceIds {
            trace_id,
            span_id: to_hex(span_bytes),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The JSON-RPC request the client sent, while its answer is awaited.
#[derive(Debug, Clone)]
struct PendingCall {
    id: RequestId,
    governed: bool,
}

#[derive(Debug)]
enum ResponseMode {
    /// Not inspected (no request awaiting an answer, or not an MCP body).
    Passthrough,
    /// `application/json`: one message, read whole.
    Json,
    /// `text/event-stream`: decoded event by event.
    Sse { decoder: SseDecoder, broken: bool },
}

/// State of one HTTP exchange on an MCP route.
#[derive(Debug)]
pub struct Exchange {
    server: String,
    head: RequestHead,
    ids: TraceIds,
    facts: RequestFacts,
    pending: Option<PendingCall>,
    response_status: u32,
    response_bytes: usize,
    mode: ResponseMode,
    outcome_recorded: bool,
    audit: Vec<AuditEvent>,
}

impl Exchange {
    /// Starts an exchange, or `None` when the path is not an MCP route (then the filter stays out
    /// of the way entirely).
    pub fn start(config: &FilterConfig, head: RequestHead, random: [u8; 24]) -> Option<Self> {
        let route = config.route_for(&head.path)?;
        let ids = TraceIds::new(head.traceparent.as_deref(), random);
        let facts = RequestFacts {
            server: route.server.clone(),
            session_id: head.session_id.clone(),
            protocol_version: head.protocol_version.clone(),
            ..RequestFacts::default()
        };
        Some(Exchange {
            server: route.server.clone(),
            head,
            ids,
            facts,
            pending: None,
            response_status: 0,
            response_bytes: 0,
            mode: ResponseMode::Passthrough,
            outcome_recorded: false,
            audit: Vec::new(),
        })
    }

    pub fn trace_ids(&self) -> &TraceIds {
        &self.ids
    }

    /// Logical server name of the route.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Audit events produced so far, handed over once.
    pub fn take_audit_events(&mut self) -> Vec<AuditEvent> {
        std::mem::take(&mut self.audit)
    }

    /// Request headers arrived.
    pub fn on_request_head(&mut self, end_of_stream: bool) -> HeadAction {
        if self.head.agent.is_none() {
            // jwt_authn answers 401 itself; this guards a route where it was left out. MCP
            // authorization (2025-06-18, "Authorization Server Discovery") and RFC 6750 §3 ask
            // for `WWW-Authenticate: Bearer` on a missing or invalid token.
            let body = jsonrpc::error_response(
                None,
                jsonrpc::UNAUTHENTICATED,
                "authentication required: no verified agent identity",
                Some(json!({"traceId": self.ids.trace_id})),
            );
            let mut reply = LocalReply::json(401, body);
            reply
                .headers
                .push(("www-authenticate".to_string(), "Bearer".to_string()));
            return HeadAction::Reply(reply);
        }
        if self.head.method.eq_ignore_ascii_case("POST") && !end_of_stream {
            HeadAction::WaitForBody
        } else {
            // GET opens the server→client SSE stream, DELETE ends a session: both pass, and a
            // GET stream's events are still decoded on the way back.
            HeadAction::Continue
        }
    }

    /// Request body progress: `buffered` bytes so far; `body` is the whole body once
    /// `end_of_stream` is true.
    pub fn on_request_body(
        &mut self,
        config: &FilterConfig,
        buffered: usize,
        body: Option<&[u8]>,
        now_ms: u64,
    ) -> BodyAction {
        let limit = config.limits.max_body_bytes;
        if buffered > limit {
            return BodyAction::Reply(self.protocol_error(
                413,
                jsonrpc::LIMIT_EXCEEDED,
                &format!("request body exceeds the limit of {limit} bytes"),
                None,
            ));
        }
        let Some(body) = body else {
            return BodyAction::Buffer;
        };
        let (message, call) = match mcp::parse_call(body, &config.limits) {
            Ok(parsed) => parsed,
            Err(err) => {
                return BodyAction::Reply(self.protocol_error(
                    u32::from(err.http_status()),
                    err.json_rpc_code(),
                    &err.to_string(),
                    None,
                ));
            }
        };
        // A client's answer to a server→client request (sampling, elicitation, roots) has no
        // method: it is forwarded as it is.
        let Some(call) = call else {
            return BodyAction::Forward;
        };
        let id = message.id().cloned();
        // MCP 2026-07-28 (Streamable HTTP, "Standard Request Headers"): requests of that revision
        // must carry Mcp-Method (and Mcp-Name where the method names a target) matching the body;
        // earlier revisions are checked when they send them.
        let header_version = self.head.protocol_version.clone();
        let version = call.effective_protocol_version(header_version.as_deref());
        let presence = HeaderPresence::for_message(version, &message);
        let headers = StandardHeaders {
            mcp_method: self.head.mcp_method.as_deref(),
            mcp_name: self.head.mcp_name.as_deref(),
            protocol_version: header_version.as_deref(),
        };
        if let Err(err) = check_standard_headers(&headers, &call, presence) {
            return BodyAction::Reply(self.protocol_error(
                u32::from(err.http_status()),
                err.json_rpc_code(),
                &err.to_string(),
                id.as_ref(),
            ));
        }
        self.record_facts(&call);
        let governed = call.kind == CallKind::Governed;
        if let Some(id) = id {
            self.pending = Some(PendingCall { id, governed });
        }
        if !governed {
            return BodyAction::Forward;
        }
        self.record(AuditKind::Intent, now_ms, json!({}));
        let request = DecisionRequest {
            trace_id: self.ids.trace_id.clone(),
            agent: AgentIdentity {
                id: self.head.agent.clone().unwrap_or_default(),
            },
            request: self.facts.clone(),
        };
        match serde_json::to_vec(&request) {
            Ok(bytes) => BodyAction::AskAuthz(bytes),
            Err(err) => match self.on_decision(
                config,
                Err(format!("cannot encode decision request: {err}")),
                now_ms,
            ) {
                DecisionAction::Resume => BodyAction::Forward,
                DecisionAction::Reply(reply) => BodyAction::Reply(reply),
            },
        }
    }

    fn record_facts(&mut self, call: &McpCall) {
        self.facts = call.request_facts(
            &self.server,
            self.head.session_id.as_deref(),
            self.head.protocol_version.as_deref(),
        );
    }

    /// The authz-sidecar's answer: `Ok` with its decision, or `Err` with why there is none
    /// (unreachable, timed out, bad answer).
    pub fn on_decision(
        &mut self,
        config: &FilterConfig,
        decision: Result<DecisionResponse, String>,
        now_ms: u64,
    ) -> DecisionAction {
        match decision {
            Ok(decision) => {
                self.record(
                    AuditKind::Decision,
                    now_ms,
                    json!({
                        "allow": decision.allow,
                        "reasons": decision.reasons,
                        "ruleIds": decision.rule_ids,
                        "bundleDigest": decision.bundle_digest,
                    }),
                );
                if decision.allow {
                    return DecisionAction::Resume;
                }
                let reason = if decision.reasons.is_empty() {
                    "denied by policy".to_string()
                } else {
                    decision.reasons.join("; ")
                };
                let data = json!({
                    "traceId": self.ids.trace_id,
                    "reason": reason,
                    "ruleIds": decision.rule_ids,
                });
                DecisionAction::Reply(self.rpc_error_reply(
                    jsonrpc::POLICY_DENIED,
                    &format!("denied by policy: {reason}"),
                    data,
                    now_ms,
                ))
            }
            Err(why) => {
                let fail_open = config.failure_mode == FailureMode::Open;
                self.record(
                    AuditKind::Decision,
                    now_ms,
                    json!({
                        "allow": fail_open,
                        "authzUnavailable": why,
                        "failureMode": if fail_open { "open" } else { "closed" },
                    }),
                );
                if fail_open {
                    return DecisionAction::Resume;
                }
                let data = json!({"traceId": self.ids.trace_id, "reason": why});
                DecisionAction::Reply(self.rpc_error_reply(
                    jsonrpc::AUTHZ_UNAVAILABLE,
                    &format!("authorization unavailable, call refused (fail closed): {why}"),
                    data,
                    now_ms,
                ))
            }
        }
    }

    /// A JSON-RPC error answer for the pending call, sent with HTTP 200: at the HTTP level the
    /// exchange worked, and MCP clients read JSON-RPC errors from the body.
    fn rpc_error_reply(&mut self, code: i64, message: &str, data: Value, now_ms: u64) -> LocalReply {
        let id = self.pending.as_ref().map(|p| p.id.clone());
        let body = jsonrpc::error_response(id.as_ref(), code, message, Some(data));
        self.response_status = 200;
        self.response_bytes = body.len();
        self.record_outcome(
            now_ms,
            json!({"status": 200, "local": true, "errorCode": code, "responseBytes": body.len()}),
        );
        LocalReply::json(200, body)
    }

    /// An HTTP-level protocol error (bad JSON-RPC, limits, header mismatch).
    fn protocol_error(
        &mut self,
        status: u32,
        code: i64,
        message: &str,
        id: Option<&RequestId>,
    ) -> LocalReply {
        let body = jsonrpc::error_response(
            id,
            code,
            message,
            Some(json!({"traceId": self.ids.trace_id})),
        );
        LocalReply::json(status, body)
    }

    /// Response headers arrived.
    pub fn on_response_head(
        &mut self,
        status: u32,
        content_type: Option<&str>,
        end_of_stream: bool,
        config: &FilterConfig,
        now_ms: u64,
    ) -> ResponseHeadAction {
        self.response_status = status;
        let media = content_type
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        if end_of_stream {
            self.finish_outcome(now_ms, true);
            return ResponseHeadAction::Continue;
        }
        match media.as_deref() {
            Some("text/event-stream") => {
                self.mode = ResponseMode::Sse {
                    decoder: SseDecoder::new(config.limits.max_sse_event_bytes),
                    broken: false,
                };
                ResponseHeadAction::Continue
            }
            Some("application/json") if self.pending.is_some() => {
                self.mode = ResponseMode::Json;
                ResponseHeadAction::WaitForBody
            }
            _ => ResponseHeadAction::Continue,
        }
    }

    /// A response body chunk. For JSON, `chunk` is the whole buffered body so far; for SSE it is
    /// only the new bytes.
    pub fn on_response_body(
        &mut self,
        config: &FilterConfig,
        chunk: &[u8],
        end_of_stream: bool,
        now_ms: u64,
    ) -> ChunkAction {
        match &mut self.mode {
            ResponseMode::Passthrough => {
                self.response_bytes += chunk.len();
                if end_of_stream {
                    self.finish_outcome(now_ms, true);
                }
                ChunkAction::Continue
            }
            ResponseMode::Json => self.on_json_body(config, chunk, end_of_stream, now_ms),
            ResponseMode::Sse { .. } => {
                self.on_sse_chunk(&config.limits, chunk, end_of_stream, now_ms)
            }
        }
    }

    fn on_json_body(
        &mut self,
        config: &FilterConfig,
        body: &[u8],
        end_of_stream: bool,
        now_ms: u64,
    ) -> ChunkAction {
        let limit = config.limits.max_body_bytes;
        if body.len() > limit {
            return self.replace_with_upstream_error(
                &format!("upstream response exceeds the limit of {limit} bytes"),
                now_ms,
            );
        }
        if !end_of_stream {
            return ChunkAction::Buffer;
        }
        self.response_bytes = body.len();
        match mcp::parse_message(body, &config.limits) {
            Ok(message) => {
                self.observe_upstream_message(&message, now_ms);
                self.finish_outcome(now_ms, true);
                ChunkAction::Continue
            }
            Err(err) => self.replace_with_upstream_error(
                &format!("upstream sent an invalid JSON-RPC message: {err}"),
                now_ms,
            ),
        }
    }

    fn replace_with_upstream_error(&mut self, why: &str, now_ms: u64) -> ChunkAction {
        let id = self.pending.as_ref().map(|p| p.id.clone());
        let body = jsonrpc::error_response(
            id.as_ref(),
            jsonrpc::UPSTREAM_PROTOCOL_ERROR,
            why,
            Some(json!({"traceId": self.ids.trace_id})),
        );
        self.record_outcome(
            now_ms,
            json!({
                "status": self.response_status,
                "errorCode": jsonrpc::UPSTREAM_PROTOCOL_ERROR,
                "upstreamError": why,
            }),
        );
        ChunkAction::Replace(body)
    }

    fn on_sse_chunk(
        &mut self,
        limits: &Limits,
        chunk: &[u8],
        end_of_stream: bool,
        now_ms: u64,
    ) -> ChunkAction {
        self.response_bytes += chunk.len();
        let ResponseMode::Sse { decoder, broken } = &mut self.mode else {
            return ChunkAction::Continue;
        };
        if *broken {
            // After a fatal upstream error the client already has its error event: drop the rest.
            return ChunkAction::Replace(Vec::new());
        }
        let mut out = Vec::with_capacity(chunk.len());
        let mut problem = None;
        let mut events: Vec<SseEvent> = match decoder.feed(chunk) {
            Ok(events) => events,
            Err(err) => {
                problem = Some(format!("upstream SSE stream is malformed: {err}"));
                Vec::new()
            }
        };
        if problem.is_none() && end_of_stream {
            match decoder.finish() {
                Ok(Some(tail)) => events.push(tail),
                Ok(None) => {}
                Err(err) => problem = Some(format!("upstream SSE stream is malformed: {err}")),
            }
        }
        let mut messages = Vec::new();
        for event in &events {
            if problem.is_some() {
                break;
            }
            let data = match event.data() {
                // Comments, retry hints, and priming events (empty data, MCP 2025-11-25
                // "resumability"): no message, passed unchanged.
                None | Some("") => {
                    out.extend_from_slice(event.raw());
                    continue;
                }
                Some(data) => data,
            };
            match mcp::parse_message(data.as_bytes(), limits) {
                Ok(message) => {
                    out.extend_from_slice(event.raw());
                    messages.push(message);
                }
                Err(err) => {
                    problem = Some(format!(
                        "upstream SSE event does not hold a JSON-RPC message: {err}"
                    ));
                }
            }
        }
        for message in &messages {
            self.observe_upstream_message(message, now_ms);
        }
        if let Some(why) = problem {
            if let ResponseMode::Sse { broken, .. } = &mut self.mode {
                *broken = true;
            }
            let id = self.pending.as_ref().map(|p| p.id.clone());
            let body = jsonrpc::error_response(
                id.as_ref(),
                jsonrpc::UPSTREAM_PROTOCOL_ERROR,
                &why,
                Some(json!({"traceId": self.ids.trace_id})),
            );
            out.extend_from_slice(SseEvent::json_message(&body).raw());
            self.record_outcome(
                now_ms,
                json!({
                    "status": self.response_status,
                    "errorCode": jsonrpc::UPSTREAM_PROTOCOL_ERROR,
                    "upstreamError": why,
                }),
            );
            return ChunkAction::Replace(out);
        }
        if end_of_stream {
            self.finish_outcome(now_ms, true);
        }
        if out.as_slice() == chunk {
            ChunkAction::Continue
        } else {
            ChunkAction::Replace(out)
        }
    }

    /// Looks at one message from upstream: the answer to the pending call ends its outcome.
    fn observe_upstream_message(&mut self, message: &Message, now_ms: u64) {
        let Some(pending) = &self.pending else {
            return;
        };
        let detail = match message {
            Message::Response { id, result } if *id == pending.id => json!({
                "status": self.response_status,
                "isError": result.get("isError").and_then(Value::as_bool).unwrap_or(false),
            }),
            Message::ErrorResponse { id: Some(id), error } if *id == pending.id => json!({
                "status": self.response_status,
                "errorCode": error.code,
                "errorMessage": error.message,
            }),
            _ => return,
        };
        self.record_outcome(now_ms, detail);
    }

    /// Records the outcome once, if the call was governed and none was recorded yet.
    fn finish_outcome(&mut self, now_ms: u64, ended: bool) {
        let detail = json!({
            "status": self.response_status,
            "complete": ended,
            "responseBytes": self.response_bytes,
        });
        self.record_outcome(now_ms, detail);
    }

    /// The stream ended (or was torn down) before an answer was seen.
    pub fn on_done(&mut self, now_ms: u64) {
        let detail = json!({
            "status": self.response_status,
            "complete": false,
            "responseBytes": self.response_bytes,
            "note": "stream ended before the answer to the call was seen",
        });
        self.record_outcome(now_ms, detail);
    }

    fn record_outcome(&mut self, now_ms: u64, mut detail: Value) {
        if self.outcome_recorded || !self.pending.as_ref().is_some_and(|p| p.governed) {
            return;
        }
        if let Some(map) = detail.as_object_mut() {
            map.entry("responseBytes")
                .or_insert(json!(self.response_bytes));
        }
        self.outcome_recorded = true;
        self.record(AuditKind::Outcome, now_ms, detail);
    }

    fn record(&mut self, kind: AuditKind, now_ms: u64, detail: Value) {
        self.audit.push(AuditEvent {
            event_id: format!("{}-{}-{}", self.ids.trace_id, self.ids.span_id, kind.as_str()),
            trace_id: self.ids.trace_id.clone(),
            span_id: self.ids.span_id.clone(),
            kind,
            time_ms: now_ms,
            agent: self.head.agent.clone(),
            request: self.facts.clone(),
            detail,
        });
    }
}
