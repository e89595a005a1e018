"""6. Fail closed when the authz-sidecar is down; 7. audit delivery survives an audit-sink outage."""
from __future__ import annotations

import anyio
import pytest
from mcp import MCPError

from harness import http, wait_until
from mcp_client import connect

AUTHZ_UNAVAILABLE = -32081
AUDIT_UNAVAILABLE = -32082


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


def test_a_full_audit_backlog_fails_new_calls_closed_and_drains(stack, token):
    """An Envoy whose audit backlog may hold 6 events: with the sink down, calls run until the
    backlog is full, then fail closed with -32082 and a metric; once the sink is back the backlog
    drains, calls run again, and every call, the refused one too, is in the log."""
    name = "envoy-small-backlog"
    replica, port = stack.another_envoy(name, edit=lambda text: text.replace(
        '"maxBatch": 500}', '"maxBatch": 500, "maxQueued": 6}'))
    url = f"http://127.0.0.1:{port}/mcp/everything"

    def stat(metric: str) -> int | None:
        _, _, body = http("GET", f"http://127.0.0.1:{stack.ports[name + '_admin']}/stats"
                                 f"?filter={metric}")
        for line in body.decode().splitlines():
            key, _, value = line.partition(": ")
            if key.endswith(metric):
                return int(value)
        return None

    async def calls(n: int):
        done, refused = [], None
        async with connect(url, token) as client:
            for i in range(n):
                try:
                    await client.call_tool("echo", {"message": f"backlog {i}"})
                    done.append(client.recorder.trace_of("tools/call", "echo"))
                except MCPError as err:
                    refused = (err, client.recorder.trace_of("tools/call", "echo"))
                    break
        return done, refused

    replica.start()
    try:
        wait_until("the replica to verify tokens",
                   lambda: stack.jwks_loaded(stack.ports[name + "_admin"]))
        stack.services["audit"].stop()
        try:
            done, refused = anyio.run(calls, 10)
        finally:
            stack.services["audit"] = stack.audit().start()
        assert done, "no call ran before the backlog filled"
        assert refused is not None, "the backlog never refused a call"
        error, refused_trace = refused
        assert error.code == AUDIT_UNAVAILABLE
        assert "fail closed" in error.message
        assert error.data["max"] == 6 and error.data["queued"] >= 6
        assert error.data["traceId"] == refused_trace
        assert stat("behavry_audit_backlog_refused_calls") >= 1

        wait_until("the backlog to drain", lambda: stat("behavry_audit_backlog") == 0)
        after, refused_after = anyio.run(calls, 1)
        assert refused_after is None and len(after) == 1

        for trace_id in done + after:
            stack.wait_trace(trace_id)
        decision = wait_until("the refusal in the log", lambda: next(
            (e["event"] for e in stack.trace(refused_trace) if e["event"]["kind"] == "decision"),
            None))
        assert decision["detail"]["allow"] is False
        assert decision["detail"]["auditBacklog"]["max"] == 6
    finally:
        replica.stop()
    verify = stack.cli("audit", "verify", "--db", str(stack.audit_db), check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_sync_mode_commits_the_decision_before_the_call_runs(stack, token):
    """`audit.sync`: a call runs only once its intent and decision are committed at the sink;
    with the sink down it is refused with -32082, and its records reach the log later."""
    name = "envoy-sync"
    replica, port = stack.another_envoy(name, edit=lambda text: text.replace(
        '"maxBatch": 500}', '"maxBatch": 500, "sync": true}'))
    url = f"http://127.0.0.1:{port}/mcp/everything"

    async def call(message: str):
        async with connect(url, token) as client:
            try:
                result = await client.call_tool("echo", {"message": message})
                return result, None, client.recorder.trace_of("tools/call", "echo")
            except MCPError as err:
                return None, err, client.recorder.trace_of("tools/call", "echo")

    replica.start()
    try:
        wait_until("the replica to verify tokens",
                   lambda: stack.jwks_loaded(stack.ports[name + "_admin"]))
        result, error, trace_id = anyio.run(call, "committed first")
        assert error is None, error
        assert result.content[0].text == "Echo: committed first"
        # Committed before the call ran: in the log the moment the answer is back.
        kinds = {e["event"]["kind"] for e in stack.trace(trace_id)}
        assert {"intent", "decision"} <= kinds, kinds

        stack.services["audit"].stop()
        try:
            result, error, refused = anyio.run(call, "not committed")
        finally:
            stack.services["audit"] = stack.audit().start()
        assert result is None, "a call ran without its decision committed"
        assert error.code == AUDIT_UNAVAILABLE
        assert "could not be committed" in error.message
        assert error.data["traceId"] == refused
        # Nothing lost: the refused call's records went to the queue and arrive now.
        events = stack.wait_trace(refused, timeout=30)
        outcome = next(e["event"] for e in events if e["event"]["kind"] == "outcome")
        assert outcome["detail"]["errorCode"] == AUDIT_UNAVAILABLE
    finally:
        replica.stop()
