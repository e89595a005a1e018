//! Consistency of the MCP standard HTTP headers with the JSON-RPC body (MCP 2026-07-28,
//! Streamable HTTP, SEP-2243 "HTTP Header Standardization").
//!
//! Since 2026-07-28 a client mirrors body fields into headers so intermediaries can route and
//! govern without parsing the body:
//! - `Mcp-Method`: the JSON-RPC `method`, on every request (header rules for notification POSTs
//!   are left undefined by the spec; Behavry checks the header there only when it is sent);
//! - `Mcp-Name`: `params.name` of `tools/call` and `prompts/get`, `params.uri` of
//!   `resources/read`, `resources/subscribe` and `resources/unsubscribe`. A value that is not
//!   plain ASCII travels as `=?base64?{base64(utf8(value))}?=`, which the receiver decodes;
//! - `MCP-Protocol-Version`: must equal `params._meta["io.modelcontextprotocol/protocolVersion"]`.
//!
//! A header that is missing where required, malformed, or different from the body is answered
//! with HTTP 400 and JSON-RPC error `-32020` (HeaderMismatch). The check matters beyond spec
//! conformance: a proxy that routes or rate-limits on `Mcp-Name: safe_tool` while the body calls
//! `delete_everything` is exactly the confusion a governance layer must not allow.
//!
//! Behavry also refuses an `Mcp-Name` on a method that names no target (e.g. `tools/list`): the
//! spec defines no value for it, so any value would be a claim the body does not back.

use crate::jsonrpc::{HEADER_MISMATCH, Message};
use crate::mcp::McpCall;

/// Header mirroring the JSON-RPC method (lowercase, as proxy-wasm hands header names).
pub const MCP_METHOD_HEADER: &str = "mcp-method";
/// Header mirroring the call's target (tool name, resource URI or prompt name).
pub const MCP_NAME_HEADER: &str = "mcp-name";
/// Header carrying the protocol version (MCP 2025-06-18 and later).
pub const MCP_PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
/// Header carrying the session id (2025-era revisions; gone in 2026-07-28).
pub const MCP_SESSION_ID_HEADER: &str = "mcp-session-id";
/// The first revision with stateless requests and required standard headers.
pub const REVISION_2026_07_28: &str = "2026-07-28";

const BASE64_SENTINEL_PREFIX: &str = "=?base64?";
const BASE64_SENTINEL_SUFFIX: &str = "?=";

/// The MCP standard headers of one POST, as received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandardHeaders<'a> {
    /// `Mcp-Method`.
    pub mcp_method: Option<&'a str>,
    /// `Mcp-Name`, still encoded.
    pub mcp_name: Option<&'a str>,
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
}

/// Whether the standard headers must be present, or only checked when they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderPresence {
    /// Revisions before 2026-07-28 (clients send no `Mcp-Method`/`Mcp-Name`), and notifications:
    /// a header that is sent must still match.
    CheckIfPresent,
    /// Requests of revision 2026-07-28 or later: `Mcp-Method` always, `Mcp-Name` for methods that
    /// name a target.
    Required,
}

impl HeaderPresence {
    /// The rule for a message of the given effective protocol version.
    pub fn for_message(protocol_version: Option<&str>, message: &Message) -> HeaderPresence {
        let is_request = matches!(message, Message::Request { .. });
        match protocol_version {
            Some(version) if is_request && requires_standard_headers(version) => {
                HeaderPresence::Required
            }
            _ => HeaderPresence::CheckIfPresent,
        }
    }
}

/// Whether a protocol version is 2026-07-28 or later. MCP versions are `YYYY-MM-DD` dates, so
/// they order as strings; an unparseable version sorts where it sorts, and the stricter rule is
/// the safe side.
pub fn requires_standard_headers(protocol_version: &str) -> bool {
    protocol_version >= REVISION_2026_07_28
}

