//! Behavry audit-sink: the tamper-evident record of every governed MCP call.
//!
//! The Envoy filter ships audit events (intent, decision, outcome of each call; see
//! [`behavry_core::wire::AuditEvent`]) in NDJSON batches to `POST /v1/events`. The sink parses the
//! whole batch, appends the new events to a SHA-256 hash chain in SQLite inside one transaction,
//! and acknowledges only after the commit is durable; re-sent events are recognized by `eventId`
//! and counted as duplicates, so the filter can retry until acknowledged.
//!
//! - [`chain`]: pure hash-chain logic: canonical bytes, chain hash, verification.
//! - [`ingest`]: pure NDJSON batch parsing (all or nothing).
//! - [`store`]: the SQLite log (sqlx): appends, the Merkle tree's nodes, checkpoints, proofs,
//!   and the rows verification reads.
//! - [`verify`]: verification of a whole log (chain, tree, checkpoints) naming the first bad
//!   record.
//! - [`export`]: the log as NDJSON with its checkpoints and proofs, written and verified.
//! - [`api`]: the axum router ([`api::app`]) and the one place errors become HTTP answers.
//! - [`server`]: settings and the serving loop used by the `behavry-audit-sink` binary.
//!
//! The contract and the chain definition are documented in `docs/audit.md`.

pub mod api;
pub mod chain;
pub mod checkpoint;
pub mod export;
pub mod ingest;
pub mod server;
pub mod store;
pub mod verify;

pub use api::{AppState, app};
pub use chain::{BreakReason, ChainBreak, ChainHead};
pub use store::{AuditStore, StoreError, VerifyOutcome, verify_database};
pub use verify::{Failure, LogVerifier, Summary};
