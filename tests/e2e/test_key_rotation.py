"""Signing key rotation with overlap through real Envoy (docs/identity.md, "Key rotation").

The sidecar publishes its next key ahead of use; `behavry key rotate` makes it the signing key
and retires the old one, which stays in the JWKS until its tokens have expired. Tokens signed
before the rotation keep working after Envoy fetches the JWKS again (the harness sets a 3 s cache),
and tokens signed after it work at once (Envoy already holds the key).
"""
from __future__ import annotations

import json
import time

from harness import http, wait_until
from tokens import decode_part

CALL = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                   "params": {"name": "raw", "arguments": {}}}).encode()


def status_of(stack, token: str) -> int:
    """Status of one governed call (the raw echo route needs no MCP session)."""
    status, _, _ = http("POST", stack.url("raw") + "/echo-headers", CALL, {
        "authorization": f"Bearer {token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream"})
    return status


def jwks_kids(stack) -> list[str]:
    _, _, body = http("GET", f"{stack.authz_url()}/.well-known/jwks.json")
    return [key["kid"] for key in json.loads(body)["keys"]]


def fetches(stack) -> int:
    _, _, body = http("GET", f"http://127.0.0.1:{stack.ports['admin']}/stats?filter=jwks_fetch_success")
    return sum(int(line.rsplit(":", 1)[1]) for line in body.decode().splitlines() if ":" in line)


def test_tokens_of_the_old_and_the_new_key_both_verify_after_rotation(stack):
    before = stack.mint()
    old_kid = decode_part(before, 0)["kid"]
    active, upcoming = jwks_kids(stack)[:2]
    assert old_kid == active
    assert status_of(stack, before) == 200

    rotated = stack.cli("key", "rotate", "--config", str(stack.authz_config))
    assert f"retired {old_kid}" in rotated.stdout
    assert f"active  {upcoming}" in rotated.stdout
    stack.restart("authz")

    after = stack.mint()
    assert decode_part(after, 0)["kid"] == upcoming
    # Envoy had the new signing key before it signed anything.
    assert status_of(stack, after) == 200
    kids = jwks_kids(stack)
    assert kids[0] == upcoming and old_kid in kids and len(kids) == 3

    # After Envoy fetched the rotated JWKS, the token of the retired key still verifies.
    seen = fetches(stack)
    wait_until("Envoy to fetch the rotated JWKS", lambda: fetches(stack) > seen, timeout=30)
    time.sleep(0.5)
    assert status_of(stack, before) == 200
    assert status_of(stack, after) == 200
    # An upstream that loaded the JWKS before the rotation verifies tokens exchanged with the
    # new key: it was published as the next key from the start.
    status, _, body = http("POST", stack.url("exchanged") + "/raw/echo-headers", json.dumps(
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
         "params": {"name": "raw", "arguments": {}}}).encode(), {
        "authorization": f"Bearer {stack.mint('vault-probe-agent')}",
        "content-type": "application/json", "accept": "application/json, text/event-stream"})
    assert status == 200, body
    seen = json.loads(json.loads(body)["result"]["content"][0]["text"])
    assert decode_part(seen["authorization"].removeprefix("Bearer "), 0)["kid"] == upcoming
