"""2. Streamed (SSE) results arrive event by event, and server→client requests inside a call work.

The causal proof of streaming: `ask_client` sends a server→client request on the call's SSE
stream and does not finish until the client has answered it. Had the filter buffered the stream,
the client would never see the request and the call could not complete.
"""
from __future__ import annotations

import anyio
import mcp_types as types

from mcp_client import connect


def test_progress_notifications_stream_through(stack, token):
    steps = 5
    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, total))

    async def scenario():
        async with connect(stack.url("scripted"), token) as client:
            result = await client.call_tool("progress", {"steps": steps, "delayMs": 100},
                                            progress_callback=on_progress)
            return result, client.recorder.trace_of("tools/call", "progress")

    result, trace_id = anyio.run(scenario)
    assert not result.is_error
    assert result.content[0].text == f"done after {steps} steps"
    assert [p for p, _ in seen] == [float(i) for i in range(1, steps + 1)]
    outcome = [e for e in stack.wait_trace(trace_id) if e["event"]["kind"] == "outcome"][0]
    assert outcome["event"]["detail"]["isError"] is False


def test_server_to_client_request_inside_a_call_needs_streaming(stack, token):
    asked = []

    async def on_elicit(context, params):
        asked.append(params)
        return types.ElicitResult(action="accept", content={"answer": "forty-two"})

    async def on_sampling(context, params):
        asked.append(params)
        return types.CreateMessageResult(role="assistant", model="test",
                                         content=types.TextContent(type="text", text="forty-two"))

    async def scenario():
        async with connect(stack.url("scripted"), token, elicitation_callback=on_elicit,
                           sampling_callback=on_sampling, read_timeout_seconds=20) as client:
            return await client.call_tool("ask_client", {"question": "the answer?"})

    result = anyio.run(scenario)
    assert asked, "the server's request never reached the client"
    assert not result.is_error, result
    assert "forty-two" in result.content[0].text


def test_server_everything_progress_through_behavry(stack, token):
    seen = []

    async def on_progress(progress, total, message):
        seen.append(progress)

    async def scenario():
        async with connect(stack.url("everything"), token) as client:
            return await client.call_tool("trigger-long-running-operation",
                                          {"duration": 1, "steps": 4}, progress_callback=on_progress)

    result = anyio.run(scenario)
    assert "Long running operation completed" in result.content[0].text
    assert seen == [1.0, 2.0, 3.0, 4.0]
