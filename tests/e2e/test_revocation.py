"""Revocation at the proxy (docs/identity.md, "Revocation"): a token that still verifies at Envoy's
`jwt_authn` is refused with 401 (the filter's `invalid_token` answer) once its `jti` is revoked, or once its agent is
disabled or deleted. The filter polls the authz-sidecar's `GET /v1/revocations` every second per
Envoy worker, so each check polls with a bound instead of asserting a delay."""
from __future__ import annotations

import json
import secrets
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness import http, wait_until
from test_identity import es256_assertion, request_token
from tokens import decode_part

# How long the filter may take to pick up a change: one poll period per worker plus slack.
PICKUP_TIMEOUT = 10.0


def rpc(method: str, params: dict | None = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": params or {}}).encode()


TOOL_CALL = rpc("tools/call", {"name": "raw", "arguments": {}})
TOOLS_LIST = rpc("tools/list")


def through_proxy(stack, token: str, body: bytes = TOOL_CALL) -> tuple[int, dict, bytes]:
    return http("POST", stack.url("raw") + "/echo-headers", body, {
        "authorization": f"Bearer {token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream"})


def refused_as_revoked(stack, token: str, body: bytes = TOOL_CALL):
    """The proxy's answer when it refuses the token as revoked (401, a Bearer challenge, the
    filter's JSON-RPC error), else None. The challenge's `error="invalid_token"` is not checked:
    Envoy's `local_reply_config` (envoy/behavry.yaml.tmpl) overwrites the filter's challenge with
    the RFC 9728 `resource_metadata` one."""
    status, headers, answer = through_proxy(stack, token, body)
    if status != 401 or not headers.get("www-authenticate", "").startswith("Bearer"):
        return None
    if "revoked" not in json.loads(answer).get("error", {}).get("message", ""):
        return None
    return status, headers, answer


def polled_list(stack) -> dict:
    status, headers, body = http("GET", f"{stack.authz_url()}/v1/revocations")
    assert status == 200, body
    assert headers.get("cache-control") == "no-store"
    return json.loads(body)


def test_revoked_jti_is_refused_and_other_tokens_of_the_agent_still_work(stack):
    revoked = stack.mint()
    claims = decode_part(revoked, 1)
    status, _, body = through_proxy(stack, revoked)
    assert status == 200, body

    before = polled_list(stack)["version"]
    assert before >= 1
    done = stack.agent_cli("revoke-token", "--jti", claims["jti"],
                           "--expires-at", str(claims["exp"]))
    assert claims["jti"] in done.stdout
    listed = polled_list(stack)
    assert claims["jti"] in listed["tokenIds"]
    assert listed["version"] > before
    assert stack.agent_cli("revocations").stdout.count(claims["jti"]) == 1

    upstream_seen = []

    def refused_before_the_upstream():
        # Each Envoy worker polls on its own: a call may still pass on a worker that has not
        # polled yet. A refused call, though, must never have reached the upstream.
        before = stack.upstream_requests()
        refused = refused_as_revoked(stack, revoked)
        if refused is not None:
            upstream_seen.append(stack.upstream_requests() - before)
        return refused

    wait_until("the proxy to refuse the revoked token", refused_before_the_upstream,
               timeout=PICKUP_TIMEOUT)
    assert upstream_seen == [0]

    fresh = stack.mint()
    assert decode_part(fresh, 1)["jti"] != claims["jti"]
    status, _, body = through_proxy(stack, fresh)
    assert status == 200, body


def test_admin_api_revokes_a_token_and_refuses_bad_requests(stack):
    token = stack.mint(ttl=120)
    claims = decode_part(token, 1)
    status, _, body = stack.admin("POST", "/admin/v1/revocations",
                                  {"tokenId": claims["jti"], "expiresAt": claims["exp"]})
    assert status == 201, body
    entries = json.loads(body)
    assert {"tokenId": claims["jti"], "expiresAt": claims["exp"]}.items() <= \
        next(t for t in entries["tokens"] if t["tokenId"] == claims["jti"]).items()
    wait_until("the proxy to refuse the revoked token",
               lambda: refused_as_revoked(stack, token), timeout=PICKUP_TIMEOUT)

    status, _, body = stack.admin("POST", "/admin/v1/revocations",
                                  {"tokenId": "x", "expiresAt": int(time.time()) - 3600})
    assert status == 400 and json.loads(body)["error"] == "invalid_field", body
    status, _, _ = stack.admin("POST", "/admin/v1/revocations", {"tokenId": "x"},
                               token="not-the-admin-token")
    assert status == 401


def test_disabled_agent_is_refused_even_for_ungoverned_methods_then_deleted(stack, tmp_path):
    agent = f"revocation-e2e-{secrets.token_hex(4)}"
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = tmp_path / "agent.pub.pem"
    public_pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    stack.agent_cli("enroll", "--id", agent, "--tool", "raw:raw", "--public-key", str(public_pem),
                    "--kid", "k1")
    try:
        token_endpoint = f"{stack.authz_url()}/oauth/token"
        status, answer = request_token(stack, es256_assertion(key, "k1", agent, token_endpoint))
        assert status == 200, answer
        token = answer["access_token"]
        status, _, body = through_proxy(stack, token, TOOLS_LIST)
        assert status == 200, body

        stack.agent_cli("disable", agent)
        assert agent in polled_list(stack)["agents"]
        # tools/list is not decided by the sidecar: only the revocation list can stop it.
        wait_until("the proxy to refuse the disabled agent's token",
                   lambda: refused_as_revoked(stack, token, TOOLS_LIST), timeout=PICKUP_TIMEOUT)

        stack.agent_cli("enable", agent)
        assert agent not in polled_list(stack)["agents"]
        wait_until("the proxy to accept the re-enabled agent's token",
                   lambda: through_proxy(stack, token, TOOLS_LIST)[0] == 200,
                   timeout=PICKUP_TIMEOUT)
    finally:
        stack.agent_cli("delete", agent, check=False)

    # Deleted: a tombstone keeps refusing its tokens until they would have expired anyway.
    assert agent in polled_list(stack)["agents"]
    listed = stack.agent_cli("revocations").stdout
    assert f"agent\t{agent}\tdeleted" in listed
    wait_until("the proxy to refuse the deleted agent's token",
               lambda: refused_as_revoked(stack, token, TOOLS_LIST), timeout=PICKUP_TIMEOUT)