/// Which header disagrees with the body, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderMismatch {
    /// `Mcp-Method` differs from the body's method.
    #[error("Mcp-Method header {header:?} does not match the body's method {body:?}")]
    Method { header: String, body: String },
    /// `Mcp-Method` is required and missing.
    #[error("Mcp-Method header is required (MCP 2026-07-28) and missing")]
    MethodMissing,
    /// `Mcp-Name` differs from the body's target.
    #[error("Mcp-Name header {header:?} does not match the body's {member} {body:?}")]
    Name {
        header: String,
        member: &'static str,
        body: String,
    },
    /// `Mcp-Name` is required for this method and missing.
    #[error("Mcp-Name header is required for `{method}` (MCP 2026-07-28) and missing")]
    NameMissing { method: String },
    /// `Mcp-Name` sent on a method that names no target.
    #[error(
        "Mcp-Name header is not allowed on `{method}`, which names no tool, resource or prompt"
    )]
    NameUnexpected { method: String },
    /// `Mcp-Name` uses the Base64 form but does not decode to UTF-8.
    #[error("Mcp-Name header is not valid =?base64?...?= encoding")]
    NameEncoding,
    /// `MCP-Protocol-Version` differs from the version in `params._meta`.
    #[error(
        "MCP-Protocol-Version header {header:?} does not match params._meta protocol version {body:?}"
    )]
    ProtocolVersion { header: String, body: String },
}

impl HeaderMismatch {
    /// The single mapping to `(HTTP status, JSON-RPC code)`: every mismatch is 400 / -32020
    /// (MCP 2026-07-28, Streamable HTTP).
    fn mapping(&self) -> (u16, i64) {
        match self {
            HeaderMismatch::Method { .. }
            | HeaderMismatch::MethodMissing
            | HeaderMismatch::Name { .. }
            | HeaderMismatch::NameMissing { .. }
            | HeaderMismatch::NameUnexpected { .. }
            | HeaderMismatch::NameEncoding
            | HeaderMismatch::ProtocolVersion { .. } => (400, HEADER_MISMATCH),
        }
    }

    /// HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        self.mapping().0
    }

    /// JSON-RPC error code to answer with.
    pub fn json_rpc_code(&self) -> i64 {
        self.mapping().1
    }
}

/// Checks `Mcp-Method` and `Mcp-Name` against the body, when they are present.
pub fn check_headers(
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
    call: &McpCall,
) -> Result<(), HeaderMismatch> {
    check_standard_headers(
        &StandardHeaders {
            mcp_method,
            mcp_name,
            protocol_version: None,
        },
        call,
        HeaderPresence::CheckIfPresent,
    )
}

/// Checks all standard headers against the body under the given presence rule.
pub fn check_standard_headers(
    headers: &StandardHeaders<'_>,
    call: &McpCall,
    presence: HeaderPresence,
) -> Result<(), HeaderMismatch> {
    match headers.mcp_method {
        Some(header) if header != call.method => {
            return Err(HeaderMismatch::Method {
                header: header.to_owned(),
                body: call.method.clone(),
            });
        }
        Some(_) => {}
        None if presence == HeaderPresence::Required => return Err(HeaderMismatch::MethodMissing),
        None => {}
    }

    let target = name_target(call);
    match (headers.mcp_name, target) {
        (Some(header), Some((member, body))) => {
            if header != body && decode_name(header)? != body {
                return Err(HeaderMismatch::Name {
                    header: header.to_owned(),
                    member,
                    body: body.to_owned(),
                });
            }
        }
        (Some(_), None) => {
            return Err(HeaderMismatch::NameUnexpected {
                method: call.method.clone(),
            });
        }
        (None, Some(_)) if presence == HeaderPresence::Required => {
            return Err(HeaderMismatch::NameMissing {
                method: call.method.clone(),
            });
        }
        (None, _) => {}
    }

    // `initialize` carries the version it asks for, not the one in force; only the
    // 2026-07-28 `_meta` version is a mirror of the header.
    if call.method != "initialize"
        && let (Some(header), Some(body)) = (headers.protocol_version, &call.protocol_version)
        && header != body
    {
        return Err(HeaderMismatch::ProtocolVersion {
            header: header.to_owned(),
            body: body.clone(),
        });
    }
    Ok(())
}

/// The body member `Mcp-Name` mirrors for this call, with its name for messages.
fn name_target(call: &McpCall) -> Option<(&'static str, &str)> {
    match call.method.as_str() {
        "tools/call" | "prompts/get" => call
            .tool
            .as_deref()
            .or(call.prompt_name.as_deref())
            .map(|name| ("params.name", name)),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            call.resource_uri.as_deref().map(|uri| ("params.uri", uri))
        }
        _ => None,
    }
}

