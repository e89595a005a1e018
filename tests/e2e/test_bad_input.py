"""8. Bad input from clients and from upstream servers gets clear errors; the filter never panics."""
from __future__ import annotations

import json

import pytest

from harness import http, sse_events

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
HEADER_MISMATCH = -32020
LIMIT_EXCEEDED = -32083
UPSTREAM_PROTOCOL_ERROR = -32084


def post(stack, token, body: bytes, path: str = "/mcp/scripted", **headers):
    return http("POST", f"http://127.0.0.1:{stack.ports['envoy']}{path}", body, {
        "authorization": f"Bearer {token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream", **headers})


def rpc_call(name: str = "raw", **params) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": name, "arguments": {}, **params}}).encode()


@pytest.mark.parametrize("body,status,code", [
    (b"{not json", 400, PARSE_ERROR),
    (b"\xff\xfe\x00garbage", 400, PARSE_ERROR),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}', 400, INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1}', 400, INVALID_REQUEST),
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]', 400, INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"arguments": {}}}', 400, -32602),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": '
     + b"[" * 200 + b"]" * 200 + b"}}", 400, None),
])
def test_malformed_requests_get_clear_jsonrpc_errors(stack, token, body, status, code):
    before = stack.upstream_requests()
    got_status, headers, response = post(stack, token, body)
    assert got_status == status, response
    error = json.loads(response)["error"]
    if code is not None:
        assert error["code"] == code
    assert error["message"]
    assert error["data"]["traceId"]
    assert stack.upstream_requests() == before, "a bad request reached the upstream"


def test_oversized_body_is_refused(stack, token):
    big = rpc_call("echo", arguments={"message": "x" * 70_000})
    status, _, response = post(stack, token, big)
    assert status == 413
    assert json.loads(response)["error"]["code"] == LIMIT_EXCEEDED


def test_header_body_mismatch_is_400_with_32020(stack, token):
    body = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"message": "x"},
                                  "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                            "io.modelcontextprotocol/clientCapabilities": {}}}}).encode()
    for headers in ({"mcp-method": "tools/list", "mcp-name": "echo"},
                    {"mcp-method": "tools/call", "mcp-name": "get-sum"}):
        status, _, response = post(stack, token, body, **headers,
                                   **{"mcp-protocol-version": "2026-07-28"})
        assert status == 400, response
        error = json.loads(response)["error"]
        assert error["code"] == HEADER_MISMATCH
        assert json.loads(response)["id"] == 3


def test_split_sse_from_upstream_is_reassembled_intact(stack, token):
    direct = http("POST", f"http://127.0.0.1:{stack.ports['scripted']}/raw/split-sse", rpc_call(),
                  {"content-type": "application/json"})
    status, headers, body = post(stack, token, rpc_call(), path="/mcp/raw/split-sse")
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert body == direct[2], "SSE bytes changed on the way through"
    events = sse_events(body)
    assert events[-1]["id"] == 7 and "result" in events[-1]


@pytest.mark.parametrize("route,needle", [
    ("/mcp/raw/bad-json-sse", "JSON-RPC"),
    ("/mcp/raw/huge-sse-event", "limit"),
    ("/mcp/raw/bad-json", "invalid JSON-RPC"),
])
def test_malformed_upstream_answers_become_clear_errors(stack, token, route, needle):
    status, headers, body = post(stack, token, rpc_call(), path=route)
    assert status == 200
    if headers["content-type"].startswith("text/event-stream"):
        messages = sse_events(body)
        error = messages[-1]["error"]
        assert messages[-1]["id"] == 7
    else:
        message = json.loads(body)
        error = message["error"]
        assert message["id"] == 7
    assert error["code"] == UPSTREAM_PROTOCOL_ERROR
    assert needle in error["message"]


def test_non_mcp_paths_are_untouched(stack):
    status, _, _ = http("GET", f"http://127.0.0.1:{stack.ports['envoy']}/not-mcp")
    assert status == 404  # Envoy's own answer: no route, no filter involvement


def test_no_filter_panic_in_envoy_log(stack):
    assert stack.envoy_panics() == []


@pytest.mark.parametrize("name", ["user-agent", "traceparent", "mcp-session-id", "x-other"])
def test_header_values_that_are_not_utf8_do_not_crash_the_filter(stack, token, name):
    """RFC 9110 §5.5 lets a field value carry obs-text (0x80-0xFF). proxy-wasm 0.2 panics when
    asked for such a value as a string; the filter reads header values as bytes. The request is
    answered (as if the header were absent), and the same worker serves the next one."""
    echo = "/mcp/raw/echo-headers"
    status, _, body = post(stack, token, rpc_call(), path=echo, **{name: "caf\xe9-\xff"})
    assert status < 500, body
    status, _, body = post(stack, token, rpc_call(), path=echo)
    assert status == 200, body
    assert not stack.envoy_panics()
