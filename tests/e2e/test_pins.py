"""Rug pulls (docs/pins.md): tool definitions pinned on first use, a changed definition
quarantined until someone approves it with `behavry pins`, through real Envoy with the scripted
rmcp server (its `rug_pull` switches `forecast` to another definition) and the Python SDK."""
from __future__ import annotations

import json

import anyio
import pytest
from mcp import MCPError

from harness import Stack, http, wait_until
from mcp_client import connect

UNKNOWN_TOOL = -32602
DENIED = -32080
CHANGED = "Returns the weather forecast for a city, in the units asked for."
ORIGINAL = "Returns the weather forecast for a city."


def pins(stack, *args: str) -> str:
    return stack.cli("pins", "--url", stack.authz_url(), *args,
                     env={"BEHAVRY_AUTHZ_ADMIN_TOKEN": stack.admin_token}).stdout


def shown(stack, tool: str = "forecast", tenant: str = "default") -> dict:
    status, _, body = stack.admin("GET", f"/admin/v1/pins/scripted/{tool}?tenant={tenant}")
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


def forecast_lister(token: str):
    """`listing(url, rug_pull=None)`: forecast's description in a fresh session's listing (None
    when hidden), after switching the scripted server's rug pull when asked."""
    async def listing(url: str, rug_pull: bool | None = None) -> str | None:
        async with connect(url, token) as client:
            if rug_pull is not None:
                await client.call_tool("rug_pull", {"on": rug_pull})
            return forecast_of((await client.list_tools()).tools)
    return listing


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
                # ... but this session was shown the old one: it must list again (once the
                # worker that answers has polled the approval; before, the tool is quarantined).
                for _ in range(100):
                    with pytest.raises(MCPError) as stale:
                        await client.call_tool("forecast", {"city": "Oslo"})
                    if stale.value.error.code != UNKNOWN_TOOL:
                        break
                    await anyio.sleep(0.1)
                stale_call = client.recorder.trace_of("tools/call", "forecast")
                # Listing again shows it, once the worker that answers has polled the new set.
                for _ in range(100):
                    if forecast_of((await client.list_tools()).tools) == CHANGED:
                        break
                    await anyio.sleep(0.1)
                else:
                    raise AssertionError("this session never listed the approved definition")
                # The call may reach a worker that has not polled the approval yet: there the
                # tool is still quarantined (unknown) until it has.
                for _ in range(100):
                    try:
                        result = await client.call_tool("forecast",
                                                        {"city": "Oslo", "units": "metric"})
                        break
                    except MCPError as err:
                        if err.error.code != UNKNOWN_TOOL:
                            raise
                        await anyio.sleep(0.1)
                else:
                    raise AssertionError("the approved definition was never callable")
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
    listing = forecast_lister(stack.mint("tools-probe"))

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
            # A replica that never saw the tool, after the sidecar restarted: quarantined once it
            # has polled the pin set.
            anyio.run(listing, stack.url("scripted"), to_changed)
            wait_until("the replica to quarantine the changed definition",
                       lambda: anyio.run(listing, replica_url) is None)
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


