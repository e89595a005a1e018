"""MCP authorization as a resource server: RFC 9728 protected-resource metadata for each MCP
route, and 401 answers that point at it (`WWW-Authenticate: Bearer resource_metadata=...`)."""
from __future__ import annotations

import json
import re

import pytest

from harness import http


@pytest.mark.parametrize("server", ["everything", "scripted"])
def test_unauthenticated_call_finds_the_metadata_from_the_401(stack, server):
    status, headers, _ = http("POST", stack.url(server), b"{}", {"content-type": "application/json"})
    assert status == 401
    challenge = headers["www-authenticate"]
    match = re.search(r'resource_metadata="([^"]+)"', challenge)
    assert challenge.startswith("Bearer") and match, challenge
    url = match.group(1)
    assert url == f"http://127.0.0.1:{stack.ports['envoy']}/.well-known/oauth-protected-resource/mcp/{server}"

    status, headers, body = http("GET", url)
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    document = json.loads(body)
    # RFC 9728 §3.3: the resource in the document is the one the client asked about.
    assert document["resource"] == stack.url(server)
    assert document["authorization_servers"] == [f"http://127.0.0.1:{stack.ports['authz']}"]
    assert document["bearer_methods_supported"] == ["header"]


def test_metadata_for_unknown_resources_is_not_served(stack):
    status, _, _ = http("GET", f"http://127.0.0.1:{stack.ports['envoy']}"
                               "/.well-known/oauth-protected-resource/mcp/nowhere")
    assert status == 404
