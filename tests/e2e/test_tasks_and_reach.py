"""Requests that reach what a governed call names are decided too (docs/policy.md, "Methods
decided"): a task is its creator's alone, and its result is redacted as the tool's would be; a
completion or a subscription cannot reach a prompt or a resource the agent may not use. Raw
JSON-RPC over real sessions, against the scripted rmcp server (tasks extension, one task store for
all sessions, as a server behind one shared credential has) and server-everything."""
from __future__ import annotations

import json
import secrets

import pytest

from harness import Stack, http, stack_with_data, wait_until

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
VERSION = "2025-11-25"
INVALID_PARAMS = -32602
RESOURCE_NOT_FOUND = -32002
TASK_NOT_FOUND = "Failed to retrieve task: Task not found"


class Session:
    """An MCP session opened with `initialize`, on Behavry's route (`token` given) or directly
    on the upstream; each request gets a fresh traceparent, kept in `self.trace`."""

    def __init__(self, url: str, token: str | None, capabilities: dict | None = None):
        self.url, self.token, self.session, self.trace = url, token, None, None
        answer = self.request("initialize", {
            "protocolVersion": VERSION, "capabilities": capabilities or {},
            "clientInfo": {"name": "behavry-e2e", "version": "1"}})
        assert "result" in answer, answer
        self.notify("notifications/initialized")

    def _post(self, body: dict) -> tuple[int, dict, bytes]:
        self.trace = secrets.token_hex(16)
        headers = {"content-type": "application/json",
                   "accept": "application/json, text/event-stream",
                   "traceparent": f"00-{self.trace}-{secrets.token_hex(8)}-01"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        if self.session:
            headers["mcp-session-id"] = self.session
            headers["mcp-protocol-version"] = VERSION
        return http("POST", self.url, json.dumps(body).encode(), headers)

    def notify(self, method: str) -> None:
        status, _, _ = self._post({"jsonrpc": "2.0", "method": method})
        assert status == 202, status

    def request(self, method: str, params: dict | None = None) -> dict:
        """The JSON-RPC answer (from a JSON body or the SSE event that carries it)."""
        body = {"jsonrpc": "2.0", "id": 7, "method": method}
        if params is not None:
            body["params"] = params
        status, headers, raw = self._post(body)
        self.session = self.session or headers.get("mcp-session-id")
        if headers.get("content-type", "").startswith("text/event-stream"):
            for line in raw.decode().splitlines():
                if line.startswith("data:") and line[5:].strip():
                    message = json.loads(line[5:])
                    if message.get("id") == 7:
                        return message
            raise AssertionError(f"no answer in the stream: {raw!r}")
        return json.loads(raw)


@pytest.fixture(scope="module")
def task_stack(tmp_path_factory):
    # The scripted server's report is redacted wherever its result goes.
    with stack_with_data(tmp_path_factory, "tasks", {
            "  redact: {}\n": '  redact:\n    scripted:\n      report: ["/content/0/text"]\n'}) as s:
        yield s


def tasks_session(stack: Stack, agent: str | None) -> Session:
    """A session declaring the tasks extension, through Behavry as `agent`, or directly."""
    capabilities = {"extensions": {TASKS_EXTENSION: {}}}
    if agent is None:
        return Session(stack.direct_url("scripted"), None, capabilities)
    return Session(stack.url("scripted"), stack.mint(agent), capabilities)


def decision(stack: Stack, trace: str) -> dict:
    events = stack.wait_trace(trace)
    return next(e["event"]["detail"] for e in events if e["event"]["kind"] == "decision")


def completed(session: Session, task_id: str) -> dict:
    def done():
        answer = session.request("tasks/get", {"taskId": task_id})
        return answer if answer.get("result", {}).get("status") == "completed" else None
    return wait_until(f"task {task_id} to complete", done, timeout=10, interval=0.05)


def test_a_task_is_its_creators_alone_and_its_result_is_redacted(task_stack):
    stack = task_stack
    owner = tasks_session(stack, "demo-agent")
    created = owner.request("tools/call", {"name": "report", "arguments": {"topic": "q3",
                                                                           "delayMs": 50}})
    task = created["result"]
    assert task["resultType"] == "task", created
    task_id = task["taskId"]
    outcome = next(e["event"]["detail"] for e in stack.wait_trace(owner.trace)
                   if e["event"]["kind"] == "outcome")
    assert outcome["taskId"] == task_id

    # The owner polls its task: the result arrives, redacted where policy points for the tool.
    answer = completed(owner, task_id)
    assert answer["result"]["result"]["content"][0]["text"] == "[REDACTED]", answer
    detail = decision(stack, owner.trace)
    assert detail["allow"] is True and detail["ruleIds"] == ["behavry.tools.granted"]
    assert detail["obligations"]["redact"] == ["/result/content/0/text"]
    # The server alone would hand the result to anyone with the id, in clear.
    direct = tasks_session(stack, None).request("tasks/get", {"taskId": task_id})
    assert direct["result"]["result"]["content"][0]["text"] == "report on q3: done"

    # Another agent, granted the same tool on the same server, does not know the task.
    peer = tasks_session(stack, "task-peer")
    for method in ("tasks/get", "tasks/cancel"):
        answer = peer.request(method, {"taskId": task_id})
        assert answer["error"]["code"] == INVALID_PARAMS, answer
        assert answer["error"]["message"] == TASK_NOT_FOUND
        detail = decision(stack, peer.trace)
        # Refused by the proxy itself, before (and whatever) policy.
        assert detail["ruleIds"] == ["behavry.tasks.not_owned"]
        assert detail["decidedBy"] == "proxy"
    # A made-up id is unknown too, and never reaches the server's store.
    answer = owner.request("tasks/get", {"taskId": "not-a-task"})
    assert answer["error"]["message"] == TASK_NOT_FOUND
    # Its own task it may use.
    mine = peer.request("tools/call", {"name": "report", "arguments": {"topic": "mine"}})
    assert completed(peer, mine["result"]["taskId"])["result"]["status"] == "completed"


def test_completions_and_subscriptions_reach_only_what_the_agent_may_use(stack, token):
    session = Session(stack.url("everything"), token)
    ref = {"type": "ref/prompt", "name": "completable-prompt"}
    answer = session.request("completion/complete", {
        "ref": ref, "argument": {"name": "department", "value": "E"}})
    assert answer["error"] == {"code": INVALID_PARAMS,
                               "message": "Unknown prompt: completable-prompt",
                               "data": {"traceId": session.trace}}
    assert decision(stack, session.trace)["ruleIds"] == ["behavry.prompts.not_granted"]
    # An agent granted the prompt completes it through Behavry.
    granted = Session(stack.url("everything"), stack.mint("conformance-agent"))
    answer = granted.request("completion/complete", {
        "ref": ref, "argument": {"name": "department", "value": "E"}})
    assert "Engineering" in answer["result"]["completion"]["values"], answer

    answer = session.request("resources/subscribe", {"uri": "demo://resource/dynamic/text/1"})
    assert answer["error"]["code"] == RESOURCE_NOT_FOUND, answer
    assert decision(stack, session.trace)["ruleIds"] == ["behavry.resources.not_granted"]
    uri = "demo://resource/static/document/architecture.md"
    answer = session.request("resources/subscribe", {"uri": uri})
    assert answer.get("result") == {}, answer
    assert decision(stack, session.trace)["allow"] is True
