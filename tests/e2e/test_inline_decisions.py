"""Decisions the filter makes without a callout (docs/policy.md, "Inline decisions"): the
bundle's published decision table denies what it denies whatever else a request says (a blocked
tool, a tool outside the agent's grants, a server it has no grant on), a listing's decision is
reused from the worker's cache, and both follow a bundle change within the poll interval. The
audit trail says which decisions were made inline (`decidedBy`)."""
from __future__ import annotations

import json
import os
import secrets

import anyio
import pytest

from harness import Stack, http, stack_with_data, wait_until
from mcp_client import connect

UNKNOWN_TOOL = -32602
POLICY_DENIED = -32080


def raw_call(stack: Stack, token: str, server: str, tool: str) -> dict:
    """A `tools/call` over plain HTTP (no session: a call denied in the proxy never needs one)."""
    trace = secrets.token_hex(16)
    body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                       "params": {"name": tool, "arguments": {}}}).encode()
    status, _, answer = http("POST", stack.url(server), body, {
        "authorization": f"Bearer {token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01"})
    return {"trace": trace, "status": status, "answer": json.loads(answer)}


def decision(stack: Stack, trace: str) -> dict:
    events = stack.wait_trace(trace)
    return next(e["event"]["detail"] for e in events if e["event"]["kind"] == "decision")


def decided_by_table(stack: Stack, token: str, server: str, tool: str) -> dict:
    """The call, repeated until a worker that has fetched the table decides it (each worker polls
    on its own, at most a poll interval after start)."""
    def attempt():
        result = raw_call(stack, token, server, tool)
        detail = decision(stack, result["trace"])
        return (result, detail) if detail.get("decidedBy") == "table" else None
    return wait_until(f"a table decision for {tool}", attempt, timeout=15, interval=0.2)


def test_the_filter_routes_of_the_sidecar_answer_only_the_proxy(stack, token):
    """Decisions consume budgets and hold approvals, the table lists every agent's grants: only
    the filter (with the proxy credential) may call them."""
    body = json.dumps({"traceId": secrets.token_hex(16), "agent": {"id": "demo-agent"},
                       "request": {"server": "everything", "method": "tools/call",
                                   "tool": "echo"}}).encode()
    for headers in ({}, {"authorization": f"Bearer {token}"}):
        status, answer_headers, _ = http("POST", stack.authz_url() + "/v1/decide", body,
                                         {"content-type": "application/json", **headers})
        assert status == 401, headers
        assert answer_headers.get("www-authenticate", "").startswith("Bearer")
        status, _, _ = http("GET", stack.authz_url() + "/v1/policy/table", None, headers)
        assert status == 401, headers
    proxy = {"authorization": f"Bearer {stack.proxy_token}"}
    status, _, answer = http("GET", stack.authz_url() + "/v1/policy/table", None, proxy)
    assert status == 200 and json.loads(answer)["table"]["agents"]["demo-agent"]


def test_the_table_denies_without_a_callout(stack, token):
    result, detail = decided_by_table(stack, token, "everything", "get-env")
    error = result["answer"]["error"]
    assert (error["code"], error["message"]) == (UNKNOWN_TOOL, "Unknown tool: get-env")
    assert sorted(detail["ruleIds"]) == ["behavry.tools.blocked", "behavry.tools.not_granted"]
    assert detail["obligations"]["conceal"] is True
    assert detail["bundleDigest"].startswith("sha256:")

    # A server the agent has no grant on: a plain denial, also from the table.
    result, detail = decided_by_table(stack, stack.mint("restricted-agent"), "scripted", "echo")
    assert result["answer"]["error"]["code"] == POLICY_DENIED
    assert detail["ruleIds"] == ["behavry.server.not_granted"]

    # An allowed call is the sidecar's, or a lease's the sidecar granted: never the table's.
    async def allowed():
        async with connect(stack.url("everything"), token) as client:
            await client.call_tool("echo", {"message": "not inline"})
            return client.recorder.trace_of("tools/call", "echo")
    assert decision(stack, anyio.run(allowed)).get("decidedBy") in (None, "lease")


def test_a_listing_decision_is_reused_from_the_cache(stack, token):
    async def listings():
        async with connect(stack.url("everything"), token) as client:
            seen = []
            for _ in range(6):
                names = sorted(t.name for t in (await client.list_tools()).tools)
                seen.append((names, client.recorder.trace_of("tools/list", None)))
            return seen

    seen = anyio.run(listings)
    assert len({tuple(names) for names, _ in seen}) == 1, seen
    sources = [decision(stack, trace).get("decidedBy") for _, trace in seen]
    # The first listing on a worker asks the sidecar (an earlier test may have done so); the
    # later ones on that worker are answered from its cache.
    assert "cache" in sources, sources
    assert set(sources) <= {None, "cache"}, sources


@pytest.fixture(scope="module")
def reload_stack(tmp_path_factory):
    # The scripted server's echo has its text redacted (the `redact` obligation).
    with stack_with_data(tmp_path_factory, "inline-decisions", {
            "  redact: {}\n": '  redact:\n    scripted:\n      echo: ["/content/0/text"]\n'}) as s:
        yield s


def test_a_result_is_redacted_where_policy_points(reload_stack):
    stack = reload_stack
    token = stack.mint()

    async def echo():
        async with connect(stack.url("scripted"), token) as client:
            result = await client.call_tool("echo", {"message": "sk-live-0123456789"})
            return result, client.recorder.trace_of("tools/call", "echo")

    result, trace = anyio.run(echo)
    assert result.content[0].text == "[REDACTED]"
    outcome = next(e["event"]["detail"] for e in stack.wait_trace(trace)
                   if e["event"]["kind"] == "outcome")
    assert outcome["redacted"] == ["/content/0/text"]


def test_a_bundle_change_reaches_the_table_and_drops_the_cache(reload_stack):
    stack = reload_stack
    token = stack.mint()

    async def listed() -> list[str]:
        async with connect(stack.url("everything"), token) as client:
            names = []
            for _ in range(3):  # the later ones come from the cache
                names = sorted(t.name for t in (await client.list_tools()).tools)
            return names

    assert "echo" in anyio.run(listed)
    # Block echo: the bundle changes, its digest too.
    data = stack.policy_dir / "data.yaml"
    text = data.read_text()
    assert "    everything: [get-env]\n" in text
    tmp = data.with_suffix(".tmp")
    tmp.write_text(text.replace("    everything: [get-env]\n", "    everything: [get-env, echo]\n"))
    os.replace(tmp, data)

    # Within a reload and a poll, listings no longer show echo (no stale cached answer) and the
    # table denies echo itself.
    wait_until("echo to leave the listing", lambda: "echo" not in anyio.run(listed), timeout=20,
               interval=0.3)
    result, detail = decided_by_table(stack, token, "everything", "echo")
    assert result["answer"]["error"]["message"] == "Unknown tool: echo"
    assert "behavry.tools.blocked" in detail["ruleIds"]
