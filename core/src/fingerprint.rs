//! Client fingerprints: who (by its own account and by its HTTP habits) is on the other end of an
//! MCP session, for policy and audit.
//!
//! A [`ClientObservation`] gathers what one request says about its client: `clientInfo` (the
//! `initialize` params of the handshake era, MCP 2025-11-25 basic/lifecycle §Initialization, or
//! `params._meta["io.modelcontextprotocol/clientInfo"]` in MCP 2026-07-28), the protocol version,
//! the top-level keys of the declared capabilities, the `User-Agent` header (RFC 9110 §10.1.5) and
//! which of a fixed set of request headers are present (the "header shape": an HTTP library
//! leaves a recognisable set, e.g. Node's fetch adds `sec-fetch-mode` and `accept-language`).
//! [`fingerprint`] turns it into a bounded, serialisable [`ClientFingerprint`] with a stable
//! short [`ClientFingerprint::id`] and, when the table [`KNOWN_CLIENTS`] recognises it, the
//! client's table name and product name. [`matches_enrolled`] says whether that client is one
//! an agent was enrolled with.
//!
//! Everything here is self-declared by the client: a fingerprint is a signal for policy and
//! audit (an agent that suddenly speaks through another client), never authentication.
//! The table, how its `observed` rows were captured from the real clients and how to re-run
//! the capture are in `docs/fingerprints.md`; the captures are `tests/fingerprints/observed.json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mcp::McpCall;

/// Longest `clientInfo.name` kept, in characters; longer names are truncated.
pub const MAX_CLIENT_NAME_CHARS: usize = 128;
/// Longest `clientInfo.version` kept, in characters.
pub const MAX_CLIENT_VERSION_CHARS: usize = 64;
/// Longest protocol version kept, in characters (real ones are 10: `YYYY-MM-DD`).
pub const MAX_PROTOCOL_VERSION_CHARS: usize = 32;
/// Longest `User-Agent` kept, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;
/// Most capability keys kept (the first ones in sorted order); MCP defines fewer than ten.
pub const MAX_CAPABILITIES: usize = 32;
/// Longest capability key kept, in characters.
pub const MAX_CAPABILITY_CHARS: usize = 64;

/// One header of the fixed header-shape set, and whether its presence says something about the
/// client itself (and so enters [`ClientFingerprint::id`]) or only about the request.
#[derive(Debug, Clone, Copy)]
struct ShapeHeader {
    name: &'static str,
    in_id: bool,
}

/// The headers whose presence makes up [`ClientFingerprint::header_shape`], sorted by name.
///
/// Left out on purpose: `authorization` (deployment configuration, not the client), `host`,
/// `content-length`, `connection` (transport details a proxy may rewrite). Out of the id but kept
/// in the shape: headers that depend on the request rather than the client, so that one client
/// keeps one id across its session: `mcp-session-id` (absent on `initialize`, MCP 2025-11-25
/// basic/transports §Session Management), `mcp-protocol-version` (absent on `initialize`, same
/// section "Protocol Version Header"), `mcp-name` (only on calls that name a target, MCP
/// 2026-07-28 SEP-2243) and `last-event-id` (only on resumption, WHATWG HTML §9.2).
const SHAPE_HEADERS: &[ShapeHeader] = &[
    ShapeHeader {
        name: "accept",
        in_id: true,
    },
    ShapeHeader {
        name: "accept-encoding",
        in_id: true,
    },
    ShapeHeader {
        name: "accept-language",
        in_id: true,
    },
    ShapeHeader {
        name: "baggage",
        in_id: true,
    },
    ShapeHeader {
        name: "cache-control",
        in_id: true,
    },
    ShapeHeader {
        name: "content-type",
        in_id: true,
    },
    ShapeHeader {
        name: "last-event-id",
        in_id: false,
    },
    ShapeHeader {
        name: "mcp-method",
        in_id: true,
    },
    ShapeHeader {
        name: "mcp-name",
        in_id: false,
    },
    ShapeHeader {
        name: "mcp-protocol-version",
        in_id: false,
    },
    ShapeHeader {
        name: "mcp-session-id",
        in_id: false,
    },
    ShapeHeader {
        name: "sec-fetch-mode",
        in_id: true,
    },
    ShapeHeader {
        name: "traceparent",
        in_id: true,
    },
    ShapeHeader {
        name: "tracestate",
        in_id: true,
    },
    ShapeHeader {
        name: "user-agent",
        in_id: true,
    },
    ShapeHeader {
        name: "x-claude-code-session-id",
        in_id: true,
    },
];

