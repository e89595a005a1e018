//! MCP message parsing and classification: from raw body bytes to what policy decides on.
//!
//! [`parse_message`] runs the checks in a fixed order, cheapest and most dangerous first, and
//! stops at the first failure: size, UTF-8, nesting depth (a byte scan before any recursive
//! parsing), JSON syntax (duplicate object keys refused), then JSON-RPC 2.0 validity. Each failure
//! is its own [`MessageError`] variant, mapped to an HTTP status and a JSON-RPC code in one place
//! ([`MessageError::http_status`], [`MessageError::json_rpc_code`]).
//!
//! [`classify`] then says what a request or notification asks for ([`McpCall`]), and refuses
//! governed calls whose target is missing ([`ParamsError`], `-32602`): a `tools/call` without a
//! string `params.name` has no tool to decide on, and must not be forwarded on a guess.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::jsonrpc::{
    INVALID_PARAMS, INVALID_REQUEST, InvalidMessage, LIMIT_EXCEEDED, Message, PARSE_ERROR,
    RequestId, error_response,
};
use crate::limits::{LimitError, Limits, check_body_size, check_json_depth};
use crate::wire::RequestFacts;

/// Header/body consistency lives in [`crate::headers`]; re-exported here because callers check
/// it right after [`classify`].
pub use crate::headers::{HeaderMismatch, check_headers};

/// `_meta` key carrying the protocol version in each request (MCP 2026-07-28, stateless MCP:
/// `initialize` is gone and its fields move into every request's `params._meta`).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key carrying `clientInfo` in each request (MCP 2026-07-28).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key carrying the client capabilities in each request (MCP 2026-07-28).
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of a progress token (MCP basic/utilities/progress, all revisions).
pub const META_PROGRESS_TOKEN: &str = "progressToken";

/// Why a body is not an acceptable MCP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The body is larger than `maxBodyBytes`.
    #[error("body of {size} bytes exceeds the limit maxBodyBytes={limit}")]
    BodyTooLarge { size: usize, limit: usize },
    /// The body is not UTF-8 (RFC 8259 §8.1: JSON exchanged between systems MUST be UTF-8).
    #[error("body is not valid UTF-8 (invalid byte at offset {valid_up_to})")]
    InvalidUtf8 { valid_up_to: usize },
    /// Objects/arrays nest deeper than `maxJsonDepth`.
    #[error("JSON nesting exceeds the limit maxJsonDepth={limit}")]
    TooDeep { limit: usize },
    /// The body is not JSON.
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// An object repeats a member name. RFC 8259 §4 leaves the meaning to each parser, so two
    /// parsers (Behavry's and the upstream's) could read different tool names from one body.
    #[error("ambiguous JSON: {0}")]
    DuplicateKey(String),
    /// The JSON is not a valid JSON-RPC 2.0 message.
    #[error("invalid JSON-RPC message: {0}")]
    Invalid(#[from] InvalidMessage),
    /// A request's params lack what its method needs.
    #[error("invalid params: {0}")]
    Params(#[from] ParamsError),
}

impl MessageError {
    /// The single mapping of every error to `(HTTP status, JSON-RPC code)`.
    ///
    /// Parse and request errors get HTTP 400 like the MCP SDKs do (the Python SDK maps -32700,
    /// -32600, -32602 and -32020 to 400); a body that is too large gets 413 (RFC 9110 §15.5.14).
    fn mapping(&self) -> (u16, i64) {
        match self {
            MessageError::BodyTooLarge { .. } => (413, LIMIT_EXCEEDED),
            MessageError::TooDeep { .. } => (400, LIMIT_EXCEEDED),
            MessageError::InvalidUtf8 { .. } | MessageError::Syntax(_) => (400, PARSE_ERROR),
            MessageError::DuplicateKey(_) | MessageError::Invalid(_) => (400, INVALID_REQUEST),
            MessageError::Params(err) => err.mapping(),
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

    /// The JSON-RPC error response body. `id` is the request's id when it is known (params
    /// errors); `None` writes `null`, as JSON-RPC 2.0 §5 requires when the id could not be read.
    pub fn error_response(&self, id: Option<&RequestId>) -> Vec<u8> {
        error_response(id, self.json_rpc_code(), &self.to_string(), None)
    }
}

impl From<LimitError> for MessageError {
    fn from(err: LimitError) -> Self {
        match err {
            LimitError::BodyTooLarge { size, limit } => MessageError::BodyTooLarge { size, limit },
            LimitError::TooDeep { limit } => MessageError::TooDeep { limit },
        }
    }
}

/// Parses and validates one JSON-RPC message from a request or response body.
pub fn parse_message(body: &[u8], limits: &Limits) -> Result<Message, MessageError> {
    check_body_size(body.len(), limits)?;
    let text = std::str::from_utf8(body).map_err(|e| MessageError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    check_json_depth(body, limits.max_json_depth)?;
    let value = serde_json::from_str::<UniqueKeysValue>(text)
        .map_err(|e| match e.classify() {
            // The only data errors come from UniqueKeysValue (a repeated key); syntax and
            // end-of-input errors are malformed JSON.
            serde_json::error::Category::Data => MessageError::DuplicateKey(e.to_string()),
            _ => MessageError::Syntax(e.to_string()),
        })?
        .0;
    Ok(Message::from_value(value)?)
}

/// Parses a message and classifies it when it is a request or notification.
pub fn parse_call(
    body: &[u8],
    limits: &Limits,
) -> Result<(Message, Option<McpCall>), MessageError> {
    let message = parse_message(body, limits)?;
    let call = match message.method() {
        Some(method) => Some(classify(method, message.params())?),
        None => None,
    };
    Ok((message, call))
}

/// A JSON value built like `serde_json::Value`, but refusing objects with repeated member names.
struct UniqueKeysValue(Value);

impl<'de> Deserialize<'de> for UniqueKeysValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeysValue)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeysValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate object member {key:?}"
                )));
            }
            let UniqueKeysValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// What kind of MCP call a request is, as far as governance is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CallKind {
    /// Calls policy decides before they run: `tools/call`, `resources/read`, `prompts/get`, and
    /// the requests that reach what those name: `resources/subscribe` (a resource; unsubscribing
    /// only gives up access and passes), `completion/complete` (a prompt or resource template),
    /// and `tasks/get`, `tasks/result`, `tasks/cancel`, `tasks/update` (the task a `tools/call`
    /// created).
    Governed,
    /// `initialize` (2025-era handshake).
    Initialize,
    /// `tools/list`, `resources/list`, `prompts/list`, `resources/templates/list`, `tasks/list`:
    /// answers are scanned and filtered.
    Listing,
    /// Everything else (notifications, ping, sampling, elicitation, subscriptions, ...).
    #[default]
    Other,
}

