//! Streaming Server-Sent Events codec, following the WHATWG HTML Living Standard §9.2
//! "Server-sent events" (§9.2.5 "Parsing an event stream", §9.2.6 "Interpreting an event stream").
//!
//! MCP Streamable HTTP answers a POST with `text/event-stream` whenever the server wants to send
//! more than one message (progress, server requests, then the result). Envoy hands the filter
//! the body in arbitrary chunks, so [`SseDecoder`] keeps the incomplete tail between chunks and
//! yields complete events only. Decoding does not depend on where the chunks split.
//!
//! Each [`SseEvent`] keeps the exact bytes it was decoded from, so a filter that lets an event
//! through re-emits it unchanged: the concatenated raw bytes of all events plus the pending tail
//! are the input, byte for byte. Only a rewritten or injected event is encoded anew
//! ([`SseEvent::message`]).
//!
//! Rules implemented (WHATWG §9.2.5/§9.2.6):
//! - a UTF-8 byte order mark at the very start of the stream is skipped (once);
//! - lines end in CRLF, LF or CR; a CR that ends a chunk may be the first half of a CRLF, so the
//!   line it ends is processed when the next byte (or the end of the stream) shows which;
//! - a blank line ends the event ("block"); a line starting with `:` is a comment;
//! - `field:value` with one leading space of the value removed; a line without `:` is a field
//!   name with an empty value; unknown fields are ignored;
//! - `data` lines are joined with LF; `event` sets the type (default `message`); `id` sets the
//!   last event id unless the value contains NUL; `retry` is honoured only if all ASCII digits;
//! - a block with no `data` line is not dispatched as a message (its bytes are still reported,
//!   as an [`SseEvent`] whose [`SseEvent::data`] is `None`, so they can be forwarded);
//! - the text is UTF-8, decoded with replacement of invalid sequences.
//!
//! Two departures, both for a proxy's needs: one event larger than the configured limit is an
//! error (memory stays bounded), and an unterminated event at the end of the stream is reported
//! by [`SseDecoder::finish`] instead of being silently discarded.

use crate::jsonrpc::{LIMIT_EXCEEDED, UPSTREAM_PROTOCOL_ERROR};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Errors of the SSE codec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event (or the incomplete tail) is larger than the limit.
    #[error("SSE event exceeds the limit maxSseEventBytes={limit}")]
    EventTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The stream ended inside an event (no terminating blank line).
    #[error("SSE stream ended inside an event ({bytes} bytes without a terminating blank line)")]
    UnterminatedEvent {
        /// Size of the incomplete tail; its bytes are in [`SseDecoder::pending`].
        bytes: usize,
    },
    /// A field value given to [`SseEvent::message`] cannot be encoded.
    #[error("SSE field `{field}` must not contain CR, LF (or NUL for `id`)")]
    InvalidField {
        /// The field name.
        field: &'static str,
    },
}

impl SseError {
    /// JSON-RPC code for an error injected into the stream: the single mapping for this enum.
    /// (HTTP status is not mapped: the response status is already on its way when SSE is read.)
    pub fn json_rpc_code(&self) -> i64 {
        match self {
            SseError::EventTooLarge { .. } => LIMIT_EXCEEDED,
            SseError::UnterminatedEvent { .. } | SseError::InvalidField { .. } => {
                UPSTREAM_PROTOCOL_ERROR
            }
        }
    }
}

/// One block of an event stream: the fields it set and the exact bytes it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    event_type: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    raw: Vec<u8>,
}

impl SseEvent {
    /// The event type: the last `event` field, or `message` when unset or empty.
    pub fn event_type(&self) -> &str {
        match self.event_type.as_deref() {
            None | Some("") => "message",
            Some(t) => t,
        }
    }

    /// The data (lines joined with LF), or `None` when the block had no `data` field and so is
    /// not dispatched as a message (WHATWG §9.2.6, "dispatch the event", step 2).
    pub fn data(&self) -> Option<&str> {
        self.data.as_deref()
    }

