"""Token exchange (RFC 8693) at the real token endpoint, and the exchanged tokens at real Envoy.

`orchestrator` lets helper-1..3 act for it (`may_act`); the harness caps chains at two actors.
A delegated token works at the gateway, its chain reaches the decision, every audit event and the
token the upstream receives; every escalation is refused with the RFC's error code. A Kubernetes
service-account token signed by the test cluster's key is exchanged for its agent's token.
"""
from __future__ import annotations

import json
import secrets
import time
import urllib.parse

import anyio
import pytest

import tokens
from harness import ISSUER, K8S_ISSUER, K8S_KID, http
from mcp_client import connect

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
JWT = "urn:ietf:params:oauth:token-type:jwt"


def exchange(stack, subject: str, actor: str | None = None, **extra) -> tuple[int, dict]:
    form = {"grant_type": GRANT, "subject_token": subject,
            "subject_token_type": extra.pop("subject_token_type", ACCESS_TOKEN), **extra}
    if actor is not None:
        form["actor_token"] = actor
        form["actor_token_type"] = ACCESS_TOKEN
    status, headers, body = http("POST", f"{stack.authz_url()}/oauth/token",
                                 urllib.parse.urlencode(form).encode(),
                                 {"Content-Type": "application/x-www-form-urlencoded"})
    assert headers.get("cache-control") == "no-store"
    return status, json.loads(body)


