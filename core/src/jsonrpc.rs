//! JSON-RPC 2.0 message model and validation.
//!
//! MCP frames every message as JSON-RPC 2.0 (<https://www.jsonrpc.org/specification>). Behavry
//! validates strictly, because a governance layer that accepts a message its upstream reads
//! differently lets a caller slip a call past policy:
//! - `jsonrpc` must be exactly `"2.0"` (JSON-RPC 2.0 §4, §5);
//! - `method` must be a string (§4);
//! - `id` must be a string or a number; `null` only appears in error responses, where the id could
//!   not be determined (§4, §5);
//! - a response carries exactly one of `result` and `error` (§5), and `error` is an object with an
//!   integer `code` and a string `message` (§5.1);
//! - `params`, when present, is an object or an array (§4.2);
//! - a message with both `method` and `result`/`error` is rejected as ambiguous;
//! - a batch (a top-level array, §6) is rejected: Streamable HTTP carries one message per POST since
//!   MCP 2025-06-18 (batching was removed from the protocol in that revision).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The only accepted value of the `jsonrpc` member.
pub const JSONRPC_VERSION: &str = "2.0";

/// Invalid JSON was received (JSON-RPC 2.0 §5.1).
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid Request object (JSON-RPC 2.0 §5.1).
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist or is not available (JSON-RPC 2.0 §5.1).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters (JSON-RPC 2.0 §5.1), e.g. a `tools/call` without a string `name`.
/// MCP servers answer it for an unknown tool or prompt, and so does Behavry for one the agent
/// may not see: a hidden tool is reported as unknown, not as forbidden.
pub const INVALID_PARAMS: i64 = -32602;
/// MCP 2025-11-25 (client/elicitation, "URL Elicitation Required Error"): the call cannot proceed
/// until the user completes the URL-mode elicitations in `data.elicitations`. Behavry answers it
/// for a call held for human approval, to clients that declared URL-mode elicitation.
pub const URL_ELICITATION_REQUIRED: i64 = -32042;
/// MCP: the resource a `resources/read` names does not exist (server/resources, "Error
/// Handling"). Behavry also answers it for a resource the agent may not see.
pub const RESOURCE_NOT_FOUND: i64 = -32002;
/// Internal JSON-RPC error (JSON-RPC 2.0 §5.1).
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP 2026-07-28 (Streamable HTTP, SEP-2243): a standard header (`Mcp-Method`, `Mcp-Name`,
/// `MCP-Protocol-Version`) is missing, malformed or does not match the body. Sent with HTTP 400.
pub const HEADER_MISMATCH: i64 = -32020;

// Behavry's own codes. They sit in the JSON-RPC "implementation-defined server errors" range
// (-32000 to -32099, JSON-RPC 2.0 §5.1), away from the codes MCP revisions use (-32002 resource
// not found, -32020..-32022 in 2026-07-28, -32042 URL elicitation required).
// They are stable: agents and tests may match on them.

/// Policy denied the call. `data` carries the trace id and the reasons.
pub const POLICY_DENIED: i64 = -32080;
/// The authz-sidecar did not answer in time (or answered garbage) and the route fails closed.
pub const AUTHZ_UNAVAILABLE: i64 = -32081;
/// The audit queue is full or the audit-sink is unreachable long enough that new governed calls
/// must fail closed: a call that cannot be recorded does not run.
pub const AUDIT_UNAVAILABLE: i64 = -32082;
/// A configured limit was exceeded (body size, JSON depth, SSE event size).
pub const LIMIT_EXCEEDED: i64 = -32083;
/// The upstream MCP server sent something that is not valid MCP (bad JSON, bad SSE framing).
pub const UPSTREAM_PROTOCOL_ERROR: i64 = -32084;
/// The caller is not authenticated to Behavry (no verified agent identity, or a token that is
/// not an access token).
pub const UNAUTHENTICATED: i64 = -32085;
/// The `Mcp-Session-Id` belongs to a session another agent opened.
pub const SESSION_FORBIDDEN: i64 = -32086;
/// No upstream credential could be obtained for the call (token exchange or secret store
/// failed, or the server has none configured); the request is not forwarded.
pub const CREDENTIAL_UNAVAILABLE: i64 = -32087;
/// The token lacks a scope the call needs (RFC 6750 §3.1 `insufficient_scope`): step up by
/// asking for a token with the scope named in the error's data.
pub const INSUFFICIENT_SCOPE: i64 = -32088;
/// The call is held for a human approval (policy `requireApproval`): retry it once approved.
/// `data` holds the approval's id, status and URL. Sent to clients that cannot take a URL-mode
/// elicitation ([`URL_ELICITATION_REQUIRED`]).
pub const APPROVAL_REQUIRED: i64 = -32089;
/// Behavry: the server's answer held content the decision's `dlp` obligation blocks (docs/dlp.md);
/// the agent gets this error instead, naming the detectors (`data.detectors`).
pub const CONTENT_WITHHELD: i64 = -32090;

/// A JSON-RPC request id: a string or a number (JSON-RPC 2.0 §4).
///
/// Numbers keep their [`serde_json::Number`] so the id written back in an error response is the
/// one the client sent (`7` stays `7`, `7.5` stays `7.5`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A string id.
    String(String),
    /// A numeric id.
    Number(serde_json::Number),
}