    /// Whether a browser would dispatch this block as a message.
    pub fn is_dispatched(&self) -> bool {
        self.data.is_some()
    }

    /// The `id` set by this block, if any (ids persist: see [`SseDecoder::last_event_id`]).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The reconnection time set by this block, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The exact bytes of the block, terminating blank line included.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The exact bytes of the block, by value.
    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }

    /// Builds a new event, e.g. to inject a JSON-RPC error into a stream.
    ///
    /// Line breaks in `data` (CRLF, CR, LF) become separate `data` lines, so the decoded data
    /// has them as LF. `event_type` and `id` cannot contain line breaks, nor `id` a NUL.
    pub fn message(
        event_type: Option<&str>,
        id: Option<&str>,
        data: &str,
    ) -> Result<SseEvent, SseError> {
        let has_break = |s: &str| s.contains(['\r', '\n']);
        if event_type.is_some_and(has_break) {
            return Err(SseError::InvalidField { field: "event" });
        }
        if id.is_some_and(|s| has_break(s) || s.contains('\0')) {
            return Err(SseError::InvalidField { field: "id" });
        }
        Ok(SseEvent::build(event_type, id, data))
    }

    /// Builds a `message` event carrying one JSON-RPC message (e.g. an injected error), as MCP
    /// servers send them: `event: message` then `data: <json>`. Infallible: a line break inside
    /// the JSON (only possible as whitespace) becomes a `data` line break, which decodes to LF,
    /// still whitespace; bytes that are not UTF-8 are replaced.
    pub fn json_message(json: &[u8]) -> SseEvent {
        SseEvent::build(Some("message"), None, &String::from_utf8_lossy(json))
    }

    /// Encodes fields already known to hold no line break (and no NUL in `id`).
    fn build(event_type: Option<&str>, id: Option<&str>, data: &str) -> SseEvent {
        let mut raw = Vec::with_capacity(data.len() + 32);
        if let Some(t) = event_type {
            raw.extend_from_slice(b"event: ");
            raw.extend_from_slice(t.as_bytes());
            raw.push(b'\n');
        }
        if let Some(id) = id {
            raw.extend_from_slice(b"id: ");
            raw.extend_from_slice(id.as_bytes());
            raw.push(b'\n');
        }
        let normalized = data.replace("\r\n", "\n").replace('\r', "\n");
        for line in normalized.split('\n') {
            raw.extend_from_slice(b"data: ");
            raw.extend_from_slice(line.as_bytes());
            raw.push(b'\n');
        }
        raw.push(b'\n');
        SseEvent {
            event_type: event_type.map(str::to_owned),
            data: Some(normalized),
            id: id.map(str::to_owned),
            retry: None,
            raw,
        }
    }
}

/// The bytes to send for an event: unchanged events are re-emitted exactly as received.
pub fn encode(event: &SseEvent) -> &[u8] {
    event.raw()
}

/// Fields accumulated for the block being read.
#[derive(Debug, Default)]
struct BlockFields {
    event_type: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
}

/// Incremental SSE decoder: feed it chunks as they arrive.
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,
    /// Bytes of the current, incomplete block (from its first byte).
    buffer: Vec<u8>,
    /// Start of the first line not yet interpreted.
    line_start: usize,
    /// Bytes in `line_start..scanned` are known to hold no line terminator.
    scanned: usize,
    /// True until the first bytes show whether the stream starts with a BOM.
    at_stream_start: bool,
    block: BlockFields,
    last_event_id: String,
    failed: Option<SseError>,
}

