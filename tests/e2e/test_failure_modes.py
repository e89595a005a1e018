"""6. Fail closed when the authz-sidecar is down; 7. audit delivery survives an audit-sink outage."""
from __future__ import annotations

import anyio
import pytest
from mcp import MCPError

from harness import wait_until
from mcp_client import connect

AUTHZ_UNAVAILABLE = -32081


def test_authz_sidecar_down_fails_closed_then_recovers(stack, token):
    async def call_echo(message: str):
        async with connect(stack.url("everything"), token) as client:
            try:
                result = await client.call_tool("echo", {"message": message})
                return result, None, client.recorder.trace_of("tools/call", "echo")
            except MCPError as err:
                return None, err, client.recorder.trace_of("tools/call", "echo")

    stack.services["authz"].stop()
    try:
        result, error, trace_id = anyio.run(call_echo, "while the sidecar is down")
        assert result is None, "a call went through without a decision"
        assert error.code == AUTHZ_UNAVAILABLE
        assert "fail closed" in error.message
        assert error.data["traceId"] == trace_id
        events = stack.wait_trace(trace_id)
        decision = next(e["event"] for e in events if e["event"]["kind"] == "decision")
        assert decision["detail"]["allow"] is False
        assert decision["detail"]["failureMode"] == "closed"
    finally:
        stack.services["authz"] = stack.authz().start()

    result, error, _ = anyio.run(call_echo, "after the restart")
    assert error is None, error
    assert result.content[0].text == "Echo: after the restart"


def test_audit_sink_outage_loses_and_duplicates_nothing(stack, token):
    calls = 12

    async def make_calls():
        traces = []
        async with connect(stack.url("everything"), token) as client:
            for i in range(calls):
                result = await client.call_tool("echo", {"message": f"during outage {i}"})
                assert result.content[0].text == f"Echo: during outage {i}"
                traces.append(client.recorder.trace_of("tools/call", "echo"))
        return traces

    stack.services["audit"].stop()
    try:
        traces = anyio.run(make_calls)
        # Nothing can have been stored: the sink is down. The events wait in Envoy.
    finally:
        stack.services["audit"] = stack.audit().start()

    for trace_id in traces:
        events = stack.wait_trace(trace_id, timeout=30)
        assert len(events) == 3
        ids = [e["event"]["eventId"] for e in events]
        assert len(set(ids)) == 3

    verify = stack.cli("audit", "verify", "--db", str(stack.audit_db), check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_audit_sink_killed_midstream_keeps_the_chain(stack, token):
    """SIGKILL instead of a clean stop: acknowledged batches are durable, the rest is retried."""
    async def make_calls(n, tag):
        traces = []
        async with connect(stack.url("everything"), token) as client:
            for i in range(n):
                await client.call_tool("echo", {"message": f"{tag} {i}"})
                traces.append(client.recorder.trace_of("tools/call", "echo"))
        return traces

    first = anyio.run(make_calls, 5, "before kill")
    stack.services["audit"].kill()
    second = anyio.run(make_calls, 5, "after kill")
    stack.services["audit"] = stack.audit().start()
    for trace_id in first + second:
        assert len(stack.wait_trace(trace_id, timeout=30)) == 3
    verify = stack.cli("audit", "verify", "--db", str(stack.audit_db), check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
