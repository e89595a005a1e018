"""Rug pulls (docs/pins.md): tool definitions pinned on first use, a changed definition
quarantined until someone approves it with `behavry pins`, through real Envoy with the scripted
rmcp server (its `rug_pull` switches `forecast` to another definition) and the Python SDK."""
from __future__ import annotations

import json

import anyio
import pytest
from mcp import MCPError

from harness import wait_until
from mcp_client import connect

UNKNOWN_TOOL = -32602
DENIED = -32080
CHANGED = "Returns the weather forecast for a city, in the units asked for."
ORIGINAL = "Returns the weather forecast for a city."


def pins(stack, *args: str) -> str:
    return stack.cli("pins", "--url", stack.authz_url(), *args,
                     env={"BEHAVRY_AUTHZ_ADMIN_TOKEN": stack.admin_token}).stdout


def shown(stack) -> dict:
    status, _, body = stack.admin("GET", "/admin/v1/pins/scripted/forecast")
    return json.loads(body) if status == 200 else {}


def events(stack, trace: str) -> dict:
    return {e["event"]["kind"]: e["event"] for e in stack.wait_trace(trace)}


def pin_change(stack, **expected):
    """The audit log's pin change with these detail values, once it is there."""
    def found():
        return next((e["detail"] for e in stack.policy_events()
                     if e["request"]["method"] == "pins/changed"
                     and all(e["detail"].get(k) == v for k, v in expected.items())), None)
    return wait_until(f"a pin change {expected} in the audit log", found)


def forecast_of(tools) -> str | None:
    return next((t.description for t in tools if t.name == "forecast"), None)


async def in_thread(fn, *args):
    """A blocking step (the CLI, a wait) without stopping the open MCP sessions."""
    return await anyio.to_thread.run_sync(lambda: fn(*args))


def test_a_rug_pull_is_quarantined_until_approved_and_a_session_must_list_again(stack):
    token = stack.mint("tools-probe")
    notified: list[str] = []

    async def on_message(message):
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            notified.append(method)

    async def listed_elsewhere() -> str | None:
        async with connect(stack.url("scripted"), token) as other:
            return forecast_of((await other.list_tools()).tools)

    async def scenario():
        async with connect(stack.url("scripted"), token, message_handler=on_message) as client:
            # First listing: the definition is pinned on first use (or already was).
            assert forecast_of((await client.list_tools()).tools) == ORIGINAL
            await client.call_tool("forecast", {"city": "Oslo"})
            first_call = client.recorder.trace_of("tools/call", "forecast")
            await in_thread(wait_until, "forecast pinned", lambda: shown(stack).get("pin"))
            original_hash = shown(stack)["pin"]["hash"]
            try:
                # The server changes the tool and says so.
                await client.call_tool("rug_pull", {"on": True})
                await in_thread(wait_until, "list_changed to reach the client",
                                lambda: "notifications/tools/list_changed" in notified)
                tools = (await client.list_tools()).tools
                assert forecast_of(tools) is None, "a changed tool must be hidden"
                assert {"echo", "rug_pull"} <= {t.name for t in tools}
                listing = client.recorder.trace_of("tools/list")
                with pytest.raises(MCPError) as unknown:
                    await client.call_tool("forecast", {"city": "Oslo"})
                quarantined_call = client.recorder.trace_of("tools/call", "forecast")

                # A person reads what changed and approves it.
                await in_thread(wait_until, "the changed definition held",
                                lambda: "scripted / forecast" in pins(stack, "list"))
                diff = await in_thread(pins, stack, "diff", "scripted", "forecast")
                approved = await in_thread(pins, stack, "approve", "scripted", "forecast",
                                           "--as", "alice")
                # Once every worker polled the new set, another session lists the new one...
                await in_thread(wait_until, "the approved definition listed",
                                lambda: anyio.from_thread.run(listed_elsewhere) == CHANGED)
                # ... but this session was shown the old one: it must list again.
                with pytest.raises(MCPError) as stale:
                    await client.call_tool("forecast", {"city": "Oslo"})
                stale_call = client.recorder.trace_of("tools/call", "forecast")
                assert forecast_of((await client.list_tools()).tools) == CHANGED
                result = await client.call_tool("forecast", {"city": "Oslo", "units": "metric"})
                fresh_call = client.recorder.trace_of("tools/call", "forecast")
            finally:
                await client.call_tool("rug_pull", {"on": False})
            return (original_hash, first_call, listing, unknown.value, quarantined_call, diff,
                    approved, stale.value, stale_call, result, fresh_call)

    (original_hash, first_call, listing, unknown, quarantined_call, diff, approved, stale,
     stale_call, result, fresh_call) = anyio.run(scenario)

    # The first call was decided against the pinned definition.
    first = events(stack, first_call)
    assert first["intent"]["detail"]["toolPin"]["hash"] == original_hash
    assert first["decision"]["detail"]["toolPin"]["status"] in ("first_use", "pinned")
    # The changed definition was hidden and reported, its calls answered as unknown.
    outcome = events(stack, listing)["outcome"]["detail"]
    changed = next(p for p in outcome["pins"] if p["tool"] == "forecast")
    assert changed["status"] == "changed" and changed["hidden"] is True
    assert changed["hash"] != original_hash
    assert "forecast" in outcome["hidden"]
    assert unknown.error.code == UNKNOWN_TOOL and "Unknown tool" in unknown.error.message
    # (The session was also shown another definition; the concealed rule decides the answer.)
    assert set(events(stack, quarantined_call)["decision"]["detail"]["ruleIds"]) == {
        "behavry.tools.quarantined", "behavry.tools.changed_since_listing"}
    # The diff names the change; the approval names who made it.
    assert "~ /description" in diff, diff
    assert f'- "{ORIGINAL}"' in diff and f'+ "{CHANGED}"' in diff, diff
    assert f"to {changed['hash']} (approved by alice)" in approved, approved
    # The stale session was told why, not that the tool is unknown.
    assert stale.error.code == DENIED, stale.error
    assert "list the tools again" in stale.error.message
    assert events(stack, stale_call)["decision"]["detail"]["ruleIds"] == [
        "behavry.tools.changed_since_listing"]
    # After listing again it is the tool the session was shown.
    assert result.content[0].text == "forecast for Oslo: sunny (metric)"
    fresh = events(stack, fresh_call)["decision"]["detail"]
    assert fresh["allow"] is True
    assert fresh["toolPin"] == {"hash": changed["hash"], "status": "pinned"}
    # The approval is in the audit log, with what it replaced.
    approval = pin_change(stack, outcome="pinned", source="approved", hash=changed["hash"])
    assert approval["by"] == "alice" and approval["previous"] == original_hash


