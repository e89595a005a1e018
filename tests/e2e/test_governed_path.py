"""1. The official Python MCP SDK through Envoy + Behavry against server-everything."""
from __future__ import annotations

import anyio
import pytest
from mcp import MCPError

from mcp_client import connect

POLICY_DENIED = -32080
UNKNOWN_TOOL = -32602
RESOURCE_NOT_FOUND = -32002
# What the demo agent may call on server-everything (tests/e2e/harness.py).
GRANTED = {"echo", "get-sum", "trigger-long-running-operation"}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_python_sdk_allowed_and_denied_calls_are_governed_and_audited(stack, token, mode):
    async def scenario():
        async with connect(stack.url("everything"), token, mode=mode) as client:
            # The listing shows only what the agent may call; get-env (blocked by the default
            # bundle) and every other tool are hidden.
            tools = await client.list_tools()
            names = {t.name for t in tools.tools}
            assert names == GRANTED
            listing_trace = client.recorder.trace_of("tools/list", None)

            result = await client.call_tool("echo", {"message": "governed hello"})
            assert not result.is_error
            assert result.content[0].text == "Echo: governed hello"
            allowed_trace = client.recorder.trace_of("tools/call", "echo")

            # A hidden tool is reported as unknown, not as forbidden.
            with pytest.raises(MCPError) as hidden:
                await client.call_tool("get-env", {})
            hidden_trace = client.recorder.trace_of("tools/call", "get-env")

            # An argument rule (the default bundle's 32 KiB cap on arguments): a plain denial.
            with pytest.raises(MCPError) as denied:
                await client.call_tool("echo", {"message": "x" * 40_000})
            denied_trace = client.recorder.trace_of("tools/call", "echo")
            return (listing_trace, allowed_trace, hidden_trace, hidden.value,
                    denied_trace, denied.value)

    listing_trace, allowed_trace, hidden_trace, hidden, denied_trace, error = anyio.run(scenario)
    assert hidden.code == UNKNOWN_TOOL
    assert hidden.message == "Unknown tool: get-env"
    assert hidden.data["traceId"] == hidden_trace
    assert "reason" not in hidden.data

    assert error.code == POLICY_DENIED
    assert "exceed 32768 bytes" in error.message
    assert error.data["traceId"] == denied_trace
    assert error.data["ruleIds"] == ["behavry.arguments.too_large"]

    listing = {e["event"]["kind"]: e["event"] for e in stack.wait_trace(listing_trace)}
    assert listing["decision"]["detail"]["ruleIds"] == ["behavry.listing.filtered"]
    assert "get-env" in listing["outcome"]["detail"]["hidden"]
    assert not GRANTED & set(listing["outcome"]["detail"]["hidden"])

    allowed = stack.wait_trace(allowed_trace)
    by_kind = {e["event"]["kind"]: e["event"] for e in allowed}
    assert by_kind["intent"]["agent"] == "demo-agent"
    assert by_kind["intent"]["request"]["tool"] == "echo"
    assert by_kind["decision"]["detail"]["allow"] is True
    assert by_kind["decision"]["detail"]["bundleDigest"].startswith("sha256:")
    assert by_kind["decision"]["detail"]["obligations"]["budget"]["calls"] == 1
    assert by_kind["outcome"]["detail"]["isError"] is False
    assert [e["event"]["kind"] for e in allowed] == ["intent", "decision", "outcome"]

    concealed = {e["event"]["kind"]: e["event"] for e in stack.wait_trace(hidden_trace)}
    assert concealed["decision"]["detail"]["allow"] is False
    assert sorted(concealed["decision"]["detail"]["ruleIds"]) == [
        "behavry.tools.blocked", "behavry.tools.not_granted"]
    assert concealed["decision"]["detail"]["obligations"]["conceal"] is True
    assert concealed["outcome"]["detail"]["errorCode"] == UNKNOWN_TOOL

    denied = {e["event"]["kind"]: e["event"] for e in stack.wait_trace(denied_trace)}
    assert denied["decision"]["detail"]["allow"] is False
    assert denied["outcome"]["detail"]["errorCode"] == POLICY_DENIED

    verify = stack.cli("audit", "verify", "--db", str(stack.audit_db), check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("ok:")


def test_resources_and_prompts_are_decided_too(stack, token):
    async def scenario():
        async with connect(stack.url("everything"), token) as client:
            resource = await client.read_resource("demo://resource/static/document/architecture.md")
            assert resource.contents
            with pytest.raises(MCPError) as denied_resource:
                await client.read_resource("demo://resource/static/document/features.md")
            with pytest.raises(MCPError) as denied_prompt:
                await client.get_prompt("args-prompt", {"city": "Paris"})
            return denied_resource.value, denied_prompt.value

    # Targets the agent may not use are concealed: answered like targets that do not exist.
    denied_resource, denied_prompt = anyio.run(scenario)
    assert denied_resource.code == RESOURCE_NOT_FOUND
    assert denied_resource.data["uri"] == "demo://resource/static/document/features.md"
    assert denied_prompt.code == UNKNOWN_TOOL
    assert denied_prompt.message == "Unknown prompt: args-prompt"


def test_agent_without_grants_is_denied_everything(stack):
    token = stack.mint("restricted-agent")

    async def scenario():
        async with connect(stack.url("everything"), token) as client:
            with pytest.raises(MCPError) as denied:
                await client.call_tool("echo", {"message": "x"})
            return denied.value

    error = anyio.run(scenario)
    assert (error.code, error.message) == (UNKNOWN_TOOL, "Unknown tool: echo")


def test_revision_2026_07_28_client_passes_header_checks_and_is_audited(stack, token):
    """The Python SDK speaking 2026-07-28 (no session; version, clientInfo and capabilities in
    `_meta`; Mcp-Method/Mcp-Name headers) through Behavry to an upstream that serves it."""
    async def scenario():
        async with connect(stack.url("scripted"), token, mode="2026-07-28") as client:
            assert client.protocol_version == "2026-07-28"
            result = await client.call_tool("echo", {"message": "stateless"})
            return result, client.recorder

    result, recorder = anyio.run(scenario)
    assert result.content[0].text == "stateless"
    sent = [s for s in recorder.sent if (s.body or {}).get("method") == "tools/call"]
    assert sent, "no tools/call was sent"
    events = stack.wait_trace(sent[-1].trace_id)
    intent = next(e["event"] for e in events if e["event"]["kind"] == "intent")
    assert intent["request"]["protocolVersion"] == "2026-07-28"
    assert intent["request"]["clientInfo"]["name"]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_json_answers_pass_intact_and_are_audited(stack, token, mode):
    """An upstream answering application/json (one message, read whole by the filter)."""
    async def scenario():
        async with connect(stack.url("scripted-json"), token, mode=mode) as client:
            ok = await client.call_tool("echo", {"message": "as json"})
            ok_trace = client.recorder.trace_of("tools/call", "echo")
            failed = await client.call_tool("fail", {})
            failed_trace = client.recorder.trace_of("tools/call", "fail")
            return ok, ok_trace, failed, failed_trace

    ok, ok_trace, failed, failed_trace = anyio.run(scenario)
    assert ok.content[0].text == "as json" and not ok.is_error
    assert failed.is_error
    outcome = lambda trace: next(e["event"]["detail"] for e in stack.wait_trace(trace)  # noqa: E731
                                 if e["event"]["kind"] == "outcome")
    assert outcome(ok_trace)["isError"] is False
    assert outcome(failed_trace)["isError"] is True
