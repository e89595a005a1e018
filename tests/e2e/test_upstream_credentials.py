"""Upstream credentials through real Envoy (docs/identity.md, "Upstream credentials").

Three scripted servers play upstreams that demand their own credential and refuse anything
else: `exchanged` verifies an RS256 at+jwt access token issued for its resource URI (RFC 8707),
`keyed` wants a static key in `x-api-key` (from the encrypted secret file), `vaulted` a static
key as a bearer (from the Vault KV v2 stand-in). Each test asserts on what the upstream actually
received (`/raw/echo-headers`), and that the agent's token and the upstream's credential each stay
on their own side of the proxy.
"""
from __future__ import annotations

import base64
import json

import anyio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from harness import AGENT, ISSUER, KEYED_SECRET_REF, VAULTED_SECRET_REF, http
from mcp_client import connect
from tokens import decode_part

CALL = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                   "params": {"name": "raw", "arguments": {}}}).encode()
POLICY_DENIED = -32080
CREDENTIAL_UNAVAILABLE = -32087


def headers(token: str, **extra) -> dict:
    return {"authorization": f"Bearer {token}", "content-type": "application/json",
            "accept": "application/json, text/event-stream", "traceparent": extra.pop(
                "traceparent", "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"), **extra}


def echoed(stack, server: str, token: str, **extra) -> dict:
    """The request headers `server` received for one governed call through Behavry."""
    status, _, body = http("POST", stack.url(server) + "/raw/echo-headers", CALL,
                           headers(token, **extra))
    assert status == 200, body
    return json.loads(json.loads(body)["result"]["content"][0]["text"])


def verify_rs256(token: str, jwks: dict) -> dict:
    """Check the JWS signature with the JWK of its `kid` (RFC 7515 §5.2), answer the claims."""
    header = decode_part(token, 0)
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    numbers = rsa.RSAPublicNumbers(int.from_bytes(b64(jwk["e"]), "big"),
                                   int.from_bytes(b64(jwk["n"]), "big"))
    signing_input, signature = token.rsplit(".", 1)
    numbers.public_key().verify(b64(signature), signing_input.encode(), padding.PKCS1v15(),
                                hashes.SHA256())
    return decode_part(token, 1)


def b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_exchanged_upstream_gets_a_token_for_itself_and_never_the_agents(stack, token):
    seen = echoed(stack, "exchanged", token)
    upstream_token = seen["authorization"].removeprefix("Bearer ")
    assert upstream_token != token
    assert token not in json.dumps(seen)
    assert "x-behavry-jwt-payload" not in seen
    _, _, jwks = http("GET", f"{stack.authz_url()}/.well-known/jwks.json")
    claims = verify_rs256(upstream_token, json.loads(jwks))
    assert decode_part(upstream_token, 0)["typ"] == "at+jwt"
    # RFC 8707: the audience is the upstream's resource, not the gateway.
    assert claims["aud"] == stack.resource("exchanged")
    assert (claims["iss"], claims["sub"], claims["client_id"]) == (ISSUER, AGENT, AGENT)
    assert claims["scope"] == "mcp"
    assert claims["tenant"] == "e2e"
    assert "act" not in claims
    agent_claims = decode_part(token, 1)
    assert claims["exp"] <= agent_claims["exp"]
    assert claims["jti"] != agent_claims["jti"]


def test_exchanged_upstream_serves_a_real_mcp_session_and_refuses_the_agent_token(stack, token):
    async def session():
        async with connect(stack.url("exchanged"), token) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "echo" in names
            result = await client.call_tool("echo", {"message": "via exchange"})
            return result.content[0].text

    assert anyio.run(session) == "via exchange"
    # The same upstream, asked directly with the agent's own token, refuses it: the swap is what
    # makes the call work, not an open upstream.
    status, _, _ = http("POST", stack.direct_url("exchanged").replace("/mcp", "/raw/echo-headers"),
                        CALL, headers(token))
    assert status == 401
    # And a token minted for the upstream is refused at the gateway (its aud is not ours).
    upstream_token = echoed(stack, "exchanged", token)["authorization"].removeprefix("Bearer ")
    status, _, _ = http("POST", stack.url("everything"), CALL, headers(upstream_token))
    assert status in (401, 403)


