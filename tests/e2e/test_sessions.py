"""A session is bound to the agent that opened it: the same Mcp-Session-Id with another agent's
token is refused before anything reaches the server."""
from __future__ import annotations

import json

from harness import http

ACCEPT = "application/json, text/event-stream"


def post(stack, token: str, message: dict, session: str | None = None):
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json",
               "accept": ACCEPT}
    if session:
        headers["mcp-session-id"] = session
        headers["mcp-protocol-version"] = "2025-11-25"
    return http("POST", stack.url("scripted"), json.dumps(message).encode(), headers)


def test_session_hijack_with_another_agents_token_is_refused(stack, token):
    status, headers, body = post(stack, token, {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "session-test", "version": "1"}}})
    assert status == 200, body
    session = headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    post(stack, token, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)

    status, _, body = post(stack, token, listing, session)
    assert status == 200, "the owner keeps using its session"

    intruder = stack.mint("conformance-agent")
    before = stack.upstream_requests()
    status, _, body = post(stack, intruder, listing, session)
    assert status == 403
    assert json.loads(body)["error"]["code"] == -32086
    assert stack.upstream_requests() == before, "the hijack attempt reached the server"
