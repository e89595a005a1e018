"""Leases of allowed calls through Envoy (docs/policy.md, "Leases").

The sidecar grants a lease with an allowed call whose decision rests only on who asks for which
tool: the worker that holds it allows the next calls like it by itself (`decidedBy: "lease"`),
each one still counted against the budgets, and gives back what it did not use when the lease
ends. The stack's bundle has a small per-agent call budget (`1m: {calls: 40}`), leases of at most
a quarter of what is left, for one second:

- every call after the first on one connection (one Envoy worker) is decided in the proxy until
  the lease is used up, and the audit trail says so;
- the budget holds exactly with leases: on one connection, 40 calls pass and the 41st is denied;
- an unused lease is given back: after one call and the lease's expiry, the agent still has 39
  calls, not 40 minus the reservation;
- a leased call with arguments over the lease's size is asked of the sidecar;
- a tool with a length rule (the scripted server's `echo`, `message` at most 4096 characters) is
  leased, the proxy keeps the rule: a short message is allowed under the lease, a long one goes
  to the sidecar and is denied by the rule.
"""
from __future__ import annotations

import http.client
import json
import secrets
import time

import pytest

from harness import Stack, policies_with

LIMIT = 40
LEASE_SECONDS = 1
EXCEEDED = "behavry.budget.exceeded"
POLICY_DENIED = -32080


@pytest.fixture(scope="module")
def lease_stack(tmp_path_factory):
    policies = policies_with(tmp_path_factory.mktemp("lease-policies"), {
        "      1m: {calls: 1200, destructive: 10}\n":
            f"      1m: {{calls: {LIMIT}, destructive: 10}}\n",
        "    calls: 50\n    seconds: 5\n    share: 8\n":
            f"    calls: 50\n    seconds: {LEASE_SECONDS}\n    share: 4\n",
    })
    agents = "".join(f'[[agents]]\nid = "{agent}"\n[agents.servers.raw]\ntools = ["raw"]\n'
                     for agent in ("lease-first", "lease-spender", "lease-returner", "lease-big"))
    agents += '[[agents]]\nid = "lease-echo"\n[agents.servers.scripted]\ntools = ["echo"]\n'
    stack = Stack(tmp_path_factory.mktemp("lease-stack"), name="leases", policy_dir=policies,
                  authz_extra=agents)
    with stack.running() as s:
        yield s


class Connection:
    """One keep-alive HTTP connection to Envoy: every call on it reaches the same worker."""

    def __init__(self, stack: Stack, agent: str):
        self.stack = stack
        self.token = stack.mint(agent)
        self.http = http.client.HTTPConnection("127.0.0.1", stack.ports["envoy"], timeout=30)

    def call(self, arguments: dict | None = None, tool: str = "raw",
             path: str = "/mcp/raw/echo-headers") -> dict:
        trace = secrets.token_hex(16)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": tool, "arguments": arguments or {}}})
        self.http.request("POST", path, body, {
            "authorization": f"Bearer {self.token}", "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01"})
        response = self.http.getresponse()
        answer = json.loads(response.read())
        return {"trace": trace, "status": response.status, "answer": answer}

    def close(self) -> None:
        self.http.close()


def allowed(result: dict) -> bool:
    return result["status"] == 200 and "result" in result["answer"]


def decision(stack: Stack, trace: str) -> dict:
    events = stack.wait_trace(trace)
    return next(e["event"]["detail"] for e in events if e["event"]["kind"] == "decision")


def spend(connection: Connection, at_most: int) -> int:
    """Calls until one is denied for the budget; answers how many passed."""
    for passed in range(at_most + 1):
        result = connection.call()
        if not allowed(result):
            error = result["answer"]["error"]
            assert error["code"] == POLICY_DENIED, result
            assert error["data"]["ruleIds"] == [EXCEEDED], result
            return passed
    raise AssertionError(f"{at_most + 1} calls passed")