def test_static_key_upstreams_see_only_the_secret_from_the_store(stack, token):
    keyed = echoed(stack, "keyed", token)
    assert keyed["x-api-key"] == stack.keyed_key
    assert "authorization" not in keyed
    assert token not in json.dumps(keyed)

    vaulted = echoed(stack, "vaulted", token)
    assert vaulted["authorization"] == f"Bearer {stack.vaulted_key}"
    assert token not in json.dumps(vaulted)

    async def session():
        async with connect(stack.url("keyed"), token) as client:
            result = await client.call_tool("echo", {"message": "with a key"})
            return result.content[0].text

    assert anyio.run(session) == "with a key"


def test_credentials_are_audited_by_reference_only(stack, token):
    trace_id = "5e" * 16
    echoed(stack, "keyed", token, traceparent=f"00-{trace_id}-{'42' * 8}-01")
    events = stack.wait_trace(trace_id)
    outcome = next(e["event"] for e in events if e["event"]["kind"] == "outcome")
    assert outcome["detail"]["upstreamCredential"] == {"kind": "secret",
                                                       "reference": KEYED_SECRET_REF}
    everything = json.dumps(events)
    assert stack.keyed_key not in everything
    assert token not in everything
    for name in ("authz", "envoy", "audit"):
        log = stack.services[name].log_text()
        assert stack.keyed_key not in log, name
        assert stack.vaulted_key not in log, name
    assert VAULTED_SECRET_REF.startswith("vault:")


def test_agent_without_a_grant_gets_no_credential_and_nothing_reaches_the_upstream(stack):
    restricted = stack.mint("restricted-agent")
    before = stack.upstream_requests("keyed")
    # A governed call, and a listing, are denied by policy first (a JSON-RPC error on HTTP
    # 200)...
    status, _, body = http("POST", stack.url("keyed") + "/raw/echo-headers", CALL,
                           headers(restricted))
    assert status == 200, body
    assert json.loads(body)["error"]["code"] == POLICY_DENIED
    listing = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).encode()
    status, _, body = http("POST", stack.url("keyed"), listing, headers(restricted))
    assert status == 200, body
    assert json.loads(body)["error"]["code"] == POLICY_DENIED
    # ...and a method policy does not decide is still forwarded only with a credential, which
    # the sidecar refuses to an agent without a grant for the server: 403, nothing forwarded.
    ping = json.dumps({"jsonrpc": "2.0", "id": 8, "method": "ping"}).encode()
    status, _, body = http("POST", stack.url("keyed"), ping, headers(restricted))
    assert status == 403, body
    error = json.loads(body)["error"]
    assert error["code"] == POLICY_DENIED
    assert json.loads(body)["id"] == 8
    assert stack.upstream_requests("keyed") == before


def test_credential_failure_fails_closed(stack, token):
    """The secret store unreachable: a clear JSON-RPC error, nothing forwarded."""
    vault = stack.services["vault"]
    vault.stop()
    try:
        before = stack.upstream_requests("vaulted")
        # A cached credential may serve for its lifetime: use an agent the cache has not seen.
        other = stack.mint("vault-probe-agent")
        status, _, body = http("POST", stack.url("vaulted") + "/raw/echo-headers", CALL,
                               headers(other))
        assert status == 503, body
        error = json.loads(body)["error"]
        assert error["code"] == CREDENTIAL_UNAVAILABLE
        # The agent learns that there is no credential, not the store's internals.
        assert VAULTED_SECRET_REF not in body.decode() and "vault" not in error["message"].lower()
        assert stack.upstream_requests("vaulted") == before
    finally:
        stack.services["vault"] = stack.vault().start()
        stack._put_vault_secret()
    # Back: the same agent gets its credential.
    assert echoed(stack, "vaulted", other)["authorization"] == f"Bearer {stack.vaulted_key}"
