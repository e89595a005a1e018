"""Human approval through Envoy (docs/policy.md, "Human approval"): a destructive call is held,
the agent gets the MCP answer its revision understands (a URL-mode elicitation, -32042, when it
declared one; else -32089 naming the approval), an operator approves with `behavry approvals`,
the retried call goes through exactly once with the approver in its audit record, and a rejected
call stays refused.

The stack serves a copy of `policies/` in which the raw server's `raw` tool is destructive, and
an agent of its own that may call it."""
from __future__ import annotations

import json
import secrets

import pytest

from harness import Stack, http, policies_with

AGENT = "approval-agent"
APPROVAL_REQUIRED = -32089
URL_ELICITATION_REQUIRED = -32042
RULE = "behavry.destructive.needs_approval"


@pytest.fixture(scope="module")
def approval_stack(tmp_path_factory):
    marker = "  destructive_tools:\n"
    policies = policies_with(tmp_path_factory.mktemp("approval-policies"),
                             {marker: marker + "    raw: [raw]\n"})
    extra = (f'approval_ttl_secs = 300\n\n[[agents]]\nid = "{AGENT}"\n'
             '[agents.servers.raw]\ntools = ["raw"]\n')
    stack = Stack(tmp_path_factory.mktemp("approval-stack"), name="approvals",
                  policy_dir=policies, authz_extra=extra)
    with stack.running() as s:
        yield s


def call(stack: Stack, token: str, arguments: dict, url_elicitation: bool = False) -> dict:
    """One `tools/call` of the raw tool. With `url_elicitation`, as a 2026-07-28 client that
    declares URL-mode elicitation (capabilities in `_meta`, the standard headers sent)."""
    trace_id = secrets.token_hex(16)
    params: dict = {"name": "raw", "arguments": arguments}
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json",
               "accept": "application/json, text/event-stream",
               "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    if url_elicitation:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "approval-e2e", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}, "url": {}}},
        }
        headers.update({"mcp-method": "tools/call", "mcp-name": "raw",
                        "mcp-protocol-version": "2026-07-28"})
    body = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params})
    status, _, answer = http("POST", stack.url("raw") + "/echo-headers", body.encode(), headers,
                             timeout=30)
    return {"trace": trace_id, "status": status, "answer": json.loads(answer)}


def approvals_cli(stack: Stack, *args: str):
    return stack.cli("approvals", "--url", stack.authz_url(), *args,
                     env={"BEHAVRY_AUTHZ_ADMIN_TOKEN": stack.admin_token})


def decision_of(stack: Stack, trace: str) -> dict:
    events = stack.wait_trace(trace)
    return next(e["event"]["detail"] for e in events if e["event"]["kind"] == "decision")


def fresh_request(stack: Stack) -> tuple[str, dict, int]:
    """A token, arguments no earlier test used (so a request no approval exists for), and the
    upstream's request count before."""
    return stack.mint(AGENT), {"target": f"row-{secrets.token_hex(4)}"}, stack.upstream_requests()


def test_a_held_call_goes_through_once_after_approval(approval_stack):
    stack = approval_stack
    token, arguments, before = fresh_request(stack)

    # Held: a client without URL-mode elicitation gets -32089 with the approval's id.
    held = call(stack, token, arguments)
    error = held["answer"]["error"]
    assert error["code"] == APPROVAL_REQUIRED, held
    approval_id = error["data"]["approvalId"]
    assert approval_id.startswith("apr_")
    assert error["data"]["approvalStatus"] == "pending"
    assert error["data"]["ruleIds"] == [RULE]
    assert stack.upstream_requests() == before
    detail = decision_of(stack, held["trace"])
    assert detail["obligations"]["requireApproval"]["id"] == approval_id

    # The same call from a client that declared URL-mode elicitation: -32042 pointing at the
    # approval's page, for the same approval (same agent, tool and arguments).
    elicited = call(stack, token, arguments, url_elicitation=True)
    error = elicited["answer"]["error"]
    assert error["code"] == URL_ELICITATION_REQUIRED, elicited
    elicitation = error["data"]["elicitations"][0]
    assert elicitation["mode"] == "url"
    assert elicitation["elicitationId"] == approval_id
    status, _, page = http("GET", elicitation["url"])
    assert status == 200
    assert f"Approval {approval_id}: pending" in page.decode()
    assert arguments["target"] not in page.decode()

    listed = approvals_cli(stack, "list", "--status", "pending").stdout
    assert approval_id in listed and AGENT in listed and arguments["target"] in listed

    approved = approvals_cli(stack, "approve", approval_id, "--as", "alice").stdout
    assert "approved" in approved and "alice" in approved

    # The retry goes through, once, with the approver in its audit record.
    passed = call(stack, token, arguments)
    assert "result" in passed["answer"], passed
    assert stack.upstream_requests() == before + 1
    detail = decision_of(stack, passed["trace"])
    assert detail["allow"] is True
    assert detail["approval"] == {"id": approval_id, "approvedBy": "alice"}

    again = call(stack, token, arguments)
    error = again["answer"]["error"]
    assert error["code"] == APPROVAL_REQUIRED, again
    assert error["data"]["approvalId"] != approval_id
    assert stack.upstream_requests() == before + 1


