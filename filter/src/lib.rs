//! Behavry's Envoy filter: a thin proxy-wasm shim over `behavry-core`.
//!
//! The decisions live in pure modules that run natively in tests:
//! - [`config`]: the plugin configuration, validated once in the root context;
//! - [`claims`]: delegation chain, scopes and `exp` from the verified token payload;
//! - [`credentials`]: upstream credentials that replace the agent's, cached per worker;
//! - [`exchange`]: one HTTP exchange on an MCP route, as a state machine;
//! - [`inline`]: the published decision table and the decision cache (no callout);
//! - [`shipping`]: audit batches to the audit-sink, retried until acknowledged;
//! - [`resource_metadata`]: RFC 9728 protected-resource metadata for each route;
//! - [`revocation`]: the revocation list polled from the authz-sidecar.
//!
//! The shim (compiled for `wasm32` only) reads what Envoy hands over, feeds those modules and
//! carries out their answers with `proxy_wasm::hostcalls`, whose errors are handled instead of
//! unwrapped: a filter that panics takes the request down with it.

pub mod claims;
pub mod config;
pub mod credentials;
pub mod exchange;
pub mod inline;
pub mod resource_metadata;
pub mod revocation;
pub mod shipping;

/// Version of the filter, logged at VM start.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Source revision the filter was built from (`BEHAVRY_BUILD_ID` at build time, set by the
/// Makefile to the git commit), logged at VM start.
pub const BUILD_ID: &str = match option_env!("BEHAVRY_BUILD_ID") {
    Some(id) => id,
    None => "dev",
};

#[cfg(target_arch = "wasm32")]
mod shim;
