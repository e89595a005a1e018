//! Behavry core: everything the filter and the services need to understand MCP traffic, with no I/O.
//!
//! This crate compiles for `wasm32-wasip1` (inside Envoy, through the filter) and natively (the
//! services, the CLI, tests). It holds:
//! - [`jsonrpc`]: the JSON-RPC 2.0 message model, strict validation, error codes (standard, MCP
//!   and Behavry's own) and the error-response builder;
//! - [`dlp`]: the data-loss-prevention detectors, JSON scanning by pointer, redaction and keyed
//!   hashes of findings;
//! - [`injection`]: prompt injection in what servers return, with scores, reasons and spans;
//! - [`flow`]: what servers returned to an agent (keyed hashes), to see it flow to another server;
//! - [`jcs`]: the JSON Canonicalization Scheme (RFC 8785), the bytes that pin hashes and audit
//!   records are computed over;
//! - [`pins`]: tool definitions' hashes and pin statuses;
//! - [`limits`]: body-size and JSON-depth limits checked on raw bytes before any parsing;
//! - [`mcp`]: [`mcp::parse_message`] (bytes to validated message, one error enum mapped to HTTP
//!   status and JSON-RPC code in one place) and [`mcp::classify`] (what a call asks for: tool,
//!   resource, prompt, arguments, protocol version, client info);
//! - [`headers`]: consistency of the MCP 2026-07-28 standard headers (`Mcp-Method`, `Mcp-Name`,
//!   `MCP-Protocol-Version`) with the body;
//! - [`merkle`]: the audit log's Merkle tree (RFC 9162 §2.1): tree heads, inclusion and
//!   consistency proofs and their verification;
//! - [`poisoning`]: tool-definition scanning for poisoning and shadowing (instructions to the
//!   model, secrecy, hidden characters, other servers' tools), with scores and reasons;
//! - [`sse`]: a streaming Server-Sent Events decoder that yields complete events from arbitrary
//!   chunks and keeps each event's exact bytes, and the encoder for injected events;
//! - [`trace`]: W3C Trace Context `traceparent` parsing and formatting;
//! - [`wire`]: the JSON contracts between the filter, the authz-sidecar and the audit-sink.
//!
//! Nothing here may block, allocate unboundedly on untrusted input, or panic. The parsing rules
//! are written up in `docs/mcp-parsing.md`.

pub mod decision_table;
pub mod dlp;
pub mod fingerprint;
pub mod flow;
pub mod headers;
pub mod injection;
pub mod jcs;
pub mod jsonrpc;
pub mod limits;
pub mod mcp;
pub mod merkle;
pub mod pins;
pub mod pointer;
pub mod poisoning;
pub mod sse;
pub mod trace;
pub mod wire;