/// What one request says about its client. Borrowed: building it copies nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientObservation<'a> {
    /// `clientInfo.name`.
    pub client_name: Option<&'a str>,
    /// `clientInfo.version`.
    pub client_version: Option<&'a str>,
    /// The protocol version in force (the `MCP-Protocol-Version` header when sent, else the body).
    pub protocol_version: Option<&'a str>,
    /// The declared client capabilities (only the top-level keys of an object are used).
    pub capabilities: Option<&'a Value>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// Names of the request headers present, in any case and order, duplicates allowed.
    pub header_names: &'a [&'a str],
}

impl<'a> ClientObservation<'a> {
    /// The observation of a classified request: `clientInfo`, capabilities and protocol version
    /// from `call` (the `MCP-Protocol-Version` header `protocol_header` wins over the body, MCP
    /// 2025-11-25 basic/transports "Protocol Version Header"), plus the request's `User-Agent` and
    /// header names.
    pub fn from_call(
        call: &'a McpCall,
        protocol_header: Option<&'a str>,
        user_agent: Option<&'a str>,
        header_names: &'a [&'a str],
    ) -> Self {
        let info = call.client_info.as_ref();
        let member = |name: &str| info.and_then(|info| info.get(name)).and_then(Value::as_str);
        ClientObservation {
            client_name: member("name"),
            client_version: member("version"),
            protocol_version: call.effective_protocol_version(protocol_header),
            capabilities: call.client_capabilities.as_ref(),
            user_agent,
            header_names,
        }
    }
}

/// A client's fingerprint as policy and audit see it. Every string is bounded (see the `MAX_*`
/// constants), so a hostile client cannot inflate decisions or audit records through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientFingerprint {
    /// Stable short hash (FNV-1a 64, 16 hex digits) of every field below except
    /// `clientVersion`, `known`, `product` and the request-dependent headers of the shape: one
    /// client release after another keeps its id; another library or configuration does not.
    pub id: String,
    /// `clientInfo.name`, truncated.
    pub client_name: Option<String>,
    /// `clientInfo.version`, truncated.
    pub client_version: Option<String>,
    /// Protocol version in force, truncated.
    pub protocol_version: Option<String>,
    /// Top-level capability keys, sorted, at most [`MAX_CAPABILITIES`].
    pub capabilities: Vec<String>,
    /// `User-Agent`, truncated.
    pub user_agent: Option<String>,
    /// Which headers of the fixed set were present (lowercase, sorted).
    pub header_shape: Vec<String>,
    /// Table name ([`KnownClient::name`]) of the recognised client.
    pub known: Option<String>,
    /// Human name of the recognised client, e.g. "Claude Code".
    pub product: Option<String>,
    /// Whether the client declared URL-mode elicitation (`capabilities.elicitation.url`, MCP
    /// 2025-11-25 client/elicitation): only such a client may be sent a URL elicitation. Not
    /// part of `id`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub url_elicitation: bool,
}

/// Where a [`KnownClient`] row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Captured here from the real client by `tests/fingerprints/capture.py`; the capture is in
    /// `tests/fingerprints/observed.json` and a unit test proves the row recognises it.
    Observed,
    /// From public source code or documentation, cited beside the row; not captured here.
    Documented,
}