impl RequestId {
    /// The id as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            RequestId::String(s) => Value::String(s.clone()),
            RequestId::Number(n) => Value::Number(n.clone()),
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::String(s) => write!(f, "{s:?}"),
            RequestId::Number(n) => write!(f, "{n}"),
        }
    }
}

/// The `error` member of an error response (JSON-RPC 2.0 §5.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// Error code.
    pub code: i64,
    /// Short description.
    pub message: String,
    /// Optional details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// One validated JSON-RPC 2.0 message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that expects an answer.
    Request {
        id: RequestId,
        method: String,
        params: Option<Value>,
    },
    /// A call without an id: no answer is sent (JSON-RPC 2.0 §4.1).
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A successful answer.
    Response { id: RequestId, result: Value },
    /// An error answer; `id` is `None` when the request's id could not be determined.
    ErrorResponse {
        id: Option<RequestId>,
        error: ErrorObject,
    },
}

/// Why a parsed JSON value is not a valid JSON-RPC 2.0 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// A top-level array: a JSON-RPC batch.
    #[error(
        "JSON-RPC batches are not supported: Streamable HTTP carries one message per POST since MCP 2025-06-18"
    )]
    Batch,
    /// The top-level value is not an object.
    #[error("a JSON-RPC message must be a JSON object")]
    NotAnObject,
    /// `jsonrpc` is missing or not exactly `"2.0"`.
    #[error("member `jsonrpc` must be exactly \"2.0\"")]
    WrongVersion,
    /// `method` is present but not a string.
    #[error("member `method` must be a string")]
    MethodNotString,
    /// `id` is not a string or a number (or is `null` outside an error response).
    #[error("member `id` must be a string or a number")]
    InvalidId,
    /// `params` is present but neither an object nor an array.
    #[error("member `params` must be an object or an array")]
    InvalidParamsType,
    /// The message has `method` and also `result` or `error`.
    #[error("a message cannot have both `method` and `result`/`error`")]
    MethodAndResponse,
    /// A response without an `id` member.
    #[error("a response must have an `id` member")]
    ResponseWithoutId,
    /// A response with both `result` and `error`.
    #[error("a response must have exactly one of `result` and `error`, not both")]
    ResultAndError,
    /// Neither `method` nor `result`/`error`.
    #[error("a message must have `method` (request, notification) or `result`/`error` (response)")]
    NeitherRequestNorResponse,
    /// `error` is not an object with an integer `code` and a string `message`.
    #[error("member `error` must be an object with an integer `code` and a string `message`")]
    InvalidErrorObject,
}

