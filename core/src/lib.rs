//! Behavry core: everything the filter and the services need to understand MCP traffic, with no I/O.
//!
//! This crate compiles for `wasm32-wasip1` (inside Envoy, through the filter) and natively (the
//! services, the CLI, tests). It holds:
//! - [`wire`]: the JSON contracts between the filter, the authz-sidecar and the audit-sink.
//!
//! Nothing here may block, allocate unboundedly on untrusted input, or panic.

pub mod wire;