/// How a `clientInfo.name` or `User-Agent` is matched; ASCII case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// The whole value.
    Exact(&'static str),
    /// The start of the value.
    Prefix(&'static str),
}

impl Pattern {
    fn matches(self, value: &str) -> bool {
        match self {
            Pattern::Exact(p) => value.eq_ignore_ascii_case(p),
            Pattern::Prefix(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
        }
    }
}

/// One row of the known-clients table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownClient {
    /// Stable table name, used in agents' enrolled client lists (e.g. `claude-code`).
    pub name: &'static str,
    /// Human name.
    pub product: &'static str,
    /// `clientInfo.name` values of this client; checked before any user-agent pattern.
    pub client_names: &'static [Pattern],
    /// `User-Agent` values of this client; used when no row claims the `clientInfo.name`.
    pub user_agents: &'static [Pattern],
    /// Where the row comes from.
    pub source: Source,
    /// The table name of a client this one cannot be told apart from on the wire (it sends the
    /// same fingerprint by default), so an agent enrolled with this client is also accepted
    /// when that one is recognised.
    pub same_wire_as: Option<&'static str>,
}

/// The known clients. Order matters only within one kind of match: the first row whose
/// `clientInfo.name` pattern matches wins; failing that, the first row whose `User-Agent`
/// pattern matches. Evidence per row is in the comment above it and in `docs/fingerprints.md`.
pub const KNOWN_CLIENTS: &[KnownClient] = &[
    // Observed: mcp 2.3.0 (`mcp.Client`, legacy and 2026-07-28 modes) sends clientInfo
    // {"name":"mcp","version":"0.1.0"} and `User-Agent: python-httpx2/<v>` (earlier releases use
    // httpx: `python-httpx/<v>`, hence the prefix).
    KnownClient {
        name: "python-mcp",
        product: "MCP Python SDK",
        client_names: &[Pattern::Exact("mcp")],
        user_agents: &[Pattern::Prefix("python-httpx")],
        source: Source::Observed,
        same_wire_as: None,
    },
    // Observed: fastmcp 4.1.6's `Client` runs on the Python SDK and, unless the application
    // passes `client_info`, sends exactly its clientInfo and User-Agent (also reported upstream:
    // PrefectHQ/fastmcp#1367 "Right now it identifies as mcp version 0.1.0"). It has no pattern
    // of its own: it is recognised as `python-mcp`, and enrolling `fastmcp` accepts that.
    KnownClient {
        name: "fastmcp",
        product: "FastMCP (Python)",
        client_names: &[],
        user_agents: &[],
        source: Source::Observed,
        same_wire_as: Some("python-mcp"),
    },
    // Observed: @modelcontextprotocol/inspector-cli 1.0.3 sends clientInfo
    // {"name":"inspector-cli","version":"1.0.3"} (its package name without the scope).
    KnownClient {
        name: "mcp-inspector",
        product: "MCP Inspector",
        client_names: &[Pattern::Exact("inspector-cli")],
        user_agents: &[],
        source: Source::Observed,
        same_wire_as: None,
    },
    // Observed: rmcp 3.11's client with its defaults sends clientInfo {"name":"rmcp",
    // "version":"3.11.0"} (`Implementation::from_build_env`, the rmcp crate's own name), an
    // `initialize` asking for 2026-07-28, and no User-Agent at all.
    KnownClient {
        name: "rmcp",
        product: "rmcp (Rust MCP SDK)",
        client_names: &[Pattern::Exact("rmcp")],
        user_agents: &[],
        source: Source::Observed,
        same_wire_as: None,
    },
    // Documented: Claude Desktop sends clientInfo {"name":"claude-ai","version":"0.1.0"}, shown
    // in its logs in modelcontextprotocol/typescript-sdk#179.
    KnownClient {
        name: "claude-desktop",
        product: "Claude Desktop",
        client_names: &[Pattern::Exact("claude-ai")],
        user_agents: &[],
        source: Source::Documented,
        same_wire_as: None,
    },
    // Observed: Claude Code 2.1.328 (`claude mcp list` health check) sends clientInfo
    // {"name":"claude-code","title":"Claude Code","version":"2.1.328",...}, capabilities
    // roots + elicitation and `User-Agent: claude-code/2.1.328 (sdk-cli)`; it probes
    // `server/discover` (2026-07-28) before `initialize`. Public reports agree: UA
    // `claude-code/<v> (cli)` in TypingMind/typingmind-mcp#25, and an `X-Claude-Code-Session-Id`
    // header in obot-platform/obot#7205 (not sent by the health check).
    KnownClient {
        name: "claude-code",
        product: "Claude Code",
        client_names: &[Pattern::Exact("claude-code")],
        user_agents: &[Pattern::Prefix("claude-code/")],
        source: Source::Observed,
        same_wire_as: None,
    },
    // Documented: clientInfo name "cursor-vscode" (canimcp.dev/client/cursor-vscode, and
    // client tables in many third-party servers).
    KnownClient {
        name: "cursor",
        product: "Cursor",
        client_names: &[Pattern::Exact("cursor-vscode")],
        user_agents: &[],
        source: Source::Documented,
        same_wire_as: None,
    },
    // Documented: VS Code sends clientInfo.name = productService.nameLong, "Visual Studio Code"
    // ("Visual Studio Code - Insiders" for Insiders), microsoft/vscode
    // src/vs/workbench/contrib/mcp/common/mcpServerRequestHandler.ts (`McpServerRequestHandler.create`).
    KnownClient {
        name: "vscode",
        product: "Visual Studio Code",
        client_names: &[
            Pattern::Exact("Visual Studio Code"),
            Pattern::Prefix("Visual Studio Code - "),
        ],
        user_agents: &[],
        source: Source::Documented,
        same_wire_as: None,
    },
    // Documented, weakest: "windsurf-client" appears only in third-party client-detection
    // tables (no Windsurf source or first-party documentation found).
    KnownClient {
        name: "windsurf",
        product: "Windsurf",
        client_names: &[Pattern::Exact("windsurf-client")],
        user_agents: &[],
        source: Source::Documented,
        same_wire_as: None,
    },
    // Observed: @modelcontextprotocol/sdk 1.32.2 has no default clientInfo (each application
    // names itself) and sends Node's fetch default `User-Agent: node`. Last, because any Node.js
    // client that names itself after a row above also sends that User-Agent.
    KnownClient {
        name: "typescript-sdk",
        product: "MCP TypeScript SDK (Node.js)",
        client_names: &[],
        user_agents: &[Pattern::Exact("node")],
        source: Source::Observed,
        same_wire_as: None,
    },
];

/// The table row named `name` (a table name such as `claude-code`, case-sensitive).
pub fn known_client(name: &str) -> Option<&'static KnownClient> {
    KNOWN_CLIENTS.iter().find(|client| client.name == name)
}

