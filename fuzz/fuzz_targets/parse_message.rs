//! Fuzzes the request path: bytes -> validated JSON-RPC message -> MCP classification ->
//! header consistency. Nothing may panic; every accepted message must satisfy the invariants
//! checked below.
#![no_main]

use behavry_core::headers::{HeaderPresence, StandardHeaders, check_standard_headers};
use behavry_core::limits::Limits;
use behavry_core::mcp::{MessageError, parse_call, parse_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits so the fuzzer reaches the limit paths quickly.
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        max_json_depth: 16,
        max_sse_event_bytes: 64 * 1024,
    };
    match parse_call(data, &limits) {
        Ok((message, call)) => {
            // A re-serialized message must parse back to itself.
            if let Ok(bytes) = serde_json::to_vec(&message.to_value()) {
                let again = parse_message(&bytes, &Limits::default());
                assert_eq!(again.as_ref().ok(), Some(&message));
            }
            if let Some(call) = call {
                // The body's own values always pass the header check.
                let headers = StandardHeaders {
                    mcp_method: Some(&call.method),
                    mcp_name: call.target_name(),
                    protocol_version: call.protocol_version.as_deref(),
                };
                assert_eq!(
                    check_standard_headers(&headers, &call, HeaderPresence::Required),
                    Ok(())
                );
            }
        }
        Err(err) => {
            let (status, code) = (err.http_status(), err.json_rpc_code());
            assert!(status == 400 || status == 413);
            assert!((-32768..=-32000).contains(&code));
            let body = err.error_response(None);
            assert!(parse_message(&body, &Limits::default()).is_ok());
            if let MessageError::BodyTooLarge { size, limit } = err {
                assert!(size > limit);
            }
        }
    }
});