/// Decodes an `Mcp-Name` value: `=?base64?...?=` is Base64 (RFC 4648 §4) of UTF-8; anything
/// else is the value itself.
pub fn decode_name(header: &str) -> Result<String, HeaderMismatch> {
    let Some(encoded) = header
        .strip_prefix(BASE64_SENTINEL_PREFIX)
        .and_then(|rest| rest.strip_suffix(BASE64_SENTINEL_SUFFIX))
    else {
        return Ok(header.to_owned());
    };
    let bytes = decode_base64(encoded).ok_or(HeaderMismatch::NameEncoding)?;
    String::from_utf8(bytes).map_err(|_| HeaderMismatch::NameEncoding)
}

/// Standard Base64 with padding (RFC 4648 §4). Returns `None` on any malformed input, including
/// non-zero bits in the final padding group (RFC 4648 §3.5), so one name has one encoding.
fn decode_base64(input: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = input.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let groups = bytes.chunks_exact(4);
    let last_index = groups.len().checked_sub(1);
    for (index, group) in groups.enumerate() {
        let &[a, b, c, d] = group else { return None };
        let padding = match (c, d) {
            (b'=', b'=') => 2,
            (_, b'=') => 1,
            _ => 0,
        };
        if padding > 0 && Some(index) != last_index {
            return None;
        }
        let mut word = (sextet(a)? << 18) | (sextet(b)? << 12);
        if padding < 2 {
            word |= sextet(c)? << 6;
        }
        if padding < 1 {
            word |= sextet(d)?;
        }
        let [_, b0, b1, b2] = word.to_be_bytes();
        match padding {
            0 => out.extend_from_slice(&[b0, b1, b2]),
            1 if b2 == 0 => out.extend_from_slice(&[b0, b1]),
            2 if b1 == 0 && b2 == 0 => out.push(b0),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::classify;
    use serde_json::json;

    fn tools_call(name: &str) -> McpCall {
        classify(
            "tools/call",
            Some(&json!({"name": name, "arguments": {},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}})),
        )
        .unwrap()
    }

    #[test]
    fn matching_headers_pass() {
        let call = tools_call("echo");
        assert_eq!(
            check_headers(Some("tools/call"), Some("echo"), &call),
            Ok(())
        );
        assert_eq!(check_headers(None, None, &call), Ok(()));
        let read = classify("resources/read", Some(&json!({"uri":"file:///x"}))).unwrap();
        assert_eq!(
            check_headers(Some("resources/read"), Some("file:///x"), &read),
            Ok(())
        );
        let prompt = classify("prompts/get", Some(&json!({"name":"p"}))).unwrap();
        assert_eq!(
            check_headers(Some("prompts/get"), Some("p"), &prompt),
            Ok(())
        );
    }

    #[test]
    fn method_mismatch_is_400_and_32020() {
        let call = tools_call("echo");
        let err = check_headers(Some("tools/list"), Some("echo"), &call).unwrap_err();
        assert_eq!(
            err,
            HeaderMismatch::Method {
                header: "tools/list".into(),
                body: "tools/call".into()
            }
        );
        assert_eq!(err.http_status(), 400);
        assert_eq!(err.json_rpc_code(), -32020);
        // Method names are case-sensitive.
        assert!(check_headers(Some("Tools/Call"), None, &call).is_err());
    }

    #[test]
    fn name_mismatch_is_rejected() {
        let call = tools_call("delete_everything");
        let err = check_headers(Some("tools/call"), Some("safe_tool"), &call).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Mcp-Name header \"safe_tool\" does not match the body's params.name \"delete_everything\""
        );
        let read = classify("resources/read", Some(&json!({"uri":"file:///etc/passwd"}))).unwrap();
        assert!(check_headers(None, Some("file:///tmp/x"), &read).is_err());
    }

    #[test]
    fn name_on_a_method_without_target_is_rejected() {
        let list = classify("tools/list", None).unwrap();
        let err = check_headers(Some("tools/list"), Some("echo"), &list).unwrap_err();
        assert_eq!(
            err,
            HeaderMismatch::NameUnexpected {
                method: "tools/list".into()
            }
        );
        assert_eq!(err.json_rpc_code(), -32020);
    }

    #[test]
    fn base64_names_are_decoded() {
        let call = tools_call("tööl_unicode");
        // base64(utf8("tööl_unicode"))
        let encoded = "=?base64?dMO2w7ZsX3VuaWNvZGU=?=";
        assert_eq!(check_headers(None, Some(encoded), &call), Ok(()));
        let plain = tools_call("echo");
        assert_eq!(
            check_headers(None, Some("=?base64?ZWNobw==?="), &plain),
            Ok(())
        );
        assert_eq!(
            check_headers(None, Some("=?base64?ZWNobw=?="), &plain),
            Err(HeaderMismatch::NameEncoding)
        );
        assert_eq!(
            check_headers(None, Some("=?base64?ZWNobx==?="), &plain),
            Err(HeaderMismatch::NameEncoding),
            "non-zero padding bits"
        );
        assert_eq!(
            check_headers(None, Some("=?base64?/w==?="), &plain),
            Err(HeaderMismatch::NameEncoding),
            "not UTF-8"
        );
        assert!(matches!(
            check_headers(None, Some("=?base64?ZWNob2I=?="), &plain),
            Err(HeaderMismatch::Name { .. })
        ));
    }

    #[test]
    fn base64_decoder_matches_rfc4648_vectors() {
        // RFC 4648 §10 test vectors.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(decode_base64(encoded).as_deref(), Some(plain.as_bytes()));
        }
        for bad in ["Zg", "Zg=a", "Zg==Zg==", "Z===", "Zm9v!A==", "===="] {
            assert_eq!(decode_base64(bad), None, "{bad}");
        }
    }

    #[test]
    fn required_presence_for_2026_requests() {
        let call = tools_call("echo");
        let request = Message::Request {
            id: crate::jsonrpc::RequestId::Number(1.into()),
            method: "tools/call".into(),
            params: None,
        };
        let presence = HeaderPresence::for_message(Some("2026-07-28"), &request);
        assert_eq!(presence, HeaderPresence::Required);
        let missing_method = StandardHeaders {
            mcp_name: Some("echo"),
            ..StandardHeaders::default()
        };
        assert_eq!(
            check_standard_headers(&missing_method, &call, presence),
            Err(HeaderMismatch::MethodMissing)
        );
        let missing_name = StandardHeaders {
            mcp_method: Some("tools/call"),
            ..StandardHeaders::default()
        };
        assert_eq!(
            check_standard_headers(&missing_name, &call, presence),
            Err(HeaderMismatch::NameMissing {
                method: "tools/call".into()
            })
        );
        // Methods without a target need only Mcp-Method.
        let list = classify("tools/list", None).unwrap();
        let ok = StandardHeaders {
            mcp_method: Some("tools/list"),
            ..StandardHeaders::default()
        };
        assert_eq!(check_standard_headers(&ok, &list, presence), Ok(()));

        // Older revisions and notifications: absence is fine.
        assert_eq!(
            HeaderPresence::for_message(Some("2025-11-25"), &request),
            HeaderPresence::CheckIfPresent
        );
        assert_eq!(
            HeaderPresence::for_message(None, &request),
            HeaderPresence::CheckIfPresent
        );
        let notification = Message::Notification {
            method: "notifications/cancelled".into(),
            params: None,
        };
        assert_eq!(
            HeaderPresence::for_message(Some("2026-07-28"), &notification),
            HeaderPresence::CheckIfPresent
        );
    }

    #[test]
    fn protocol_version_header_must_match_meta() {
        let call = tools_call("echo");
        let headers = StandardHeaders {
            mcp_method: Some("tools/call"),
            mcp_name: Some("echo"),
            protocol_version: Some("2025-11-25"),
        };
        let err =
            check_standard_headers(&headers, &call, HeaderPresence::CheckIfPresent).unwrap_err();
        assert!(matches!(err, HeaderMismatch::ProtocolVersion { .. }));
        let same = StandardHeaders {
            protocol_version: Some("2026-07-28"),
            ..headers
        };
        assert_eq!(
            check_standard_headers(&same, &call, HeaderPresence::Required),
            Ok(())
        );
        // initialize declares the version it asks for; no mirror to compare.
        let init = classify(
            "initialize",
            Some(&json!({"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{}})),
        )
        .unwrap();
        let header = StandardHeaders {
            protocol_version: Some("2025-06-18"),
            ..StandardHeaders::default()
        };
        assert_eq!(
            check_standard_headers(&header, &init, HeaderPresence::CheckIfPresent),
            Ok(())
        );
    }
}