/// The row recognising a client by its `clientInfo.name`, else by its `User-Agent`.
pub fn recognise(
    client_name: Option<&str>,
    user_agent: Option<&str>,
) -> Option<&'static KnownClient> {
    let by = |value: Option<&str>, patterns: fn(&KnownClient) -> &'static [Pattern]| {
        value.and_then(|value| {
            KNOWN_CLIENTS
                .iter()
                .find(|client| patterns(client).iter().any(|p| p.matches(value)))
        })
    };
    by(client_name, |c| c.client_names).or_else(|| by(user_agent, |c| c.user_agents))
}

/// The fingerprint of one observation. Never fails and never panics: oversized input is
/// truncated, unexpected shapes (capabilities that are not an object) count as absent.
pub fn fingerprint(observation: &ClientObservation<'_>) -> ClientFingerprint {
    let client_name = observation
        .client_name
        .map(|s| truncate(s, MAX_CLIENT_NAME_CHARS));
    let client_version = observation
        .client_version
        .map(|s| truncate(s, MAX_CLIENT_VERSION_CHARS));
    let protocol_version = observation
        .protocol_version
        .map(|s| truncate(s, MAX_PROTOCOL_VERSION_CHARS));
    let user_agent = observation
        .user_agent
        .map(|s| truncate(s, MAX_USER_AGENT_CHARS));

    let mut capability_keys: Vec<&str> = match observation.capabilities {
        Some(Value::Object(map)) => map.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    capability_keys.sort_unstable();
    capability_keys.dedup();
    let capabilities: Vec<String> = capability_keys
        .into_iter()
        .take(MAX_CAPABILITIES)
        .map(|key| truncate(key, MAX_CAPABILITY_CHARS))
        .collect();

    // SHAPE_HEADERS is sorted, so the shape comes out sorted; field names are case-insensitive
    // (RFC 9110 §5.1).
    let present: Vec<&ShapeHeader> = SHAPE_HEADERS
        .iter()
        .filter(|header| {
            observation
                .header_names
                .iter()
                .any(|name| name.trim().eq_ignore_ascii_case(header.name))
        })
        .collect();

    let mut hash = Fnv1a::new();
    hash.field(b'n', client_name.as_deref());
    hash.field(b'p', protocol_version.as_deref());
    hash.field(b'u', user_agent.as_deref());
    for key in &capabilities {
        hash.field(b'c', Some(key));
    }
    for header in present.iter().filter(|header| header.in_id) {
        hash.field(b'h', Some(header.name));
    }

    let known = recognise(client_name.as_deref(), user_agent.as_deref());
    ClientFingerprint {
        id: format!("{:016x}", hash.finish()),
        client_name,
        client_version,
        protocol_version,
        capabilities,
        user_agent,
        header_shape: present.iter().map(|h| h.name.to_owned()).collect(),
        known: known.map(|client| client.name.to_owned()),
        product: known.map(|client| client.product.to_owned()),
        url_elicitation: observation
            .capabilities
            .and_then(|caps| caps.get("elicitation"))
            .and_then(|elicitation| elicitation.get("url"))
            .is_some_and(Value::is_object),
    }
}

/// Whether the fingerprinted client is one the agent was enrolled with. An empty `enrolled` list
/// allows any client; otherwise the client must be recognised and be one of the enrolled names,
/// or be the client an enrolled one cannot be told apart from ([`KnownClient::same_wire_as`]).
/// An unrecognised client never matches a non-empty list.
pub fn matches_enrolled(fp: &ClientFingerprint, enrolled: &[String]) -> bool {
    if enrolled.is_empty() {
        return true;
    }
    let Some(known) = fp.known.as_deref() else {
        return false;
    };
    enrolled
        .iter()
        .any(|name| name == known || known_client(name).and_then(|c| c.same_wire_as) == Some(known))
}

/// An enrolled client list that names a client the table does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolledClientError {
    /// The name is not a [`KnownClient::name`]; such an entry could never match.
    #[error("unknown client `{name}` in enrolled clients (known: {known})")]
    Unknown { name: String, known: String },
}

