"""Step-up authorization through real Envoy: a tool that needs a scope the token lacks gets
403 `insufficient_scope` naming the scope (RFC 6750 §3.1, MCP authorization "scope challenge");
a token asked for with that scope then works. `policies/data.json` makes `get-sum` on the
`everything` server need `mcp:compute`.
"""
from __future__ import annotations

import json
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import anyio

from harness import http
from mcp_client import connect
from test_identity import es256_assertion, request_token

INSUFFICIENT_SCOPE = -32088


def call_get_sum(stack, token: str, trace_id: str) -> tuple[int, dict, dict]:
    status, headers, body = http("POST", stack.url("everything"), json.dumps(
        {"jsonrpc": "2.0", "id": 31, "method": "tools/call",
         "params": {"name": "get-sum", "arguments": {"a": 2, "b": 3}}}).encode(),
        {"authorization": f"Bearer {token}", "content-type": "application/json",
         "accept": "application/json, text/event-stream",
         "traceparent": f"00-{trace_id}-{'1f' * 8}-01"})
    if headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
        return status, headers, json.loads(data[-1])
    return status, headers, json.loads(body)


def test_missing_scope_gets_a_403_challenge_then_the_stepped_up_token_works(stack, tmp_path):
    agent = f"step-up-{secrets.token_hex(4)}"
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = tmp_path / "agent.pub.pem"
    public_pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    stack.agent_cli("enroll", "--id", agent, "--scope", "mcp", "--scope", "mcp:compute",
                    "--tool", "everything:get-sum", "--public-key", str(public_pem),
                    "--kid", "k1")
    endpoint = f"{stack.authz_url()}/oauth/token"
    try:
        status, answer = request_token(stack, es256_assertion(key, "k1", agent, endpoint),
                                       scope="mcp")
        assert status == 200, answer
        trace_id = secrets.token_hex(16)
        status, headers, body = call_get_sum(stack, answer["access_token"], trace_id)
        assert status == 403, body
        challenge = headers["www-authenticate"]
        assert challenge.startswith('Bearer error="insufficient_scope"'), challenge
        assert 'scope="mcp:compute"' in challenge
        assert "resource_metadata=" in challenge
        assert body["id"] == 31
        assert body["error"]["code"] == INSUFFICIENT_SCOPE
        assert body["error"]["data"]["requiredScope"] == "mcp:compute"
        decision = next(e["event"] for e in stack.wait_trace(trace_id)
                        if e["event"]["kind"] == "decision")
        assert decision["detail"]["allow"] is False

        # Step up: ask for the scope the challenge named.
        status, answer = request_token(stack, es256_assertion(key, "k1", agent, endpoint),
                                       scope="mcp mcp:compute")
        assert status == 200, answer
        assert answer["scope"] == "mcp mcp:compute"

        async def stepped_up():
            async with connect(stack.url("everything"), answer["access_token"]) as client:
                result = await client.call_tool("get-sum", {"a": 2, "b": 3})
                return result.content[0].text

        assert "5" in anyio.run(stepped_up)
    finally:
        stack.agent_cli("delete", agent, check=False)