def test_a_rejected_call_stays_refused(approval_stack):
    stack = approval_stack
    token, arguments, before = fresh_request(stack)
    held = call(stack, token, arguments)
    approval_id = held["answer"]["error"]["data"]["approvalId"]

    rejected = approvals_cli(stack, "reject", approval_id, "--as", "bob").stdout
    assert "rejected" in rejected and "bob" in rejected
    # Deciding again is refused with a clear message.
    late = stack.cli("approvals", "--url", stack.authz_url(), "approve", approval_id, "--as",
                     "carol", check=False, env={"BEHAVRY_AUTHZ_ADMIN_TOKEN": stack.admin_token})
    assert late.returncode == 2
    assert "already rejected" in late.stderr

    for client_can_elicit in (False, True):
        retry = call(stack, token, arguments, url_elicitation=client_can_elicit)
        error = retry["answer"]["error"]
        assert error["code"] == APPROVAL_REQUIRED, retry
        assert error["data"]["approvalStatus"] == "rejected"
        assert "was rejected" in error["message"]
    assert stack.upstream_requests() == before


def test_approvals_survive_a_sidecar_restart(approval_stack):
    stack = approval_stack
    token, arguments, _ = fresh_request(stack)
    approval_id = call(stack, token, arguments)["answer"]["error"]["data"]["approvalId"]
    approvals_cli(stack, "approve", approval_id, "--as", "alice")
    stack.services["authz"].stop()
    stack.services["authz"] = stack.authz().start()
    passed = call(stack, token, arguments)
    assert "result" in passed["answer"], passed
    assert decision_of(stack, passed["trace"])["approval"]["id"] == approval_id


@pytest.fixture(scope="module")
def approver_stack(tmp_path_factory):
    """The same policy, with one named approver, `carol`, configured from what
    `behavry approvals new-approver` printed."""
    marker = "  destructive_tools:\n"
    policies = policies_with(tmp_path_factory.mktemp("approver-policies"),
                             {marker: marker + "    raw: [raw]\n"})
    home = tmp_path_factory.mktemp("approver-stack")
    credential = home / "carol.token"
    made = Stack.cli("approvals", "new-approver", "carol", "--token-file", str(credential))
    assert "[[approvers]]" in made.stdout and credential.read_text().strip() not in made.stdout
    extra = (f'approval_ttl_secs = 300\n{made.stdout}\n\n[[agents]]\nid = "{AGENT}"\n'
             '[agents.servers.raw]\ntools = ["raw"]\n')
    stack = Stack(home, name="approvers", policy_dir=policies, authz_extra=extra)
    stack.approver_credential = credential
    with stack.running() as s:
        yield s


def test_with_named_approvers_only_their_own_credential_decides(approver_stack):
    stack = approver_stack
    token, arguments, before = fresh_request(stack)
    held = call(stack, token, arguments)
    approval_id = held["answer"]["error"]["data"]["approvalId"]

    # The admin credential still lists, but does not decide, whatever name it gives.
    assert approval_id in approvals_cli(stack, "list").stdout
    refused = stack.cli("approvals", "--url", stack.authz_url(), "approve", approval_id,
                        "--as", "carol", check=False,
                        env={"BEHAVRY_AUTHZ_ADMIN_TOKEN": stack.admin_token})
    assert refused.returncode != 0 and "named approvers" in refused.stderr, refused

    # Carol's own credential decides, in her name only.
    own = ["approvals", "--url", stack.authz_url(), "--approver-token-file",
           str(stack.approver_credential)]
    mismatch = stack.cli(*own, "approve", approval_id, "--as", "mallory", check=False)
    assert mismatch.returncode != 0 and "carol" in mismatch.stderr, mismatch
    approved = stack.cli(*own, "approve", approval_id).stdout
    assert "approved" in approved and "carol" in approved

    passed = call(stack, token, arguments)
    assert "result" in passed["answer"], passed
    assert stack.upstream_requests() == before + 1
    assert decision_of(stack, passed["trace"])["approval"] == {"id": approval_id,
                                                               "approvedBy": "carol"}