def test_calls_under_a_lease_are_decided_in_the_proxy(lease_stack):
    connection = Connection(lease_stack, "lease-first")
    try:
        results = [connection.call() for _ in range(5)]
    finally:
        connection.close()
    assert all(allowed(r) for r in results), results
    first, *rest = [decision(lease_stack, r["trace"]) for r in results]
    # The first is the sidecar's, and grants the lease: a quarter of what is left after it.
    assert "decidedBy" not in first, first
    lease = first["obligations"]["lease"]
    assert lease["calls"] == (LIMIT - 1) // 4 and lease["seconds"] == LEASE_SECONDS, lease
    assert lease["reservedAtMs"] > 0, lease
    # The next ones are the lease's: allowed, each counted as a call, none granting a lease.
    for detail in rest:
        assert detail["decidedBy"] == "lease", detail
        assert detail["allow"] is True
        assert detail["obligations"]["budget"]["calls"] == 1, detail
        assert "lease" not in detail["obligations"], detail


def test_the_budget_holds_exactly_with_leases(lease_stack):
    connection = Connection(lease_stack, "lease-spender")
    try:
        passed = spend(connection, LIMIT)
    finally:
        connection.close()
    # Leases shrink as the budget runs out: the agent gets its calls, not one more, not one less.
    assert passed == LIMIT


def test_an_unused_lease_is_given_back(lease_stack):
    first = Connection(lease_stack, "lease-returner")
    try:
        result = first.call()
    finally:
        first.close()
    lease = decision(lease_stack, result["trace"])["obligations"]["lease"]
    assert lease["calls"] == (LIMIT - 1) // 4, lease
    # The lease ends unused; its worker gives the calls back within a tick or two.
    time.sleep(LEASE_SECONDS + 2)
    second = Connection(lease_stack, "lease-returner")
    try:
        passed = spend(second, LIMIT)
    finally:
        second.close()
    assert passed == LIMIT - 1


def test_a_request_over_the_lease_size_is_asked(lease_stack):
    connection = Connection(lease_stack, "lease-big")
    try:
        first = connection.call()
        small = connection.call()
        big = connection.call({"blob": "x" * 40_000})
    finally:
        connection.close()
    assert allowed(first) and allowed(small)
    assert decision(lease_stack, small["trace"])["decidedBy"] == "lease"
    # Over the bundle's argument-size limit: the sidecar decides, and denies.
    assert big["answer"]["error"]["data"]["ruleIds"] == ["behavry.arguments.too_large"], big
    assert "decidedBy" not in decision(lease_stack, big["trace"])


def test_a_length_rule_is_kept_by_the_proxy_under_a_lease(lease_stack):
    # The scripted server in stateless JSON mode (route /mcp/scripted-json, server "scripted").
    connection = Connection(lease_stack, "lease-echo")
    echo = {"tool": "echo", "path": "/mcp/scripted-json"}
    try:
        first = connection.call({"message": "first"}, **echo)
        second = connection.call({"message": "second"}, **echo)
        long = connection.call({"message": "x" * 5000}, **echo)
        after = connection.call({"message": "after"}, **echo)
    finally:
        connection.close()
    assert allowed(first) and allowed(second) and allowed(after), (first, second, after)
    granted = decision(lease_stack, first["trace"])
    assert granted["obligations"]["lease"]["maxArgumentChars"] == {"message": 4096}, granted
    assert decision(lease_stack, second["trace"])["decidedBy"] == "lease"
    # Over the length rule: asked of the sidecar, which denies it by the rule; the lease stays.
    assert long["answer"]["error"]["code"] == POLICY_DENIED, long
    refused = decision(lease_stack, long["trace"])
    assert "decidedBy" not in refused, refused
    assert refused["ruleIds"] == ["behavry.arguments.too_long"], refused
    assert decision(lease_stack, after["trace"])["decidedBy"] == "lease"