impl Message {
    /// Validates a parsed JSON value as one JSON-RPC 2.0 message.
    pub fn from_value(value: Value) -> Result<Message, InvalidMessage> {
        let mut object = match value {
            Value::Object(object) => object,
            Value::Array(_) => return Err(InvalidMessage::Batch),
            _ => return Err(InvalidMessage::NotAnObject),
        };
        match object.get("jsonrpc") {
            Some(Value::String(v)) if v == JSONRPC_VERSION => {}
            _ => return Err(InvalidMessage::WrongVersion),
        }
        let has_result = object.contains_key("result");
        let has_error = object.contains_key("error");
        if let Some(method) = object.remove("method") {
            let Value::String(method) = method else {
                return Err(InvalidMessage::MethodNotString);
            };
            if has_result || has_error {
                return Err(InvalidMessage::MethodAndResponse);
            }
            let params = match object.remove("params") {
                None => None,
                Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
                Some(_) => return Err(InvalidMessage::InvalidParamsType),
            };
            return match object.remove("id") {
                None => Ok(Message::Notification { method, params }),
                Some(id) => Ok(Message::Request {
                    id: request_id(id)?,
                    method,
                    params,
                }),
            };
        }
        match (object.remove("result"), object.remove("error")) {
            (Some(_), Some(_)) => Err(InvalidMessage::ResultAndError),
            (Some(result), None) => {
                let id = object
                    .remove("id")
                    .ok_or(InvalidMessage::ResponseWithoutId)?;
                Ok(Message::Response {
                    id: request_id(id)?,
                    result,
                })
            }
            (None, Some(error)) => {
                let id = match object.remove("id") {
                    None => return Err(InvalidMessage::ResponseWithoutId),
                    Some(Value::Null) => None,
                    Some(id) => Some(request_id(id)?),
                };
                Ok(Message::ErrorResponse {
                    id,
                    error: error_object(error)?,
                })
            }
            (None, None) => Err(InvalidMessage::NeitherRequestNorResponse),
        }
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } | Message::ErrorResponse { .. } => None,
        }
    }

    /// The params of a request or notification.
    pub fn params(&self) -> Option<&Value> {
        match self {
            Message::Request { params, .. } | Message::Notification { params, .. } => {
                params.as_ref()
            }
            Message::Response { .. } | Message::ErrorResponse { .. } => None,
        }
    }

    /// The id, when the message has one.
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            Message::Request { id, .. } | Message::Response { id, .. } => Some(id),
            Message::ErrorResponse { id, .. } => id.as_ref(),
            Message::Notification { .. } => None,
        }
    }

    /// The message as JSON (members in a fixed order; the original bytes are what is forwarded).
    pub fn to_value(&self) -> Value {
        let mut object = Map::new();
        object.insert("jsonrpc".into(), Value::String(JSONRPC_VERSION.into()));
        match self {
            Message::Request { id, method, params } => {
                object.insert("id".into(), id.to_value());
                object.insert("method".into(), Value::String(method.clone()));
                if let Some(params) = params {
                    object.insert("params".into(), params.clone());
                }
            }
            Message::Notification { method, params } => {
                object.insert("method".into(), Value::String(method.clone()));
                if let Some(params) = params {
                    object.insert("params".into(), params.clone());
                }
            }
            Message::Response { id, result } => {
                object.insert("id".into(), id.to_value());
                object.insert("result".into(), result.clone());
            }
            Message::ErrorResponse { id, error } => {
                object.insert(
                    "id".into(),
                    id.as_ref().map_or(Value::Null, RequestId::to_value),
                );
                object.insert("error".into(), error_value(error));
            }
        }
        Value::Object(object)
    }
}

fn request_id(value: Value) -> Result<RequestId, InvalidMessage> {
    match value {
        Value::String(s) => Ok(RequestId::String(s)),
        Value::Number(n) => Ok(RequestId::Number(n)),
        _ => Err(InvalidMessage::InvalidId),
    }
}

fn error_object(value: Value) -> Result<ErrorObject, InvalidMessage> {
    let Value::Object(mut object) = value else {
        return Err(InvalidMessage::InvalidErrorObject);
    };
    let code = object
        .get("code")
        .and_then(Value::as_i64)
        .ok_or(InvalidMessage::InvalidErrorObject)?;
    let Some(Value::String(message)) = object.remove("message") else {
        return Err(InvalidMessage::InvalidErrorObject);
    };
    Ok(ErrorObject {
        code,
        message,
        data: object.remove("data"),
    })
}

fn error_value(error: &ErrorObject) -> Value {
    let mut object = Map::new();
    object.insert("code".into(), Value::from(error.code));
    object.insert("message".into(), Value::String(error.message.clone()));
    if let Some(data) = &error.data {
        object.insert("data".into(), data.clone());
    }
    Value::Object(object)
}

/// A body that is always valid JSON, used if serialization ever fails (it cannot for the values
/// built here, but the filter must never be left without an answer).
const FALLBACK_ERROR_BODY: &[u8] =
    br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}"#;