def test_pins_hold_across_a_sidecar_restart_and_another_envoy_and_a_rejection_sticks(stack):
    token = stack.mint("tools-probe")

    async def listing(url: str, rug_pull: bool | None = None) -> str | None:
        async with connect(url, token) as client:
            if rug_pull is not None:
                await client.call_tool("rug_pull", {"on": rug_pull})
            return forecast_of((await client.list_tools()).tools)

    # Some definition of forecast is pinned (this test may run alone).
    anyio.run(listing, stack.url("scripted"))
    wait_until("forecast pinned", lambda: shown(stack).get("pin"))
    pinned = shown(stack)["pin"]
    # The server lists the other definition from now on.
    to_changed = pinned["definition"]["description"] == ORIGINAL
    stack.restart("authz")
    replica, port = stack.another_envoy("envoy-replica")
    replica.start()
    try:
        replica_url = f"http://127.0.0.1:{port}/mcp/scripted"
        wait_until("the replica to verify tokens",
                   lambda: stack.jwks_loaded(stack.ports["envoy-replica_admin"]))
        try:
            # A replica that never saw the tool, after the sidecar restarted: still quarantined.
            assert anyio.run(listing, replica_url, to_changed) is None
            assert anyio.run(listing, stack.url("scripted")) is None
            wait_until("the definition held", lambda: any(
                h["status"] == "pending" for h in shown(stack).get("held", [])))
            held = next(h for h in shown(stack)["held"] if h["status"] == "pending")
            rejected = pins(stack, "reject", "scripted", "forecast", "--hash", held["hash"],
                            "--as", "bob")
            assert held["hash"] in rejected
            assert held["hash"] in pins(stack, "list", "--status", "rejected")
            assert pin_change(stack, outcome="rejected", hash=held["hash"])["by"] == "bob"
            # Rejected stays hidden, on both replicas; the pin did not move.
            assert anyio.run(listing, replica_url) is None
            assert anyio.run(listing, stack.url("scripted")) is None
            assert shown(stack)["pin"]["hash"] == pinned["hash"]
        finally:
            anyio.run(listing, stack.url("scripted"), False)
    finally:
        replica.stop()