/// Checks an enrolled client list at load time, so a typo is refused instead of silently
/// turning every request of the agent into a mismatch.
pub fn validate_enrolled(enrolled: &[String]) -> Result<(), EnrolledClientError> {
    match enrolled.iter().find(|name| known_client(name).is_none()) {
        None => Ok(()),
        Some(name) => Err(EnrolledClientError::Unknown {
            name: truncate(name, MAX_CLIENT_NAME_CHARS),
            known: KNOWN_CLIENTS
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// `s` cut to at most `max` characters (on a character boundary, never inside a UTF-8 sequence).
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s.get(..end).unwrap_or(s).to_owned(),
        None => s.to_owned(),
    }
}

/// FNV-1a, 64 bits (draft-eastlake-fnv §2): tiny, dependency-free and stable across platforms
/// and releases. Not collision-resistant against an adversary; the id only labels fingerprints
/// for grouping, it authenticates nothing.
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        let mut hash = Fnv1a(Self::OFFSET_BASIS);
        // Domain separation: a version tag, so a future change of fields changes every id.
        hash.bytes(b"behavry-client-fingerprint-v1");
        hash
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// A tagged, length-prefixed field, so ("ab","c") and ("a","bc") hash differently and an
    /// absent field differs from an empty one.
    fn field(&mut self, tag: u8, value: Option<&str>) {
        self.bytes(&[tag]);
        match value {
            None => self.bytes(&[0]),
            Some(value) => {
                self.bytes(&[1]);
                self.bytes(&(value.len() as u64).to_le_bytes());
                self.bytes(value.as_bytes());
            }
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn observe<'a>(
        name: Option<&'a str>,
        ua: Option<&'a str>,
        headers: &'a [&'a str],
    ) -> ClientObservation<'a> {
        ClientObservation {
            client_name: name,
            client_version: Some("1.0.0"),
            protocol_version: Some("2025-11-25"),
            capabilities: None,
            user_agent: ua,
            header_names: headers,
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // draft-eastlake-fnv test vectors for FNV-1a 64: "" and "a".
        let mut empty = Fnv1a(Fnv1a::OFFSET_BASIS);
        empty.bytes(b"");
        assert_eq!(empty.finish(), 0xcbf2_9ce4_8422_2325);
        let mut a = Fnv1a(Fnv1a::OFFSET_BASIS);
        a.bytes(b"a");
        assert_eq!(a.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn recognises_by_client_name_before_user_agent() {
        // clientInfo "claude-code" through a Node fetch: the name decides, not `node`.
        let fp = fingerprint(&observe(Some("claude-code"), Some("node"), &[]));
        assert_eq!(fp.known.as_deref(), Some("claude-code"));
        assert_eq!(fp.product.as_deref(), Some("Claude Code"));
        // An application-chosen name through Node fetch: the User-Agent decides.
        let fp = fingerprint(&observe(Some("my-agent"), Some("node"), &[]));
        assert_eq!(fp.known.as_deref(), Some("typescript-sdk"));
        // Nothing known.
        let fp = fingerprint(&observe(Some("my-agent"), Some("curl/8.5.0"), &[]));
        assert_eq!(fp.known, None);
        assert_eq!(fp.product, None);
    }

    #[test]
    fn patterns_are_ascii_case_insensitive_and_prefixes_match_only_the_start() {
        assert_eq!(
            recognise(Some("CLAUDE-CODE"), None).map(|c| c.name),
            Some("claude-code")
        );
        assert_eq!(
            recognise(Some("Visual Studio Code - Insiders"), None).map(|c| c.name),
            Some("vscode")
        );
        assert_eq!(
            recognise(None, Some("claude-code/2.1.204 (cli)")).map(|c| c.name),
            Some("claude-code")
        );
        assert_eq!(recognise(None, Some("x claude-code/2")), None);
        // A prefix longer than the value, or cut inside a multi-byte character, is no match.
        assert_eq!(recognise(None, Some("claude")), None);
        assert_eq!(recognise(None, Some("claude-codé")), None);
        assert_eq!(recognise(Some("mcp-extra"), None), None);
    }

    #[test]
    fn every_table_row_is_reachable_or_explicitly_an_alias() {
        for client in KNOWN_CLIENTS {
            let reachable = !client.client_names.is_empty() || !client.user_agents.is_empty();
            assert!(
                reachable || client.same_wire_as.is_some(),
                "{} can never be recognised",
                client.name
            );
            if let Some(other) = client.same_wire_as {
                assert!(
                    known_client(other).is_some(),
                    "{} aliases unknown {other}",
                    client.name
                );
            }
            // Each clientInfo name pattern recognises this very row (no earlier row shadows it).
            for pattern in client.client_names {
                let (Pattern::Exact(p) | Pattern::Prefix(p)) = *pattern;
                let sample = match pattern {
                    Pattern::Exact(_) => p.to_owned(),
                    Pattern::Prefix(_) => format!("{p}x"),
                };
                assert_eq!(
                    recognise(Some(&sample), None).map(|c| c.name),
                    Some(client.name)
                );
            }
        }
        let mut names: Vec<&str> = KNOWN_CLIENTS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KNOWN_CLIENTS.len(), "duplicate table names");
    }

    #[test]
    fn fields_are_normalised_sorted_and_bounded() {
        let caps = json!({"sampling": {}, "roots": {"listChanged": true}, "elicitation": {}});
        let headers = [
            "User-Agent",
            "ACCEPT",
            "x-forwarded-for",
            "Mcp-Session-Id",
            "accept",
        ];
        let long_name = "é".repeat(MAX_CLIENT_NAME_CHARS + 10);
        let fp = fingerprint(&ClientObservation {
            client_name: Some(&long_name),
            client_version: Some("9.9"),
            protocol_version: Some("2025-11-25"),
            capabilities: Some(&caps),
            user_agent: Some(&"u".repeat(1000)),
            header_names: &headers,
        });
        assert_eq!(fp.capabilities, ["elicitation", "roots", "sampling"]);
        assert_eq!(fp.header_shape, ["accept", "mcp-session-id", "user-agent"]);
        assert_eq!(
            fp.client_name.as_ref().map(|s| s.chars().count()),
            Some(MAX_CLIENT_NAME_CHARS)
        );
        assert_eq!(
            fp.user_agent.as_ref().map(String::len),
            Some(MAX_USER_AGENT_CHARS)
        );

        let many: serde_json::Map<String, Value> = (0..1000)
            .map(|i| (format!("cap{i:04}"), json!({})))
            .collect();
        let many = Value::Object(many);
        let fp = fingerprint(&ClientObservation {
            capabilities: Some(&many),
            ..ClientObservation::default()
        });
        assert_eq!(fp.capabilities.len(), MAX_CAPABILITIES);
        assert_eq!(fp.capabilities.first().map(String::as_str), Some("cap0000"));

        // Capabilities that are not an object count as none.
        let not_object = json!(["roots"]);
        let fp = fingerprint(&ClientObservation {
            capabilities: Some(&not_object),
            ..ClientObservation::default()
        });
        assert!(fp.capabilities.is_empty());
    }

    #[test]
    fn id_ignores_client_version_and_request_dependent_headers_only() {
        let base = observe(
            Some("mcp"),
            Some("python-httpx2/2.16.2"),
            &["accept", "content-type"],
        );
        let id = fingerprint(&base).id;
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

        let newer = ClientObservation {
            client_version: Some("0.2.0"),
            ..base
        };
        assert_eq!(
            fingerprint(&newer).id,
            id,
            "a new client release keeps its id"
        );
        let in_session = ClientObservation {
            header_names: &[
                "accept",
                "content-type",
                "mcp-session-id",
                "mcp-protocol-version",
            ],
            ..base
        };
        assert_eq!(
            fingerprint(&in_session).id,
            id,
            "session headers do not change the id"
        );

        let other_ua = ClientObservation {
            user_agent: Some("node"),
            ..base
        };
        let other_version = ClientObservation {
            protocol_version: Some("2026-07-28"),
            ..base
        };
        let other_shape = ClientObservation {
            header_names: &["accept"],
            ..base
        };
        let caps = json!({"roots": {}});
        let other_caps = ClientObservation {
            capabilities: Some(&caps),
            ..base
        };
        let no_name = ClientObservation {
            client_name: None,
            ..base
        };
        let empty_name = ClientObservation {
            client_name: Some(""),
            ..base
        };
        let ids = [
            other_ua,
            other_version,
            other_shape,
            other_caps,
            no_name,
            empty_name,
        ]
        .iter()
        .map(|o| fingerprint(o).id)
        .collect::<Vec<_>>();
        for other in &ids {
            assert_ne!(other, &id);
        }
        assert_ne!(ids[4], ids[5], "absent and empty name differ");
    }

    #[test]
    fn from_call_reads_client_info_and_prefers_the_protocol_header() {
        let call = McpCall {
            method: "initialize".into(),
            protocol_version: Some("2025-06-18".into()),
            client_info: Some(json!({"name": "claude-ai", "version": "0.1.0"})),
            client_capabilities: Some(json!({"roots": {}})),
            ..McpCall::default()
        };
        let headers = ["content-type"];
        let obs = ClientObservation::from_call(&call, Some("2025-11-25"), None, &headers);
        assert_eq!(obs.client_name, Some("claude-ai"));
        assert_eq!(obs.client_version, Some("0.1.0"));
        assert_eq!(obs.protocol_version, Some("2025-11-25"));
        let fp = fingerprint(&obs);
        assert_eq!(fp.known.as_deref(), Some("claude-desktop"));
        assert_eq!(fp.capabilities, ["roots"]);

        // clientInfo members of the wrong type are absent, not an error.
        let odd = McpCall {
            client_info: Some(json!({"name": 7, "version": ["x"]})),
            ..McpCall::default()
        };
        let obs = ClientObservation::from_call(&odd, None, None, &[]);
        assert_eq!(
            (obs.client_name, obs.client_version, obs.protocol_version),
            (None, None, None)
        );
    }

    #[test]
    fn serialises_in_camel_case() {
        let fp = fingerprint(&observe(Some("rmcp"), None, &["accept"]));
        let value = serde_json::to_value(&fp).unwrap();
        for key in [
            "id",
            "clientName",
            "clientVersion",
            "protocolVersion",
            "capabilities",
            "userAgent",
            "headerShape",
            "known",
            "product",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        let back: ClientFingerprint = serde_json::from_value(value).unwrap();
        assert_eq!(back, fp);
    }

    #[test]
    fn enrolment_empty_allows_all_unknown_never_matches_and_aliases_count() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let claude = fingerprint(&observe(Some("claude-code"), None, &[]));
        let unknown = fingerprint(&observe(Some("my-agent"), Some("curl/8"), &[]));
        let python = fingerprint(&observe(Some("mcp"), None, &[]));

        assert!(matches_enrolled(&claude, &[]));
        assert!(matches_enrolled(&unknown, &[]));
        assert!(matches_enrolled(
            &claude,
            &names(&["cursor", "claude-code"])
        ));
        assert!(!matches_enrolled(&claude, &names(&["cursor"])));
        assert!(!matches_enrolled(&unknown, &names(&["claude-code"])));
        // fastmcp sends the Python SDK's fingerprint: enrolling either accepts it.
        assert!(matches_enrolled(&python, &names(&["fastmcp"])));
        assert!(matches_enrolled(&python, &names(&["python-mcp"])));
        // ...but not the other way round: a fingerprint is never "fastmcp" by itself.
        assert!(!matches_enrolled(&claude, &names(&["fastmcp"])));
    }

    #[test]
    fn validate_enrolled_refuses_unknown_names() {
        assert_eq!(validate_enrolled(&[]), Ok(()));
        assert_eq!(
            validate_enrolled(&["claude-code".into(), "fastmcp".into()]),
            Ok(())
        );
        let err = validate_enrolled(&["claude-code".into(), "Claude Code".into()]).unwrap_err();
        assert!(matches!(&err, EnrolledClientError::Unknown { name, .. } if name == "Claude Code"));
        assert!(err.to_string().contains("claude-code, "), "{err}");
    }

    /// The table against real captures: every run recorded by `tests/fingerprints/capture.py`
    /// is recognised as the client that produced it, and every `observed` row is backed by at
    /// least one such run.
    #[test]
    fn table_recognises_every_observed_capture() {
        let doc: Value =
            serde_json::from_str(include_str!("../../tests/fingerprints/observed.json")).unwrap();
        let runs = doc["runs"].as_array().unwrap();
        let mut backed: Vec<&str> = Vec::new();
        for run in runs {
            let label = run["run"].as_str().unwrap();
            let client = run["client"].as_str().unwrap();
            assert!(
                run.get("error").is_none(),
                "{label} failed when captured: {}",
                run["error"]
            );
            if run.get("skipped").is_some() {
                continue;
            }
            let o = &run["observation"];
            assert!(o.is_object(), "{label} has no observation");
            let headers: Vec<&str> = o["headerNames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap())
                .collect();
            let caps: serde_json::Map<String, Value> = o["capabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| (k.as_str().unwrap().to_owned(), json!({})))
                .collect();
            let caps = Value::Object(caps);
            let fp = fingerprint(&ClientObservation {
                client_name: o["clientName"].as_str(),
                client_version: o["clientVersion"].as_str(),
                protocol_version: o["protocolVersion"].as_str(),
                capabilities: Some(&caps),
                user_agent: o["userAgent"].as_str(),
                header_names: &headers,
            });
            let row = known_client(client).unwrap_or_else(|| panic!("{label}: no row {client}"));
            let expected = row.same_wire_as.unwrap_or(row.name);
            assert_eq!(fp.known.as_deref(), Some(expected), "{label}: {fp:?}");
            assert!(matches_enrolled(&fp, &[client.to_owned()]), "{label}");
            backed.push(client);
        }
        for row in KNOWN_CLIENTS
            .iter()
            .filter(|r| r.source == Source::Observed)
        {
            assert!(
                backed.contains(&row.name),
                "observed row {} has no capture",
                row.name
            );
        }
    }

    proptest! {
        #[test]
        fn any_observation_gives_a_bounded_fingerprint(
            name in proptest::option::of(".{0,300}"),
            version in proptest::option::of(".{0,100}"),
            protocol in proptest::option::of(".{0,60}"),
            ua in proptest::option::of(".{0,400}"),
            caps in proptest::collection::vec(".{0,80}", 0..60),
            headers in proptest::collection::vec("[A-Za-z-]{0,30}|accept|user-agent|mcp-method", 0..40),
        ) {
            let caps = Value::Object(caps.into_iter().map(|k| (k, Value::Null)).collect());
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let fp = fingerprint(&ClientObservation {
                client_name: name.as_deref(),
                client_version: version.as_deref(),
                protocol_version: protocol.as_deref(),
                capabilities: Some(&caps),
                user_agent: ua.as_deref(),
                header_names: &headers,
            });
            prop_assert_eq!(fp.id.len(), 16);
            prop_assert!(fp.client_name.iter().all(|s| s.chars().count() <= MAX_CLIENT_NAME_CHARS));
            prop_assert!(fp.user_agent.iter().all(|s| s.chars().count() <= MAX_USER_AGENT_CHARS));
            prop_assert!(fp.capabilities.len() <= MAX_CAPABILITIES);
            prop_assert!(fp.capabilities.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(fp.header_shape.len() <= SHAPE_HEADERS.len());
            prop_assert!(fp.header_shape.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(fp.known.is_some(), fp.product.is_some());
        }
    }
}