/// What one MCP request or notification asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct McpCall {
    /// JSON-RPC method.
    pub method: String,
    /// Governance class of the method.
    pub kind: CallKind,
    /// `params.name` of a `tools/call`.
    pub tool: Option<String>,
    /// `params.uri` of a `resources/read`, `resources/subscribe` or `resources/unsubscribe`.
    pub resource_uri: Option<String>,
    /// `params.name` of a `prompts/get`.
    pub prompt_name: Option<String>,
    /// The prompt or resource (template) a `completion/complete` completes an argument of:
    /// `params.ref.name` of a `ref/prompt`, `params.ref.uri` of a `ref/resource`. Kept apart from
    /// `prompt_name` and `resource_uri` here (no `Mcp-Name` mirrors it); the request facts put it
    /// where policy looks for a prompt or a resource.
    pub completion_ref: Option<CompletionRef>,
    /// `params.taskId` of `tasks/get`, `tasks/result`, `tasks/cancel` and `tasks/update` (MCP
    /// 2025-11-25 basic/utilities/tasks, and the tasks extension).
    pub task_id: Option<String>,
    /// `params.arguments` of a `tools/call` or `prompts/get` (always an object when present).
    pub arguments: Option<Value>,
    /// Protocol version declared in the body: `params.protocolVersion` of `initialize`, or
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` (2026-07-28). The
    /// `MCP-Protocol-Version` header takes precedence: see [`McpCall::effective_protocol_version`].
    pub protocol_version: Option<String>,
    /// `params.clientInfo` of `initialize`, or `params._meta["io.modelcontextprotocol/clientInfo"]`.
    pub client_info: Option<Value>,
    /// `params._meta["io.modelcontextprotocol/clientCapabilities"]` (2026-07-28), or
    /// `params.capabilities` of `initialize`.
    pub client_capabilities: Option<Value>,
    /// `params._meta.progressToken`.
    pub progress_token: Option<Value>,
}

impl McpCall {
    /// The protocol version in force for this call: the `MCP-Protocol-Version` header when sent
    /// (MCP 2025-06-18 basic/transports, "Protocol Version Header"), else what the body declares.
    pub fn effective_protocol_version<'a>(&'a self, header: Option<&'a str>) -> Option<&'a str> {
        header.or(self.protocol_version.as_deref())
    }

    /// The facts sent to policy and audit ([`RequestFacts`]) for this call on `server`.
    /// `protocol_header` is the `MCP-Protocol-Version` header, which takes precedence.
    pub fn request_facts(
        &self,
        server: &str,
        session_id: Option<&str>,
        protocol_header: Option<&str>,
    ) -> RequestFacts {
        RequestFacts {
            server: server.to_owned(),
            method: self.method.clone(),
            tool: self.tool.clone(),
            resource_uri: match &self.completion_ref {
                Some(CompletionRef::Resource(uri)) => Some(uri.clone()),
                _ => self.resource_uri.clone(),
            },
            prompt_name: match &self.completion_ref {
                Some(CompletionRef::Prompt(name)) => Some(name.clone()),
                _ => self.prompt_name.clone(),
            },
            arguments: self.arguments.clone(),
            arguments_bytes: self.arguments.as_ref().and_then(|arguments| {
                serde_json::to_vec(arguments)
                    .ok()
                    .and_then(|json| u64::try_from(json.len()).ok())
            }),
            task_id: self.task_id.clone(),
            session_id: session_id.map(str::to_owned),
            protocol_version: self
                .effective_protocol_version(protocol_header)
                .map(str::to_owned),
            client_info: self.client_info.clone(),
            client: None,
        }
    }

    /// The target the `Mcp-Name` header mirrors (MCP 2026-07-28, SEP-2243): the tool name, the
    /// resource URI or the prompt name.
    pub fn target_name(&self) -> Option<&str> {
        self.tool
            .as_deref()
            .or(self.resource_uri.as_deref())
            .or(self.prompt_name.as_deref())
    }
}

/// What a `completion/complete` completes an argument of (MCP server/utilities/completion,
/// "Reference Types").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompletionRef {
    /// `{"type": "ref/prompt", "name": ...}`.
    Prompt(String),
    /// `{"type": "ref/resource", "uri": ...}`: a resource URI or URI template.
    Resource(String),
}

/// The methods that address a task by `params.taskId`.
pub const TASK_METHODS: [&str; 4] = ["tasks/get", "tasks/result", "tasks/cancel", "tasks/update"];

/// A request whose params do not carry what its method needs (JSON-RPC `-32602`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// `params` is missing or not an object where the method needs named params.
    #[error("`{method}` requires `params` to be an object")]
    NotAnObject { method: String },
    /// A required string member is missing or not a string.
    #[error("`{method}` requires `params.{member}` to be a string")]
    MissingString {
        method: String,
        member: &'static str,
    },
    /// `params.arguments` is present but not an object.
    #[error("`{method}` requires `params.arguments`, when present, to be an object")]
    ArgumentsNotObject { method: String },
    /// `params._meta` is present but not an object (MCP basic, "_meta": an object).
    #[error("`params._meta` must be an object")]
    MetaNotObject,
    /// `params.ref` of a `completion/complete` is not a prompt or resource reference.
    #[error(
        "`completion/complete` requires `params.ref` to be {{\"type\": \"ref/prompt\", \"name\": ...}} or {{\"type\": \"ref/resource\", \"uri\": ...}}"
    )]
    BadCompletionRef,
}

impl ParamsError {
    /// The single mapping to `(HTTP status, JSON-RPC code)`: every variant is a request whose
    /// params do not fit its method, -32602 (JSON-RPC 2.0 §5.1), with HTTP 400 as the MCP SDKs do.
    fn mapping(&self) -> (u16, i64) {
        match self {
            ParamsError::NotAnObject { .. }
            | ParamsError::MissingString { .. }
            | ParamsError::ArgumentsNotObject { .. }
            | ParamsError::MetaNotObject
            | ParamsError::BadCompletionRef => (400, INVALID_PARAMS),
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

/// The governance class of a method.
pub fn kind_of(method: &str) -> CallKind {
    match method {
        "tools/call"
        | "resources/read"
        | "prompts/get"
        | "resources/subscribe"
        | "completion/complete" => CallKind::Governed,
        m if TASK_METHODS.contains(&m) => CallKind::Governed,
        "initialize" => CallKind::Initialize,
        "tools/list"
        | "resources/list"
        | "prompts/list"
        | "resources/templates/list"
        | "tasks/list" => CallKind::Listing,
        _ => CallKind::Other,
    }
}

/// Classifies a request or notification by its method and params.
pub fn classify(method: &str, params: Option<&Value>) -> Result<McpCall, ParamsError> {
    let kind = kind_of(method);
    let mut call = McpCall {
        method: method.to_owned(),
        kind,
        ..McpCall::default()
    };
    let object = match params {
        Some(Value::Object(object)) => Some(object),
        _ => None,
    };
    // Governed calls name their target in params.
    let needs_object = kind == CallKind::Governed
        || kind == CallKind::Initialize
        || method == "resources/unsubscribe";
    let object = match object {
        Some(object) => object,
        None if needs_object => {
            return Err(ParamsError::NotAnObject {
                method: method.to_owned(),
            });
        }
        // Positional (array) params or no params: nothing MCP-specific to read.
        None => return Ok(call),
    };

    match object.get("_meta") {
        None => {}
        Some(Value::Object(meta)) => {
            call.protocol_version = string_member(meta, META_PROTOCOL_VERSION);
            call.client_info = meta.get(META_CLIENT_INFO).cloned();
            call.client_capabilities = meta.get(META_CLIENT_CAPABILITIES).cloned();
            call.progress_token = meta.get(META_PROGRESS_TOKEN).cloned();
        }
        Some(_) => return Err(ParamsError::MetaNotObject),
    }

    match method {
        "tools/call" => {
            call.tool = Some(required_string(object, method, "name")?);
            call.arguments = arguments(object, method)?;
        }
        "prompts/get" => {
            call.prompt_name = Some(required_string(object, method, "name")?);
            call.arguments = arguments(object, method)?;
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            call.resource_uri = Some(required_string(object, method, "uri")?);
        }
        "completion/complete" => call.completion_ref = Some(completion_ref(object)?),
        m if TASK_METHODS.contains(&m) => {
            call.task_id = Some(required_string(object, method, "taskId")?);
        }
        "initialize" => {
            // The 2025-era handshake (basic/lifecycle): the client's requested version and
            // identity are plain params.
            if let Some(version) = string_member(object, "protocolVersion") {
                call.protocol_version = Some(version);
            }
            if let Some(info) = object.get("clientInfo") {
                call.client_info = Some(info.clone());
            }
            if let Some(capabilities) = object.get("capabilities") {
                call.client_capabilities = Some(capabilities.clone());
            }
        }
        _ => {}
    }
    Ok(call)
}

fn string_member(object: &Map<String, Value>, member: &str) -> Option<String> {
    match object.get(member) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn required_string(
    object: &Map<String, Value>,
    method: &str,
    member: &'static str,
) -> Result<String, ParamsError> {
    string_member(object, member).ok_or_else(|| ParamsError::MissingString {
        method: method.to_owned(),
        member,
    })
}

fn completion_ref(object: &Map<String, Value>) -> Result<CompletionRef, ParamsError> {
    let reference = match object.get("ref") {
        Some(Value::Object(reference)) => reference,
        _ => return Err(ParamsError::BadCompletionRef),
    };
    let kind = reference.get("type").and_then(Value::as_str);
    match kind {
        Some("ref/prompt") => string_member(reference, "name").map(CompletionRef::Prompt),
        Some("ref/resource") => string_member(reference, "uri").map(CompletionRef::Resource),
        _ => None,
    }
    .ok_or(ParamsError::BadCompletionRef)
}

fn arguments(object: &Map<String, Value>, method: &str) -> Result<Option<Value>, ParamsError> {
    match object.get("arguments") {
        None => Ok(None),
        Some(args @ Value::Object(_)) => Ok(Some(args.clone())),
        Some(_) => Err(ParamsError::ArgumentsNotObject {
            method: method.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::RequestId;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(body: &str) -> Result<Message, MessageError> {
        parse_message(body.as_bytes(), &Limits::default())
    }

    fn call_of(body: &str) -> Result<McpCall, MessageError> {
        let (_, call) = parse_call(body.as_bytes(), &Limits::default())?;
        Ok(call.unwrap())
    }

    #[test]
    fn parses_a_tools_call_with_fields_in_any_order() {
        let bodies = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#,
            r#"{"params":{"arguments":{"message":"hi"},"name":"echo"},"method":"tools/call","id":1,"jsonrpc":"2.0"}"#,
            r#"{"id":1,"params":{"name":"echo","arguments":{"message":"hi"}},"jsonrpc":"2.0","method":"tools/call"}"#,
        ];
        for body in bodies {
            let call = call_of(body).unwrap();
            assert_eq!(call.kind, CallKind::Governed);
            assert_eq!(call.tool.as_deref(), Some("echo"));
            assert_eq!(call.arguments, Some(json!({"message":"hi"})));
            assert_eq!(call.target_name(), Some("echo"));
        }
    }

    #[test]
    fn invalid_json_is_a_parse_error() {
        for body in [
            "",
            "{",
            r#"{"jsonrpc":"2.0",}"#,
            "nul",
            r#"{"a":1} x"#,
            "{'a':1}",
        ] {
            let err = parse(body).unwrap_err();
            assert!(matches!(err, MessageError::Syntax(_)), "{body:?}: {err:?}");
            assert_eq!(err.json_rpc_code(), PARSE_ERROR);
            assert_eq!(err.http_status(), 400);
        }
    }

    #[test]
    fn invalid_utf8_is_a_parse_error_naming_the_offset() {
        let err = parse_message(b"{\"a\":\"\xff\"}", &Limits::default()).unwrap_err();
        assert_eq!(err, MessageError::InvalidUtf8 { valid_up_to: 6 });
        assert_eq!(err.json_rpc_code(), PARSE_ERROR);
        assert!(err.to_string().contains("offset 6"));
    }

    #[test]
    fn wrong_jsonrpc_version_is_invalid_request() {
        let err = parse(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#).unwrap_err();
        assert_eq!(err, MessageError::Invalid(InvalidMessage::WrongVersion));
        assert_eq!(err.json_rpc_code(), INVALID_REQUEST);
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn batch_is_rejected_clearly() {
        let err = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert_eq!(err, MessageError::Invalid(InvalidMessage::Batch));
        assert!(err.to_string().contains("batches are not supported"));
        assert_eq!(err.json_rpc_code(), INVALID_REQUEST);
    }

    #[test]
    fn deep_nesting_is_refused_before_serde() {
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":{}1{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = parse(&deep).unwrap_err();
        assert_eq!(err, MessageError::TooDeep { limit: 64 });
        assert!(err.to_string().contains("maxJsonDepth=64"));
        assert_eq!(err.json_rpc_code(), LIMIT_EXCEEDED);
        assert_eq!(err.http_status(), 400);
        // Exactly at the limit is fine.
        let limits = Limits {
            max_json_depth: 3,
            ..Limits::default()
        };
        let ok = r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[1]}}"#;
        assert!(parse_message(ok.as_bytes(), &limits).is_ok());
        let too_deep = r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[[1]]}}"#;
        assert_eq!(
            parse_message(too_deep.as_bytes(), &limits).unwrap_err(),
            MessageError::TooDeep { limit: 3 }
        );
    }

    #[test]
    fn oversize_body_is_413() {
        let limits = Limits {
            max_body_bytes: 16,
            ..Limits::default()
        };
        let err =
            parse_message(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, &limits).unwrap_err();
        assert_eq!(
            err,
            MessageError::BodyTooLarge {
                size: 40,
                limit: 16
            }
        );
        assert_eq!(err.http_status(), 413);
        assert_eq!(err.json_rpc_code(), LIMIT_EXCEEDED);
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","name":"evil"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[{"k":1,"k":2}]}}"#,
        ] {
            let err = parse(body).unwrap_err();
            assert!(matches!(err, MessageError::DuplicateKey(_)), "{err:?}");
            assert_eq!(err.json_rpc_code(), INVALID_REQUEST);
        }
    }

    #[test]
    fn ids_keep_their_type() {
        let m = parse(r#"{"jsonrpc":"2.0","id":"abc","method":"ping"}"#).unwrap();
        assert_eq!(m.id(), Some(&RequestId::String("abc".into())));
        let m = parse(r#"{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}"#).unwrap();
        assert_eq!(
            m.id().map(ToString::to_string).as_deref(),
            Some("9007199254740993")
        );
        let err = parse(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#).unwrap_err();
        assert_eq!(err, MessageError::Invalid(InvalidMessage::InvalidId));
        let err = parse(r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#).unwrap_err();
        assert_eq!(err, MessageError::Invalid(InvalidMessage::InvalidId));
    }

    #[test]
    fn missing_or_non_string_tool_name_is_invalid_params() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null}}"#,
        ] {
            let err = call_of(body).unwrap_err();
            assert_eq!(
                err,
                MessageError::Params(ParamsError::MissingString {
                    method: "tools/call".into(),
                    member: "name"
                })
            );
            assert_eq!(err.json_rpc_code(), INVALID_PARAMS);
            assert_eq!(
                err.to_string(),
                "invalid params: `tools/call` requires `params.name` to be a string"
            );
        }
        let err = call_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#).unwrap_err();
        assert_eq!(
            err,
            MessageError::Params(ParamsError::NotAnObject {
                method: "tools/call".into()
            })
        );
        let err = call_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["echo"]}"#)
            .unwrap_err();
        assert_eq!(err.json_rpc_code(), INVALID_PARAMS);
        let err = call_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":[1]}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            MessageError::Params(ParamsError::ArgumentsNotObject {
                method: "tools/call".into()
            })
        );
    }

    #[test]
    fn resources_and_prompts_need_their_targets() {
        let call = call_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#,
        )
        .unwrap();
        assert_eq!(call.kind, CallKind::Governed);
        assert_eq!(call.resource_uri.as_deref(), Some("file:///a"));
        let err = call_of(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("`params.uri`"));

        let call = call_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"x":"1"}}}"#,
        )
        .unwrap();
        assert_eq!(call.prompt_name.as_deref(), Some("p"));
        assert_eq!(call.arguments, Some(json!({"x":"1"})));
        let err =
            call_of(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"uri":"p"}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("`params.name`"));

        let call = call_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"u"}}"#,
        )
        .unwrap();
        assert_eq!(call.kind, CallKind::Governed);
        assert_eq!(call.target_name(), Some("u"));
        // Unsubscribing only gives up access: it passes, but still names its resource.
        let call = call_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe","params":{"uri":"u"}}"#,
        )
        .unwrap();
        assert_eq!(call.kind, CallKind::Other);
        assert_eq!(call.target_name(), Some("u"));
    }

    #[test]
    fn completions_name_the_prompt_or_resource_they_complete() {
        let prompt = call_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(prompt.kind, CallKind::Governed);
        assert_eq!(
            prompt.completion_ref,
            Some(CompletionRef::Prompt("p".into()))
        );
        // Policy sees the prompt where it looks for one; no Mcp-Name mirrors it.
        let facts = prompt.request_facts("s", None, None);
        assert_eq!(facts.prompt_name.as_deref(), Some("p"));
        assert_eq!(prompt.target_name(), None);
        let resource = call_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///{path}"},"argument":{"name":"path","value":"a"}}}"#,
        )
        .unwrap();
        let facts = resource.request_facts("s", None, None);
        assert_eq!(facts.resource_uri.as_deref(), Some("file:///{path}"));
        for bad in [
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":"p"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"t"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete"}"#,
        ] {
            let err = call_of(bad).unwrap_err();
            assert!(err.to_string().contains("params"), "{bad}: {err}");
        }
    }

    #[test]
    fn task_requests_name_their_task() {
        for method in TASK_METHODS {
            let call = call_of(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"taskId":"t-1"}}}}"#
            ))
            .unwrap();
            assert_eq!(call.kind, CallKind::Governed, "{method}");
            assert_eq!(
                call.request_facts("s", None, None).task_id.as_deref(),
                Some("t-1")
            );
            let err = call_of(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"taskId":7}}}}"#
            ))
            .unwrap_err();
            assert!(
                err.to_string().contains("`params.taskId`"),
                "{method}: {err}"
            );
        }
        let list = call_of(r#"{"jsonrpc":"2.0","id":1,"method":"tasks/list"}"#).unwrap();
        assert_eq!(list.kind, CallKind::Listing);
    }

    #[test]
    fn listing_and_other_kinds() {
        for m in [
            "tools/list",
            "resources/list",
            "prompts/list",
            "resources/templates/list",
        ] {
            assert_eq!(classify(m, None).unwrap().kind, CallKind::Listing);
        }
        assert_eq!(classify("ping", None).unwrap().kind, CallKind::Other);
        assert_eq!(
            classify("notifications/initialized", None).unwrap().kind,
            CallKind::Other
        );
        assert_eq!(
            classify("sampling/createMessage", Some(&json!({"messages":[]})))
                .unwrap()
                .kind,
            CallKind::Other
        );
    }

    #[test]
    fn initialize_declares_version_and_client() {
        let call = call_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}"#,
        )
        .unwrap();
        assert_eq!(call.kind, CallKind::Initialize);
        assert_eq!(call.protocol_version.as_deref(), Some("2025-11-25"));
        assert_eq!(call.client_info, Some(json!({"name":"curl","version":"0"})));
        assert_eq!(call.client_capabilities, Some(json!({})));
        assert_eq!(
            call.effective_protocol_version(Some("2025-06-18")),
            Some("2025-06-18")
        );
        assert_eq!(call.effective_protocol_version(None), Some("2025-11-25"));
    }

    #[test]
    fn stateless_meta_declares_version_client_and_progress() {
        // As sent by the Python SDK 2.3 in 2026-07-28 mode.
        let call = call_of(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{},"progressToken":4}}}"#,
        )
        .unwrap();
        assert_eq!(call.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(
            call.client_info,
            Some(json!({"name":"mcp","version":"0.1.0"}))
        );
        assert_eq!(call.client_capabilities, Some(json!({})));
        assert_eq!(call.progress_token, Some(json!(4)));
        let err = call_of(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta":1}}"#)
            .unwrap_err();
        assert_eq!(err, MessageError::Params(ParamsError::MetaNotObject));
    }

    #[test]
    fn request_facts_carry_the_call() {
        let call = call_of(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"m":1},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp"}}}}"#,
        )
        .unwrap();
        let facts = call.request_facts("files", None, None);
        assert_eq!(
            serde_json::to_value(&facts).unwrap(),
            json!({"server":"files","method":"tools/call","tool":"echo","arguments":{"m":1},
                   "argumentsBytes":7,
                   "protocolVersion":"2026-07-28","clientInfo":{"name":"mcp"}})
        );
        let facts = call.request_facts("files", Some("s-1"), Some("2025-11-25"));
        assert_eq!(facts.session_id.as_deref(), Some("s-1"));
        assert_eq!(facts.protocol_version.as_deref(), Some("2025-11-25"));
    }

    #[test]
    fn responses_are_not_classified() {
        let (message, call) = parse_call(
            br#"{"result":{"content":[]},"jsonrpc":"2.0","id":4}"#,
            &Limits::default(),
        )
        .unwrap();
        assert!(matches!(message, Message::Response { .. }));
        assert_eq!(call, None);
    }

    #[test]
    fn error_response_carries_the_code_and_message() {
        let err = MessageError::Params(ParamsError::MissingString {
            method: "tools/call".into(),
            member: "name",
        });
        let id = RequestId::Number(5.into());
        let body: Value = serde_json::from_slice(&err.error_response(Some(&id))).unwrap();
        assert_eq!(body["id"], json!(5));
        assert_eq!(body["error"]["code"], json!(-32602));
        assert_eq!(
            body["error"]["message"],
            json!("invalid params: `tools/call` requires `params.name` to be a string")
        );
    }

    proptest! {
        #[test]
        fn parse_message_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_call(&body, &Limits::default());
        }

        #[test]
        fn parse_message_never_panics_on_json_like_text(body in r#"[\[\]{}":,0-9a-z\\ .eE+-]{0,200}"#) {
            let limits = Limits { max_json_depth: 4, ..Limits::default() };
            let _ = parse_call(body.as_bytes(), &limits);
        }

        #[test]
        fn valid_calls_parse_with_any_id_and_name(id in any::<i64>(), name in "\\PC{0,40}") {
            let body = serde_json::to_vec(&json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": name, "arguments": {}}
            })).unwrap();
            let (message, call) = parse_call(&body, &Limits::default()).unwrap();
            prop_assert_eq!(message.id(), Some(&RequestId::Number(id.into())));
            prop_assert_eq!(call.unwrap().tool, Some(name));
        }
    }
}
