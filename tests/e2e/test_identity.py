"""Agent identity end to end: enrollment with `behavry agent`, OAuth client credentials with a
`private_key_jwt` assertion (RFC 7523) made here, a governed MCP call through Envoy with the issued
token, then disabling the agent (docs/identity.md)."""
from __future__ import annotations

import json
import secrets
import time
import urllib.parse

import anyio
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from mcp import MCPError

from harness import ISSUER, http, wait_until
from mcp_client import connect
from tokens import b64url, decode_part

UNKNOWN_TOOL = -32602
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def es256_assertion(key, kid: str, client_id: str, audience: str, **overrides) -> str:
    """A client assertion (RFC 7523 §3) signed with ES256: the JWS signature is R || S, 32 bytes
    each (RFC 7518 §3.4), not the DER that `cryptography` produces."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now,
              "exp": now + 60, "jti": secrets.token_urlsafe(16)}
    claims.update(overrides)
    header = {"alg": "ES256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def request_token(stack, assertion: str, **extra) -> tuple[int, dict]:
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion, **extra}
    status, headers, body = http("POST", f"{stack.authz_url()}/oauth/token",
                                 urllib.parse.urlencode(form).encode(),
                                 {"Content-Type": "application/x-www-form-urlencoded"})
    assert headers.get("cache-control") == "no-store"
    return status, json.loads(body)


def decide(stack, agent: str, tool: str) -> dict:
    body = json.dumps({"traceId": secrets.token_hex(16), "agent": {"id": agent},
                       "request": {"server": "everything", "method": "tools/call", "tool": tool}})
    status, _, answer = http("POST", f"{stack.authz_url()}/v1/decide", body.encode(),
                             {"Content-Type": "application/json",
                              "Authorization": f"Bearer {stack.proxy_token}"})
    assert status == 200, answer
    return json.loads(answer)


def test_metadata_and_admin_credential(stack):
    status, _, body = http("GET", f"{stack.authz_url()}/.well-known/oauth-authorization-server")
    assert status == 200
    metadata = json.loads(body)
    assert metadata["issuer"] == ISSUER
    assert metadata["token_endpoint"] == f"{stack.authz_url()}/oauth/token"
    assert metadata["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert metadata["token_endpoint_auth_signing_alg_values_supported"] == ["RS256", "ES256"]

    status, headers, _ = http("GET", f"{stack.authz_url()}/admin/v1/agents")
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    status, headers, _ = stack.admin("GET", "/admin/v1/agents", token="not-the-admin-token")
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    # The config's agents were seeded into the registry.
    listed = stack.agent_cli("list")
    assert "demo-agent\tenabled" in listed.stdout


def test_enrolled_agent_gets_a_token_calls_a_tool_and_is_cut_off_when_disabled(stack, tmp_path):
    agent = f"identity-e2e-{secrets.token_hex(4)}"
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = tmp_path / "agent.pub.pem"
    public_pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    token_endpoint = f"{stack.authz_url()}/oauth/token"

    enrolled = stack.agent_cli("enroll", "--id", agent, "--owner", "e2e", "--role", "tester",
                               "--tool", "everything:echo", "--public-key", str(public_pem),
                               "--kid", "e2e-key-1")
    assert f"agent {agent} (enabled)" in enrolled.stdout
    assert "key e2e-key-1 (ES256)" in enrolled.stdout
    try:
        status, answer = request_token(stack, es256_assertion(key, "e2e-key-1", agent, token_endpoint))
        assert status == 200, answer
        assert answer["token_type"] == "Bearer"
        assert answer["expires_in"] == 300
        assert answer["scope"] == "mcp"
        token = answer["access_token"]
        assert decode_part(token, 0)["typ"] == "at+jwt"
        claims = decode_part(token, 1)
        assert (claims["sub"], claims["client_id"], claims["iss"]) == (agent, agent, ISSUER)

        async def allowed_then_denied():
            async with connect(stack.url("everything"), token) as client:
                result = await client.call_tool("echo", {"message": "enrolled hello"})
                assert result.content[0].text == "Echo: enrolled hello"
                with pytest.raises(MCPError) as denied:
                    await client.call_tool("get-sum", {"a": 1, "b": 2})
                return denied.value

        # A tool the agent may not use is reported as unknown.
        denied = anyio.run(allowed_then_denied)
        assert (denied.code, denied.message) == (UNKNOWN_TOOL, "Unknown tool: get-sum")

        # The same assertion cannot be used twice.
        replayed = es256_assertion(key, "e2e-key-1", agent, token_endpoint, jti="once")
        assert request_token(stack, replayed)[0] == 200
        status, answer = request_token(stack, replayed)
        assert (status, answer["error"]) == (401, "invalid_client")

        disabled = stack.agent_cli("disable", agent)
        assert f"agent {agent} (disabled)" in disabled.stdout

        status, answer = request_token(stack, es256_assertion(key, "e2e-key-1", agent, token_endpoint))
        assert (status, answer["error"]) == (401, "invalid_client"), answer
        decision = decide(stack, agent, "echo")
        assert decision["allow"] is False
        assert decision["ruleIds"] == ["behavry.agent.not_enrolled"]

        # The token issued before still verifies at Envoy, but the disabled agent is on the
        # revocation list the filter polls (test_revocation.py): the proxy refuses it with 401.
        def refused():
            status, headers, _ = http("POST", stack.url("everything"), json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                 "params": {"name": "echo", "arguments": {"message": "too late"}}}).encode(),
                {"authorization": f"Bearer {token}", "content-type": "application/json",
                 "accept": "application/json, text/event-stream"})
            return status == 401 and headers.get("www-authenticate", "").startswith("Bearer")

        wait_until("the proxy to refuse the disabled agent's token", refused, timeout=10.0)
    finally:
        stack.agent_cli("delete", agent, check=False)

    missing = stack.agent_cli("get", agent, check=False)
    assert missing.returncode != 0
    assert "agent_not_found" in missing.stderr