impl SseDecoder {
    /// A decoder refusing any event larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> SseDecoder {
        SseDecoder {
            max_event_bytes,
            buffer: Vec::new(),
            line_start: 0,
            scanned: 0,
            at_stream_start: true,
            block: BlockFields::default(),
            last_event_id: String::new(),
            failed: None,
        }
    }

    /// Bytes held for the incomplete event.
    pub fn pending_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// The bytes held for the incomplete event (after [`finish`](Self::finish) failed with
    /// [`SseError::UnterminatedEvent`], the unterminated tail).
    pub fn pending(&self) -> &[u8] {
        &self.buffer
    }

    /// The stream's last event id (WHATWG: it persists across events until an `id` changes it).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Feeds one chunk; returns the events it completed. After an error, every call returns it.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.buffer.extend_from_slice(chunk);
        let result = self.decode_available(false);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// Ends the stream. A final CR is taken as a line end, which may complete one last event.
    /// Bytes left after that are an event without its terminating blank line:
    /// [`SseError::UnterminatedEvent`], with the bytes kept in [`pending`](Self::pending) so the
    /// caller decides whether to forward or drop them.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let mut events = self.decode_available(true)?;
        if !self.buffer.is_empty() {
            let err = SseError::UnterminatedEvent {
                bytes: self.buffer.len(),
            };
            self.failed = Some(err.clone());
            return Err(err);
        }
        // At most one event can complete at the end: the one whose final CR was waiting.
        Ok(events.pop())
    }

    fn decode_available(&mut self, at_end: bool) -> Result<Vec<SseEvent>, SseError> {
        if self.at_stream_start {
            if !at_end && self.buffer.len() < BOM.len() && BOM.starts_with(&self.buffer) {
                // Could still become a BOM: wait for more bytes.
                return Ok(Vec::new());
            }
            self.at_stream_start = false;
            if self.buffer.starts_with(BOM) {
                self.line_start = BOM.len();
                self.scanned = BOM.len();
            }
        }
        let mut events = Vec::new();
        let mut block_start = 0;
        loop {
            let Some(offset) = self
                .buffer
                .get(self.scanned..)
                .and_then(|rest| rest.iter().position(|&b| b == b'\n' || b == b'\r'))
            else {
                self.scanned = self.buffer.len();
                break;
            };
            let line_end = self.scanned + offset;
            let next = match self.buffer.get(line_end) {
                Some(b'\r') => match self.buffer.get(line_end + 1) {
                    Some(b'\n') => line_end + 2,
                    Some(_) => line_end + 1,
                    // A CR ending the input may be half of a CRLF: decide with the next byte.
                    None if at_end => line_end + 1,
                    None => {
                        self.scanned = line_end;
                        break;
                    }
                },
                _ => line_end + 1,
            };
            let line_start = self.line_start;
            let is_blank = line_start == line_end;
            if let Some(line) = self.buffer.get(line_start..line_end) {
                let line = String::from_utf8_lossy(line).into_owned();
                self.interpret_line(&line);
            }
            self.line_start = next;
            self.scanned = next;
            if is_blank {
                if next - block_start > self.max_event_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_event_bytes,
                    });
                }
                let raw = self
                    .buffer
                    .get(block_start..next)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                let fields = std::mem::take(&mut self.block);
                events.push(SseEvent {
                    event_type: fields.event_type,
                    data: fields.data.map(|mut d| {
                        // The data buffer gets an LF after each line; the last one is removed.
                        d.pop();
                        d
                    }),
                    id: fields.id,
                    retry: fields.retry,
                    raw,
                });
                block_start = next;
            }
        }
        // Drop the completed blocks' bytes once per call, not once per event.
        self.buffer.drain(..block_start);
        self.line_start -= block_start;
        self.scanned -= block_start;
        if self.buffer.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(events)
    }

    /// WHATWG §9.2.6: interpret one line (without its terminator).
    fn interpret_line(&mut self, line: &str) {
        if line.is_empty() || line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.block.event_type = Some(value.to_owned()),
            "data" => {
                let data = self.block.data.get_or_insert_with(String::new);
                data.push_str(value);
                data.push('\n');
            }
            // An id containing NUL is ignored entirely (WHATWG §9.2.6).
            "id" if !value.contains('\0') => {
                value.clone_into(&mut self.last_event_id);
                self.block.id = Some(value.to_owned());
            }
            // Only all-digit values count; one larger than u64 milliseconds is as unusable.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    self.block.retry = Some(ms);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BIG: usize = 1 << 20;

    /// Decodes `input` split at `cuts`; returns events (finish's included), finish's error, and
    /// the bytes left pending.
    fn decode_split(
        input: &[u8],
        cuts: &[usize],
        limit: usize,
    ) -> (Vec<SseEvent>, Result<(), SseError>, Vec<u8>) {
        let mut decoder = SseDecoder::new(limit);
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let cut = cut.clamp(start, input.len());
            match decoder.feed(&input[start..cut]) {
                Ok(mut e) => events.append(&mut e),
                Err(err) => return (events, Err(err), decoder.pending().to_vec()),
            }
            start = cut;
        }
        let end = match decoder.finish() {
            Ok(last) => {
                events.extend(last);
                Ok(())
            }
            Err(err) => Err(err),
        };
        (events, end, decoder.pending().to_vec())
    }

    fn decode(input: &[u8]) -> Vec<SseEvent> {
        let (events, end, _) = decode_split(input, &[], BIG);
        end.unwrap();
        events
    }

    #[test]
    fn decodes_the_mcp_reference_server_stream() {
        // As answered by @modelcontextprotocol/server-everything: a priming event with empty
        // data, then messages.
        let input = b"id: 18c1\ndata: \n\nevent: message\nid: a5c6\ndata: {\"method\":\"notifications/progress\"}\n\nevent: message\nid: 1b6a\ndata: {\"result\":{},\"jsonrpc\":\"2.0\",\"id\":4}\n\n";
        let events = decode(input);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].data(), Some(""));
        assert_eq!(events[0].id(), Some("18c1"));
        assert_eq!(events[0].event_type(), "message");
        assert_eq!(
            events[1].data(),
            Some("{\"method\":\"notifications/progress\"}")
        );
        assert_eq!(events[2].id(), Some("1b6a"));
        let raw: Vec<u8> = events.iter().flat_map(|e| e.raw().to_vec()).collect();
        assert_eq!(raw, input);
    }

    #[test]
    fn line_endings_crlf_lf_cr() {
        for input in [
            &b"data: a\r\ndata: b\r\n\r\n"[..],
            b"data: a\ndata: b\n\n",
            b"data: a\rdata: b\r\r",
            b"data: a\r\ndata: b\n\r",
        ] {
            let events = decode(input);
            assert_eq!(events.len(), 1, "{input:?}");
            assert_eq!(events[0].data(), Some("a\nb"));
            assert_eq!(events[0].raw(), input);
        }
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_end() {
        let input = b"data: x\r\n\r\ndata: y\r\n\r\n";
        for cut in 0..input.len() {
            let (events, end, _) = decode_split(input, &[cut], BIG);
            end.unwrap();
            assert_eq!(events.len(), 2, "cut {cut}");
            assert_eq!(events[0].raw(), b"data: x\r\n\r\n");
            assert_eq!(events[1].data(), Some("y"));
        }
    }

    #[test]
    fn waiting_cr_is_resolved_at_end_of_stream() {
        let mut decoder = SseDecoder::new(BIG);
        assert_eq!(decoder.feed(b"data: z\r\r").unwrap(), vec![]);
        assert_eq!(decoder.pending_bytes(), 9);
        let last = decoder.finish().unwrap().unwrap();
        assert_eq!(last.data(), Some("z"));
        assert_eq!(decoder.pending_bytes(), 0);
    }

    #[test]
    fn fields_comments_and_defaults() {
        let input = b": keep-alive\nevent: custom\nid: 7\nretry: 1500\nunknown: x\ndata\ndata:  two spaces\n\n";
        let events = decode(input);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.event_type(), "custom");
        assert_eq!(e.id(), Some("7"));
        assert_eq!(e.retry(), Some(1500));
        // `data` without a colon is an empty line of data; only one leading space is removed.
        assert_eq!(e.data(), Some("\n two spaces"));
    }

    #[test]
    fn blocks_without_data_are_reported_but_not_dispatched() {
        let mut decoder = SseDecoder::new(BIG);
        let events = decoder
            .feed(b": comment\n\nid: 5\n\nretry: x\nevent: e\n\n\n")
            .unwrap();
        assert_eq!(events.len(), 4);
        assert!(events.iter().all(|e| !e.is_dispatched()));
        assert_eq!(events[3].raw(), b"\n");
        assert_eq!(events[2].retry(), None, "non-digit retry is ignored");
        // The last event id persists across blocks.
        assert_eq!(decoder.last_event_id(), "5");
        let next = decoder.feed(b"data: 1\n\n").unwrap();
        assert_eq!(next[0].id(), None);
        assert_eq!(decoder.last_event_id(), "5");
    }

    #[test]
    fn id_with_nul_is_ignored() {
        let mut decoder = SseDecoder::new(BIG);
        let events = decoder.feed(b"id: 1\n\nid: a\0b\ndata: x\n\n").unwrap();
        assert_eq!(events[1].id(), None);
        assert_eq!(decoder.last_event_id(), "1");
    }

    #[test]
    fn bom_is_skipped_once_even_when_split() {
        let input = b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n";
        for cut in 0..4 {
            let (events, end, _) = decode_split(input, &[cut], BIG);
            end.unwrap();
            assert_eq!(events[0].data(), Some("a"));
            assert_eq!(events[0].raw(), b"\xEF\xBB\xBFdata: a\n\n");
            // A second BOM is part of a field name, so that block has no data.
            assert_eq!(events[1].data(), None);
        }
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let events = decode(b"data: a\xffb\n\n");
        assert_eq!(events[0].data(), Some("a\u{FFFD}b"));
    }

    #[test]
    fn oversized_event_is_an_error_in_any_split() {
        let input = b"data: 0123456789\n\n";
        let (_, end, _) = decode_split(input, &[], 10);
        assert_eq!(end, Err(SseError::EventTooLarge { limit: 10 }));
        let (_, end, _) = decode_split(input, &[3, 5, 12], 10);
        assert_eq!(end, Err(SseError::EventTooLarge { limit: 10 }));
        // Exactly at the limit is fine.
        let (events, end, _) = decode_split(input, &[4], input.len());
        end.unwrap();
        assert_eq!(events.len(), 1);
        // The error sticks.
        let mut decoder = SseDecoder::new(4);
        assert!(decoder.feed(b"data: long").is_err());
        assert_eq!(
            decoder.feed(b"\n\n"),
            Err(SseError::EventTooLarge { limit: 4 })
        );
        assert_eq!(
            SseError::EventTooLarge { limit: 4 }.json_rpc_code(),
            LIMIT_EXCEEDED
        );
    }

    #[test]
    fn unterminated_tail_is_reported_with_its_bytes() {
        let mut decoder = SseDecoder::new(BIG);
        let events = decoder.feed(b"data: a\n\ndata: partial\n").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            decoder.finish(),
            Err(SseError::UnterminatedEvent { bytes: 14 })
        );
        assert_eq!(decoder.pending(), b"data: partial\n");
        assert_eq!(
            SseError::UnterminatedEvent { bytes: 1 }.json_rpc_code(),
            UPSTREAM_PROTOCOL_ERROR
        );
    }

    #[test]
    fn built_messages_decode_to_themselves() {
        let event = SseEvent::message(
            Some("message"),
            Some("err-1"),
            r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32080,"message":"denied"}}"#,
        )
        .unwrap();
        assert_eq!(
            encode(&event),
            b"event: message\nid: err-1\ndata: {\"jsonrpc\":\"2.0\",\"id\":4,\"error\":{\"code\":-32080,\"message\":\"denied\"}}\n\n"
        );
        assert_eq!(decode(encode(&event)), vec![event]);

        let multi = SseEvent::message(None, None, " a\nb\r\nc\rd").unwrap();
        let decoded = decode(multi.raw());
        assert_eq!(decoded[0].data(), Some(" a\nb\nc\nd"));
        assert_eq!(decoded, vec![multi]);

        let injected = SseEvent::json_message(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32084,"message":"x"}}"#,
        );
        assert_eq!(
            injected.raw(),
            b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32084,\"message\":\"x\"}}\n\n"
        );
        assert_eq!(decode(injected.raw()), vec![injected]);
        let pretty = SseEvent::json_message(b"{\r\n  \"a\": 1\n}");
        let value: serde_json::Value =
            serde_json::from_str(decode(pretty.raw())[0].data().unwrap()).unwrap();
        assert_eq!(value, serde_json::json!({"a": 1}));

        assert_eq!(
            SseEvent::message(Some("a\nb"), None, "x"),
            Err(SseError::InvalidField { field: "event" })
        );
        assert_eq!(
            SseEvent::message(None, Some("a\0"), "x"),
            Err(SseError::InvalidField { field: "id" })
        );
    }

    /// One line of a generated stream, without its terminator.
    fn line() -> impl Strategy<Value = String> {
        let value = "[a-z0-9 :{}\"é\u{0}]{0,12}";
        prop_oneof![
            value.prop_map(|v| format!("data:{v}")),
            value.prop_map(|v| format!("data: {v}")),
            value.prop_map(|v| format!("event: {v}")),
            value.prop_map(|v| format!("id: {v}")),
            "[0-9]{1,6}".prop_map(|v| format!("retry: {v}")),
            value.prop_map(|v| format!(":{v}")),
            Just("data".to_owned()),
            value.prop_map(|v| format!("other: {v}")),
            Just(String::new()),
        ]
    }

    fn stream() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<bool>(),
            proptest::collection::vec((line(), prop_oneof!["\n", "\r", "\r\n"]), 0..24),
            "[a-z: ]{0,6}",
        )
            .prop_map(|(bom, lines, tail)| {
                let mut out = Vec::new();
                if bom {
                    out.extend_from_slice(BOM);
                }
                for (line, end) in lines {
                    out.extend_from_slice(line.as_bytes());
                    out.extend_from_slice(end.as_bytes());
                }
                out.extend_from_slice(tail.as_bytes());
                out
            })
    }

    fn cuts() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(0usize..400, 0..12).prop_map(|mut v| {
            v.sort_unstable();
            v
        })
    }

    proptest! {
        #[test]
        fn any_split_decodes_like_one_chunk(input in stream(), cuts in cuts()) {
            let whole = decode_split(&input, &[], BIG);
            let split = decode_split(&input, &cuts, BIG);
            prop_assert_eq!(&whole, &split);
            let (events, _, pending) = whole;
            let mut raw: Vec<u8> = events.iter().flat_map(|e| e.raw().to_vec()).collect();
            raw.extend_from_slice(&pending);
            prop_assert_eq!(raw, input);
        }

        #[test]
        fn one_byte_at_a_time_decodes_like_one_chunk(input in stream()) {
            let every_byte: Vec<usize> = (1..input.len()).collect();
            prop_assert_eq!(decode_split(&input, &[], BIG), decode_split(&input, &every_byte, BIG));
        }

        #[test]
        fn arbitrary_bytes_split_anywhere(input in proptest::collection::vec(any::<u8>(), 0..300), cuts in cuts()) {
            let whole = decode_split(&input, &[], BIG);
            prop_assert_eq!(&whole, &decode_split(&input, &cuts, BIG));
            let (events, _, pending) = whole;
            let mut raw: Vec<u8> = events.iter().flat_map(|e| e.raw().to_vec()).collect();
            raw.extend_from_slice(&pending);
            prop_assert_eq!(raw, input);
        }

        #[test]
        fn limit_errors_do_not_depend_on_splits(input in stream(), cuts in cuts(), limit in 1usize..64) {
            let whole = decode_split(&input, &[], limit);
            let split = decode_split(&input, &cuts, limit);
            prop_assert_eq!(whole.1.is_err(), split.1.is_err());
            if whole.1.is_ok() {
                prop_assert_eq!(whole, split);
            }
        }

        #[test]
        fn built_messages_round_trip(data in "[^\r]{0,80}", id in proptest::option::of("[a-z0-9-]{0,10}")) {
            let event = SseEvent::message(Some("message"), id.as_deref(), &data).unwrap();
            prop_assert_eq!(decode(event.raw()), vec![event]);
        }
    }
}