/// Builds the body of a JSON-RPC error response. `id` is `null` when unknown (JSON-RPC 2.0 §5:
/// "If there was an error in detecting the id in the Request object ... it MUST be Null").
pub fn error_response(
    id: Option<&RequestId>,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Vec<u8> {
    let value = Message::ErrorResponse {
        id: id.cloned(),
        error: ErrorObject {
            code,
            message: message.to_owned(),
            data,
        },
    }
    .to_value();
    serde_json::to_vec(&value).unwrap_or_else(|_| FALLBACK_ERROR_BODY.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(value: Value) -> Result<Message, InvalidMessage> {
        Message::from_value(value)
    }

    #[test]
    fn request_with_string_and_number_ids() {
        let m = validate(json!({"jsonrpc":"2.0","id":"a","method":"tools/list"})).unwrap();
        assert_eq!(m.id(), Some(&RequestId::String("a".into())));
        let m = validate(json!({"jsonrpc":"2.0","id":7,"method":"tools/list"})).unwrap();
        assert_eq!(m.id(), Some(&RequestId::Number(7.into())));
        let m = validate(json!({"jsonrpc":"2.0","id":-1.5,"method":"x"})).unwrap();
        assert_eq!(m.id().map(ToString::to_string).as_deref(), Some("-1.5"));
    }

    #[test]
    fn notification_has_no_id() {
        let m = validate(json!({"method":"notifications/initialized","jsonrpc":"2.0"})).unwrap();
        assert_eq!(
            m,
            Message::Notification {
                method: "notifications/initialized".into(),
                params: None
            }
        );
    }

    #[test]
    fn rejects_bad_ids() {
        for id in [json!(null), json!(true), json!({}), json!([1])] {
            let err = validate(json!({"jsonrpc":"2.0","id":id,"method":"m"})).unwrap_err();
            assert_eq!(err, InvalidMessage::InvalidId, "id {id}");
        }
        let err = validate(json!({"jsonrpc":"2.0","id":[1],"result":{}})).unwrap_err();
        assert_eq!(err, InvalidMessage::InvalidId);
    }

    #[test]
    fn rejects_wrong_or_missing_version() {
        for v in [json!("1.0"), json!(2.0), json!("2.0 "), json!(null)] {
            let err = validate(json!({"jsonrpc":v,"id":1,"method":"m"})).unwrap_err();
            assert_eq!(err, InvalidMessage::WrongVersion);
        }
        let err = validate(json!({"id":1,"method":"m"})).unwrap_err();
        assert_eq!(err, InvalidMessage::WrongVersion);
    }

    #[test]
    fn rejects_batches_and_scalars() {
        assert_eq!(
            validate(json!([{"jsonrpc":"2.0","id":1,"method":"m"}])).unwrap_err(),
            InvalidMessage::Batch
        );
        assert_eq!(
            validate(json!("x")).unwrap_err(),
            InvalidMessage::NotAnObject
        );
    }

    #[test]
    fn rejects_non_string_method_and_bad_params() {
        assert_eq!(
            validate(json!({"jsonrpc":"2.0","id":1,"method":5})).unwrap_err(),
            InvalidMessage::MethodNotString
        );
        for p in [json!(null), json!("x"), json!(3)] {
            assert_eq!(
                validate(json!({"jsonrpc":"2.0","id":1,"method":"m","params":p})).unwrap_err(),
                InvalidMessage::InvalidParamsType
            );
        }
    }

    #[test]
    fn response_shapes() {
        let m = validate(json!({"jsonrpc":"2.0","id":1,"result":{"ok":true}})).unwrap();
        assert!(matches!(m, Message::Response { .. }));
        let m = validate(json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}))
            .unwrap();
        assert_eq!(m.id(), None);
        assert_eq!(
            validate(json!({"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"x"}}))
                .unwrap_err(),
            InvalidMessage::ResultAndError
        );
        assert_eq!(
            validate(json!({"jsonrpc":"2.0","result":1})).unwrap_err(),
            InvalidMessage::ResponseWithoutId
        );
        assert_eq!(
            validate(json!({"jsonrpc":"2.0","id":null,"result":1})).unwrap_err(),
            InvalidMessage::InvalidId
        );
        assert_eq!(
            validate(json!({"jsonrpc":"2.0","id":1})).unwrap_err(),
            InvalidMessage::NeitherRequestNorResponse
        );
        assert_eq!(
            validate(json!({"jsonrpc":"2.0","id":1,"method":"m","result":1})).unwrap_err(),
            InvalidMessage::MethodAndResponse
        );
        for e in [
            json!("boom"),
            json!({"code":"1","message":"x"}),
            json!({"code":1.5,"message":"x"}),
            json!({"code":1}),
        ] {
            assert_eq!(
                validate(json!({"jsonrpc":"2.0","id":1,"error":e})).unwrap_err(),
                InvalidMessage::InvalidErrorObject
            );
        }
    }

    #[test]
    fn error_response_body_round_trips() {
        let id = RequestId::Number(serde_json::Number::from(42u64));
        let body = error_response(
            Some(&id),
            POLICY_DENIED,
            "denied",
            Some(json!({"traceId":"t"})),
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":42,"error":{"code":-32080,"message":"denied","data":{"traceId":"t"}}})
        );
        let body = error_response(None, PARSE_ERROR, "bad", None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}})
        );
        assert_eq!(
            Message::from_value(v).unwrap(),
            Message::ErrorResponse {
                id: None,
                error: ErrorObject {
                    code: PARSE_ERROR,
                    message: "bad".into(),
                    data: None
                }
            }
        );
    }

    #[test]
    fn string_ids_round_trip_in_error_bodies() {
        let id = RequestId::String("req-\"1\"".into());
        let body = error_response(Some(&id), INTERNAL_ERROR, "x", None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], json!("req-\"1\""));
    }
}
