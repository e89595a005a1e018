"""Content security through Envoy (docs/dlp.md): secrets found in arguments reach policy and never
the audit log; secrets in what a server sends are redacted or withhold the answer as the default
bundle's `dlp` obligation says, in JSON answers and in SSE streams split into 3-byte chunks."""
from __future__ import annotations

import base64
import json
import secrets
import zlib

import anyio
import mcp_types
import pytest

from mcp import MCPError

from harness import http, sse_events, stack_with_data
from mcp_client import connect

POLICY_DENIED = -32080
UNKNOWN_TOOL = -32602
CONTENT_WITHHELD = -32090

B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def github_token() -> str:
    """A fresh GitHub-format token with a valid checksum (made up; never a real one)."""
    body = "".join(secrets.choice(B62) for _ in range(30))
    crc, check = zlib.crc32(body.encode()), ""
    for _ in range(6):
        check = B62[crc % 62] + check
        crc //= 62
    return "ghp_" + body + check


def call(stack, token, path: str, arguments: dict, trace_id: str, name: str = "echo"):
    body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                       "params": {"name": name, "arguments": arguments}}).encode()
    return http("POST", f"http://127.0.0.1:{stack.ports['envoy']}{path}", body, {
        "authorization": f"Bearer {token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})


def stored(events: list[dict]) -> str:
    return json.dumps(events)


def test_a_secret_in_a_result_is_redacted_and_the_audit_log_holds_only_hashes(stack, token):
    secret = github_token()
    address = f"ops-{secrets.token_hex(3)}@corp.example.com"
    message = f"deploy with {secret}, notify {address}"

    async def scenario():
        async with connect(stack.url("scripted"), token) as client:
            result = await client.call_tool("echo", {"message": message})
            return result, client.recorder.trace_of("tools/call", "echo")

    result, trace_id = anyio.run(scenario)
    text = result.content[0].text
    # The official SDK gets a valid result: the token redacted, the e-mail address (recorded
    # only, by the default bundle) as sent.
    assert not result.is_error
    assert secret not in text
    assert text == f"deploy with [REDACTED:github_token], notify {address}"
    events = stack.wait_trace(trace_id)
    by_kind = {e["event"]["kind"]: e["event"] for e in events}
    intent, decision, outcome = by_kind["intent"], by_kind["decision"], by_kind["outcome"]
    # The arguments are audited with the findings replaced; the findings carry keyed hashes.
    assert intent["request"]["arguments"]["message"] == (
        "deploy with [REDACTED:github_token], notify [REDACTED:email]")
    found = {f["detector"]: f for f in intent["detail"]["findings"]}
    assert set(found) == {"github_token", "email"}
    assert all(f["pointer"] == "/message" and f["hash"].startswith("hmac-sha256:")
               for f in found.values())
    assert decision["detail"]["obligations"]["dlp"]["block"] == ["private_key"]
    actions = {(f["detector"], f["action"]) for f in outcome["detail"]["dlp"]}
    assert actions == {("github_token", "redact"), ("email", "log")}
    # The same value hashes the same in the request and in the answer.
    answer_hash = next(f["hash"] for f in outcome["detail"]["dlp"] if f["detector"] == "github_token")
    assert answer_hash == found["github_token"]["hash"]
    everything = stored(events)
    assert secret not in everything and address not in everything


def test_a_private_key_in_arguments_is_denied_before_the_server_sees_it(stack, token):
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    trace_id = secrets.token_hex(16)
    before = stack.upstream_requests()
    status, _, body = call(stack, token, "/mcp/scripted", {"message": f"store {key}"}, trace_id)
    assert status == 200
    answer = json.loads(body) if body.startswith(b"{") else sse_events(body)[-1]
    assert answer["error"]["code"] == POLICY_DENIED
    assert answer["error"]["data"]["ruleIds"] == ["behavry.dlp.secret_in_arguments"]
    assert "private_key at /message" in answer["error"]["message"]
    assert stack.upstream_requests() == before, "a denied call reached the server"
    events = stack.wait_trace(trace_id, kinds=("intent", "decision", "outcome"))
    assert "MIIEvQ" not in stored(events)


def test_a_blocked_finding_in_an_answer_withholds_it(stack, token):
    # The server produces a private key its request did not carry as one (it decodes
    # `messageBase64`), streamed 3 bytes at a time: the default bundle blocks private keys, so
    # the agent gets an error instead of the answer.
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    trace_id = secrets.token_hex(16)
    status, _, body = call(stack, token, "/mcp/raw/split-sse",
                           {"messageBase64": base64.b64encode(key.encode()).decode()},
                           trace_id, name="stream")
    assert status == 200
    assert b"MIIEvQ" not in body
    answer = sse_events(body)[-1]
    assert answer["id"] == 9
    assert answer["error"]["code"] == CONTENT_WITHHELD
    assert answer["error"]["data"]["detectors"] == ["private_key"]
    events = stack.wait_trace(trace_id)
    outcome = next(e["event"] for e in events if e["event"]["kind"] == "outcome")
    assert outcome["detail"]["withheld"] == ["private_key"]
    assert "MIIEvQ" not in stored(events)


def test_a_secret_split_across_sse_chunks_is_redacted(stack, token):
    # /raw/split-sse streams its answer 3 bytes at a time: every secret in it arrives split
    # across chunks, and must still be found.
    secret = github_token()
    trace_id = secrets.token_hex(16)
    status, headers, body = call(stack, token, "/mcp/raw/split-sse",
                                 {"message": f"token {secret} ok"}, trace_id, name="stream")
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert secret.encode() not in body
    messages = sse_events(body)
    assert messages[-1]["result"]["content"][0]["text"] == "token [REDACTED:github_token] ok"
    events = stack.wait_trace(trace_id)
    outcome = next(e["event"] for e in events if e["event"]["kind"] == "outcome")
    assert [f["detector"] for f in outcome["detail"]["dlp"]] == ["github_token"]
    assert secret not in stored(events)


def test_a_secret_the_clients_model_answers_the_server_is_redacted_before_it_leaves(stack, token):
    # The server's sampling request asks the client's model, whose answer (a POST from the
    # client, with no decision of its own) carries a token from its context: the proxy redacts
    # it before the server reads it, and records the finding with the answer's trace.
    secret = github_token()

    async def on_sampling(context, params):
        return mcp_types.CreateMessageResult(
            role="assistant", model="test",
            content=mcp_types.TextContent(type="text", text=f"the key is {secret}"))

    async def scenario():
        async with connect(stack.url("scripted"), token, sampling_callback=on_sampling,
                           read_timeout_seconds=20) as client:
            result = await client.call_tool("ask_client", {"question": "what is the key?"})
            answers = [s.trace_id for s in client.recorder.sent
                       if s.body and "result" in s.body and "method" not in s.body]
            return result, answers

    result, answers = anyio.run(scenario)
    # ask_client returns what it received: the server never had the token.
    assert result.content[0].text == "the key is [REDACTED:github_token]"
    assert len(answers) == 1
    (event,) = stack.wait_trace(answers[0], kinds=("outcome",))
    detail = event["event"]["detail"]
    assert [(f["detector"], f["action"]) for f in detail["dlp"]] == [("github_token", "redact")]
    assert secret not in json.dumps(event)


def test_a_poisoned_tool_is_hidden_from_the_listing_and_unknown_to_calls(stack):
    # An agent granted every tool of the scripted server: add_numbers (whose description tells
    # the model to read ~/.ssh/id_rsa and keep quiet) is missing only because it is poisoned.
    token = stack.mint("tools-probe")

    async def scenario():
        async with connect(stack.url("scripted"), token) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            listing_trace = client.recorder.trace_of("tools/list", None)
            with pytest.raises(MCPError) as unknown:
                await client.call_tool("add_numbers", {"a": 1, "b": 2})
            call_trace = client.recorder.trace_of("tools/call", "add_numbers")
            echoed = await client.call_tool("echo", {"message": "still here"})
            return names, listing_trace, unknown.value, call_trace, echoed

    names, listing_trace, unknown, call_trace, echoed = anyio.run(scenario)
    assert "add_numbers" not in names
    assert {"echo", "progress", "big", "fail"} <= names
    assert unknown.error.code == UNKNOWN_TOOL and "Unknown tool" in unknown.error.message
    assert echoed.content[0].text == "still here"
    listing = {e["event"]["kind"]: e["event"] for e in stack.wait_trace(listing_trace)}
    verdicts = {v["tool"]: v for v in listing["outcome"]["detail"]["poisoning"]}
    assert verdicts["add_numbers"]["hidden"] is True and verdicts["add_numbers"]["score"] == 100
    rules = {r["rule"] for r in verdicts["add_numbers"]["reasons"]}
    assert {"secrecy", "sensitive_data", "tag_emphasis", "model_instruction"} <= rules
    assert "add_numbers" in listing["outcome"]["detail"]["hidden"]
    call = {e["event"]["kind"]: e["event"] for e in stack.wait_trace(call_trace)}
    assert call["decision"]["detail"]["ruleIds"] == ["behavry.tools.poisoned"]


def test_a_tool_name_two_servers_list_is_flagged_as_a_collision(stack):
    # server-everything and the scripted server both offer `echo`.
    token = stack.mint()

    async def listed(url: str) -> str:
        async with connect(url, token) as client:
            await client.list_tools()
            return client.recorder.trace_of("tools/list", None)

    anyio.run(listed, stack.url("everything"))
    trace = anyio.run(listed, stack.url("scripted"))
    outcome = next(e["event"] for e in stack.wait_trace(trace) if e["event"]["kind"] == "outcome")
    collisions = {c["tool"]: c["servers"] for c in outcome["detail"]["collisions"]}
    assert "everything" in collisions["echo"]
    assert "scripted" not in collisions["echo"]


@pytest.fixture(scope="module")
def blocking_stack(tmp_path_factory):
    # A bundle that blocks a whole server from a tool score of 90.
    with stack_with_data(tmp_path_factory, "blocking", {
            "    block_server_from: null\n": "    block_server_from: 90\n"}) as stack:
        yield stack


def test_a_poisoned_tool_blocks_its_whole_server_when_policy_says_so(blocking_stack):
    stack = blocking_stack
    token = stack.mint()

    async def scenario():
        async with connect(stack.url("scripted"), token) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            listing_trace = client.recorder.trace_of("tools/list", None)
            with pytest.raises(MCPError) as denied:
                await client.call_tool("echo", {"message": "hi"})
            return names, listing_trace, denied.value, client.recorder.trace_of("tools/call", "echo")

    names, listing_trace, denied, call_trace = anyio.run(scenario)
    # add_numbers scores 100: none of the server's tools is listed, and echo is refused.
    assert names == []
    outcome = next(e["event"] for e in stack.wait_trace(listing_trace)
                   if e["event"]["kind"] == "outcome")
    assert outcome["detail"]["serverBlocked"] == {"tool": "add_numbers", "score": 100}
    assert denied.error.code == POLICY_DENIED
    assert "server 'scripted' is blocked: its tool 'add_numbers' scores 100" in denied.error.message
    decision = next(e["event"] for e in stack.wait_trace(call_trace)
                    if e["event"]["kind"] == "decision")
    assert "behavry.server.poisoned" in decision["detail"]["ruleIds"]
    # server-everything is not affected.
    async def other():
        async with connect(stack.url("everything"), token) as client:
            return await client.call_tool("echo", {"message": "fine"})
    assert "fine" in anyio.run(other).content[0].text