def call_echo_headers(stack, server: str, token: str, trace_id: str) -> tuple[int, dict]:
    status, _, body = http("POST", stack.url(server) + "/raw/echo-headers", json.dumps(
        {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
         "params": {"name": "raw", "arguments": {}}}).encode(), {
        "authorization": f"Bearer {token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "traceparent": f"00-{trace_id}-{'2a' * 8}-01"})
    if status != 200:
        try:
            return status, json.loads(body)
        except ValueError:  # Envoy's jwt_authn answers in plain text
            return status, {"text": body.decode(errors="replace")}
    return status, json.loads(json.loads(body)["result"]["content"][0]["text"])


def test_a_helper_acts_for_the_orchestrator_end_to_end(stack):
    orchestrator, helper = stack.mint("orchestrator"), stack.mint("helper-1")
    status, answer = exchange(stack, orchestrator, helper)
    assert status == 200, answer
    assert answer["issued_token_type"] == ACCESS_TOKEN
    assert answer["token_type"] == "Bearer"
    delegated = answer["access_token"]
    claims = tokens.decode_part(delegated, 1)
    assert (claims["sub"], claims["client_id"], claims["aud"]) == ("orchestrator", "helper-1",
                                                                   stack.audience)
    assert claims["act"] == {"sub": "helper-1"}
    assert claims["exp"] <= tokens.decode_part(orchestrator, 1)["exp"]

    # The delegated token works at the gateway; the upstream gets a token exchanged for it that
    # carries the same chain, and the decision and every audit event name the actor.
    trace_id = secrets.token_hex(16)
    status, seen = call_echo_headers(stack, "exchanged", delegated, trace_id)
    assert status == 200, seen
    upstream = tokens.decode_part(seen["authorization"].removeprefix("Bearer "), 1)
    assert (upstream["sub"], upstream["act"], upstream["client_id"]) == (
        "orchestrator", {"sub": "helper-1"}, "helper-1")
    assert upstream["aud"] == stack.resource("exchanged")
    events = stack.wait_trace(trace_id)
    assert {e["event"]["kind"] for e in events} == {"intent", "decision", "outcome"}
    for event in events:
        assert event["event"]["agent"] == "orchestrator"
        assert event["event"]["delegation"] == ["helper-1"]

    # A second level nests the chain, current actor outermost (RFC 8693 §4.1).
    status, answer = exchange(stack, delegated, stack.mint("helper-2"))
    assert status == 200, answer
    nested = tokens.decode_part(answer["access_token"], 1)
    assert nested["act"] == {"sub": "helper-2", "act": {"sub": "helper-1"}}
    trace_id = secrets.token_hex(16)
    status, _ = call_echo_headers(stack, "exchanged", answer["access_token"], trace_id)
    assert status == 200
    assert stack.wait_trace(trace_id)[0]["event"]["delegation"] == ["helper-2", "helper-1"]

    # Chains are capped (two actors here): a third is refused.
    status, refused = exchange(stack, answer["access_token"], stack.mint("helper-3"))
    assert (status, refused["error"]) == (400, "invalid_request"), refused
    assert "max_delegation_depth" in refused["error_description"]


def test_an_mcp_endpoint_of_the_gateway_as_resource_gets_a_gateway_token(stack):
    """An MCP client asks for the URI of the server it connects to (RFC 8707, MCP
    authorization); every route lies below the gateway's resource URI, which is the `aud`."""
    status, answer = exchange(stack, stack.mint("orchestrator"), resource=stack.url("everything"))
    assert status == 200, answer
    assert tokens.decode_part(answer["access_token"], 1)["aud"] == stack.audience
    status, refused = exchange(stack, stack.mint("orchestrator"),
                               resource=stack.audience + "x/everything")
    assert (status, refused["error"]) == (400, "invalid_target")


def test_exchange_to_an_upstream_resource_narrows_the_audience(stack):
    status, answer = exchange(stack, stack.mint("orchestrator"),
                              resource=stack.resource("exchanged"))
    assert status == 200, answer
    claims = tokens.decode_part(answer["access_token"], 1)
    assert claims["aud"] == stack.resource("exchanged")
    # A token for the upstream is not a gateway token (RFC 8707): Envoy refuses it...
    status, _ = call_echo_headers(stack, "everything", answer["access_token"], secrets.token_hex(16))
    assert status in (401, 403)
    # ...and cannot be exchanged again.
    status, refused = exchange(stack, answer["access_token"])
    assert (status, refused["error"]) == (400, "invalid_request")


def expired_token(stack, agent: str) -> str:
    key = tokens.load_key(stack.signing_key_path())
    header = tokens.decode_part(stack.mint(agent), 0)
    now = int(time.time())
    return tokens.sign(key, header, tokens.claims(agent, ISSUER, stack.audience, iat=now - 3600,
                                                  nbf=now - 3600, exp=now - 600))


@pytest.mark.parametrize("case,error", [
    # The helper presents itself as subject and the orchestrator as actor: the helper's
    # enrollment lets nobody act for it (may_act, RFC 8693 §4.4).
    ("swap", "invalid_request"),
    ("actor_without_may_act", "invalid_request"),
    ("audience_escalation", "invalid_target"),
    ("upstream_not_granted", "invalid_target"),
    ("scope_escalation", "invalid_scope"),
    ("expired_subject", "invalid_request"),
    ("missing_actor_token_type", "invalid_request"),
    ("forged_subject", "invalid_request"),
])
def test_escalations_are_refused(stack, case, error):
    orchestrator, helper = stack.mint("orchestrator"), stack.mint("helper-1")
    if case == "swap":
        status, answer = exchange(stack, helper, orchestrator)
    elif case == "actor_without_may_act":
        status, answer = exchange(stack, orchestrator, stack.mint("demo-agent"))
    elif case == "audience_escalation":
        status, answer = exchange(stack, orchestrator, resource="https://elsewhere.example/mcp")
    elif case == "upstream_not_granted":
        status, answer = exchange(stack, stack.mint("helper-1"), resource=stack.resource("keyed"))
    elif case == "scope_escalation":
        status, answer = exchange(stack, orchestrator, scope="mcp admin")
    elif case == "expired_subject":
        status, answer = exchange(stack, expired_token(stack, "orchestrator"))
    elif case == "missing_actor_token_type":
        status, answer = exchange(stack, orchestrator, actor_token=helper)
    else:
        status, answer = exchange(stack, tokens.sign(tokens.new_key(),
                                                     tokens.decode_part(orchestrator, 0),
                                                     tokens.decode_part(orchestrator, 1)))
    assert (status, answer["error"]) == (400, error), answer
    assert orchestrator not in json.dumps(answer)


def test_an_exchange_without_actor_keeps_the_chain(stack):
    status, answer = exchange(stack, stack.mint("orchestrator"), stack.mint("helper-1"))
    assert status == 200, answer
    # Re-exchanging the delegated token alone (to narrow it) must not strip `act`.
    status, narrowed = exchange(stack, answer["access_token"], scope="mcp")
    assert status == 200, narrowed
    assert tokens.decode_part(narrowed["access_token"], 1)["act"] == {"sub": "helper-1"}


def test_a_disabled_agent_cannot_exchange(stack):
    token = stack.mint("helper-3")
    stack.agent_cli("disable", "helper-3")
    try:
        status, answer = exchange(stack, stack.mint("orchestrator"), token)
        assert (status, answer["error"]) == (400, "invalid_request"), answer
    finally:
        stack.agent_cli("enable", "helper-3")


def service_account_token(stack, sub: str, key=None, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": K8S_ISSUER, "sub": sub, "aud": ["behavry"], "iat": now, "nbf": now,
              "exp": now + 600, "kubernetes.io": {"namespace": "agents",
                                                  "serviceaccount": {"name": "pod-agent"}}}
    claims.update(overrides)
    return tokens.sign(key or stack.k8s_key, {"alg": "RS256", "kid": K8S_KID, "typ": "JWT"}, claims)


def test_a_pod_service_account_token_becomes_its_agents_token(stack):
    sa = "system:serviceaccount:agents:pod-agent"
    status, answer = exchange(stack, service_account_token(stack, sa), subject_token_type=JWT)
    assert status == 200, answer
    claims = tokens.decode_part(answer["access_token"], 1)
    assert (claims["sub"], claims["aud"], claims["iss"]) == ("pod-agent", stack.audience, ISSUER)
    assert "act" not in claims

    async def call():
        async with connect(stack.url("everything"), answer["access_token"]) as client:
            result = await client.call_tool("echo", {"message": "from a pod"})
            return result.content[0].text

    assert anyio.run(call) == "Echo: from a pod"

    for bad in (service_account_token(stack, sa, key=tokens.new_key()),
                service_account_token(stack, sa, aud=["someone-else"]),
                service_account_token(stack, sa, iss="https://other-cluster"),
                service_account_token(stack, "system:serviceaccount:agents:unknown"),
                service_account_token(stack, sa, exp=int(time.time()) - 600)):
        status, answer = exchange(stack, bad, subject_token_type=JWT)
        assert status == 400 and answer["error"] in ("invalid_request", "invalid_grant"), answer
