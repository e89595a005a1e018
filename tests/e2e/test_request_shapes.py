"""Requests that try to get past the decision by their shape: other HTTP methods, bodies where
MCP has none, paths the filter does not list, and HTTP/2 trailers after the body."""
from __future__ import annotations

import json
import socket

import h2.config
import h2.connection
import h2.events
import pytest

from harness import http

CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "raw", "arguments": {}}}).encode()


def headers(token: str) -> dict:
    return {"authorization": f"Bearer {token}", "content-type": "application/json",
            "accept": "application/json, text/event-stream"}


@pytest.mark.parametrize("method,status", [("PUT", 405), ("PATCH", 405), ("GET", 400), ("DELETE", 400)])
def test_bodies_outside_post_never_reach_the_upstream(stack, token, method, status):
    before = stack.upstream_requests()
    got, _, body = http(method, stack.url("raw") + "/echo-headers", CALL, headers(token))
    assert got == status, body
    assert stack.upstream_requests() == before


def test_unlisted_path_under_mcp_is_refused(stack, token):
    got, _, body = http("POST", f"http://127.0.0.1:{stack.ports['envoy']}/mcp/not-a-server",
                        CALL, headers(token))
    assert got == 404
    assert json.loads(body)["error"]["message"]


def h2_post_with_trailers(port: int, path: str, token: str) -> int:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [(":method", "POST"), (":path", path), (":scheme", "http"),
                               (":authority", f"127.0.0.1:{port}"),
                               *[(k, v) for k, v in headers(token).items()]])
    conn.send_data(stream, CALL)
    conn.send_headers(stream, [("x-trailer", "after-the-body")], end_stream=True)
    return h2_status(sock, conn, stream)


def h2_status(sock, conn, stream: int) -> int | None:
    """Send what is queued, read until the stream's response headers (or a reset: 0), close."""
    sock.sendall(conn.data_to_send())
    status = None
    while status is None:
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                status = int(dict(event.headers)[b":status"])
            if isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                status = 0
        sock.sendall(conn.data_to_send())
    sock.close()
    return status


def test_http2_trailers_cannot_release_an_undecided_call(stack):
    # An agent with no grant on the raw server: were the request released undecided, the
    # upstream would count it.
    token = stack.mint("restricted-agent")
    before = stack.upstream_requests()
    status = h2_post_with_trailers(stack.ports["envoy"], "/mcp/raw/echo-headers", token)
    assert status == 400
    assert stack.upstream_requests() == before


def h2_post(port: int, path: bytes, token: str) -> int:
    """One HTTP/2 POST with a raw `:path` (bytes, so it may hold anything Envoy accepts)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [(b":method", b"POST"), (b":path", path), (b":scheme", b"http"),
                               (b":authority", f"127.0.0.1:{port}".encode()),
                               *[(k.encode(), v.encode()) for k, v in headers(token).items()]])
    conn.send_data(stream, CALL, end_stream=True)
    return h2_status(sock, conn, stream)


def test_a_path_that_is_not_utf8_cannot_skip_the_filter(stack):
    """Envoy's HTTP/2 codec passes bytes >= 0x80 in `:path`; the filter must not read such a
    path as "no route" and let a governed call through undecided. An agent without a grant on
    the raw server: were the call forwarded, the upstream would count it."""
    token = stack.mint("restricted-agent")
    before = stack.upstream_requests()
    status = h2_post(stack.ports["envoy"], b"/mcp/raw/echo-headers?\xff", token)
    assert status in (0, 400), status
    assert stack.upstream_requests() == before
    assert not stack.envoy_panics()


def test_a_token_in_the_query_is_not_accepted(stack, token):
    """RFC 6750 §2.3 query tokens are not taken (from_headers only): the token would otherwise
    travel on to the upstream in the URL."""
    before = stack.upstream_requests()
    got, _, _ = http("POST", stack.url("raw") + f"/echo-headers?access_token={token}", CALL, {
        "content-type": "application/json", "accept": "application/json, text/event-stream"})
    assert got == 401
    assert stack.upstream_requests() == before