def test_each_tenant_pins_and_approves_on_its_own(stack):
    """A second Envoy serving tenant `blue` on the same sidecar: its first use, its rug pull and
    its approval are blue's, and the default tenant's pin does not move."""
    listing = forecast_lister(stack.mint("tools-probe"))

    def blue_pins(*args: str) -> str:
        return pins(stack, "--tenant", "blue", *args)

    replica, port = stack.another_envoy("envoy-blue", edit=lambda text: text.replace(
        '"guardedPrefix": "/mcp",', '"guardedPrefix": "/mcp", "tenant": "blue",'))
    replica.start()
    blue = f"http://127.0.0.1:{port}/mcp/scripted"
    try:
        wait_until("the blue proxy to verify tokens",
                   lambda: stack.jwks_loaded(stack.ports["envoy-blue_admin"]))
        anyio.run(listing, stack.url("scripted"), False)
        before = shown(stack).get("pin")
        # Blue trusts the definition on its first use, whatever the default tenant decided.
        wait_until("blue to pin forecast on first use", lambda: anyio.run(listing, blue) == ORIGINAL
                   and shown(stack, tenant="blue").get("pin"))
        first = shown(stack, tenant="blue")["pin"]
        assert (first["tenant"], first["source"]) == ("blue", "first_use")
        assert pin_change(stack, outcome="pinned", source="first_use", tenant="blue")
        # A rug pull is quarantined for blue and held for blue's decision.
        anyio.run(listing, blue, True)
        wait_until("blue to quarantine the changed definition",
                   lambda: anyio.run(listing, blue) is None)
        wait_until("the change held for blue", lambda: "blue:scripted / forecast" in blue_pins("list"))
        assert "blue:scripted" in blue_pins("diff", "scripted", "forecast")
        approved = blue_pins("approve", "scripted", "forecast", "--as", "carol")
        assert "approved by carol" in approved, approved
        wait_until("blue to list the approved definition",
                   lambda: anyio.run(listing, blue) == CHANGED)
        assert pin_change(stack, outcome="pinned", source="approved", tenant="blue")["by"] == "carol"
        # Nothing of this touched the default tenant's pin or its held definitions.
        assert shown(stack).get("pin") == before
        assert "blue:" not in pins(stack, "list", "--tenant", "default", "--status", "all")
    finally:
        try:
            anyio.run(listing, stack.url("scripted"), False)
        finally:
            replica.stop()


@pytest.fixture(scope="module")
def strict_stack(tmp_path_factory):
    """A stack whose sidecar holds every tool of the scripted server until a manifest signed with
    the vendor's Ed25519 key pins it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    workdir = tmp_path_factory.mktemp("manifest-stack")
    for name, key in (("vendor", Ed25519PrivateKey.generate()),
                      ("stranger", Ed25519PrivateKey.generate())):
        (workdir / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        (workdir / f"{name}.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    extra = '[pins.servers.scripted]\nmode = "strict"\nmanifest_keys = ["vendor.pub"]\n\n'
    with Stack(workdir, name="manifest", authz_extra=extra).running() as stack:
        yield stack


def test_a_strict_servers_tools_wait_for_a_manifest_signed_by_its_vendor(strict_stack):
    stack = strict_stack
    token = stack.mint()

    async def names() -> set[str]:
        async with connect(stack.url("scripted"), token) as client:
            return {t.name for t in (await client.list_tools()).tools}

    # Strict: nothing is trusted on first use, every tool is held (unpinned) and hidden, once
    # the worker that answers has polled the pin set (before its first poll a fresh Envoy has no
    # pins to quarantine with: docs/pins.md, known gaps).
    wait_until("the strict server's tools hidden", lambda: anyio.run(names) == set())
    wait_until("the definitions held", lambda: "scripted / echo" in pins(stack, "list"))
    # The vendor signs its release's definitions (as the server lists them).
    _, _, body = http("POST", f"http://127.0.0.1:{stack.ports['scripted_json']}/mcp",
                      json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode(),
                      {"content-type": "application/json",
                       "accept": "application/json, text/event-stream"})
    listing = stack.dir / "release-tools.json"
    listing.write_bytes(body)
    signed = {}
    for signer in ("vendor", "stranger"):
        manifest = stack.dir / f"{signer}.jws"
        manifest.write_text(stack.cli("pins", "sign-manifest", "scripted", str(listing),
                                      "--key", str(stack.dir / f"{signer}.key")).stdout)
        signed[signer] = manifest
    # One signed by another key is refused.
    refused = stack.cli("pins", "--url", stack.authz_url(), "apply-manifest", "scripted",
                        str(signed["stranger"]), "--as", "mallory", check=False,
                        env={"BEHAVRY_AUTHZ_ADMIN_TOKEN": stack.admin_token})
    assert refused.returncode != 0
    assert "does not verify with any manifest key of server `scripted`" in refused.stderr
    applied = pins(stack, "apply-manifest", "scripted", str(signed["vendor"]), "--as", "release-bot")
    assert "pinned scripted / echo to sha256:" in applied and "(new)" in applied
    # Every worker polls the new set: the tools are listed again, but the poisoned one.
    wait_until("the signed tools listed", lambda: "echo" in anyio.run(names))
    assert "add_numbers" not in anyio.run(names)
    assert shown(stack, "echo")["pin"]["source"] == "manifest"
    change = pin_change(stack, outcome="pinned", source="manifest", tool="echo")
    assert change["by"] == "release-bot"

