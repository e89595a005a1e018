"""Policy hot reload (docs/authz.md, "Reloading the bundle"): the sidecar re-reads its policy
folder while governed calls flow through Envoy. A valid change takes effect within a few seconds
without failing a call; a bundle that does not compile is refused, the previous one stays in force
and `GET /healthz` shows the error; every decision's audit event carries the digest in force.

This test edits a copy of `policies/` served by its own stack, never the repo's bundle."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

import pytest

from harness import ROOT, Stack, http, wait_until

# The sidecar polls every `policy_reload_ms` (1 s by default): a change shows well within this.
PICKUP_TIMEOUT = 10.0
# A worker's table poll (`inline.pollIntervalMs`, 1 s) with room for the poll itself.
LEASE_POLL_GRACE = 2.0
MIN_CALLS = 200
MAX_CALLS = 3000
POLICY_DENIED = -32080
AUTHZ_UNAVAILABLE = -32081
NEW_RULE = "e2e.reload.raw_frozen"
EXTRA_FILE = "reload_e2e.rego"
VALID_EXTRA = f"""package behavry.authz

import rego.v1

denials contains {{"rule": "{NEW_RULE}", "reason": "the raw tool is frozen by a reloaded policy"}} if {{
\tinput.request.tool == "raw"
}}
"""
BROKEN_EXTRA = "package behavry.authz\n\nimport rego.v1\n\ndenials contains {\"rule\": \n"
CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "raw", "arguments": {}}}).encode()


def write_atomically(path: Path, text: str) -> None:
    """Whole files only: a `.tmp` name is not part of the bundle, then one rename."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def reload_stack(tmp_path_factory):
    policies = tmp_path_factory.mktemp("reload-policies")
    shutil.copytree(ROOT / "policies", policies, dirs_exist_ok=True)
    stack = Stack(tmp_path_factory.mktemp("reload-stack"), name="policy-reload", policy_dir=policies)
    with stack.running() as s:
        yield s


def health(stack) -> dict:
    status, _, body = http("GET", stack.authz_url() + "/healthz")
    assert status == 200, body
    return json.loads(body)["policy"]


def governed_call(stack, token: str) -> dict:
    trace_id = secrets.token_hex(16)
    started = time.monotonic()
    status, _, body = http("POST", stack.url("raw") + "/echo-headers", CALL, {
        "authorization": f"Bearer {token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    return {"trace": trace_id, "at": started, "done": time.monotonic(), "status": status,
            "answer": answer,
            "text": body.decode(errors="replace")}


def denied_by_new_rule(result: dict) -> bool:
    error = (result["answer"] or {}).get("error") or {}
    return error.get("code") == POLICY_DENIED and error.get("data", {}).get("ruleIds") == [NEW_RULE]


def allowed(result: dict) -> bool:
    return result["status"] == 200 and "result" in (result["answer"] or {})


def decision_digest(stack, trace_id: str) -> str:
    events = stack.wait_trace(trace_id)
    return next(e["event"] for e in events
                if e["event"]["kind"] == "decision")["detail"]["bundleDigest"]


@pytest.mark.slow
def test_bundle_reloads_under_load_and_a_broken_one_is_refused(reload_stack):
    stack = reload_stack
    token = stack.mint()
    extra = stack.policy_dir / EXTRA_FILE
    start = health(stack)
    assert start["digest"].startswith("sha256:")
    assert start["lastError"] is None

    results: list[dict] = []
    stop = threading.Event()

    def load():
        while len(results) < MAX_CALLS and (len(results) < MIN_CALLS or not stop.is_set()):
            results.append(governed_call(stack, token))
            time.sleep(0.01)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        wait_until("calls to flow", lambda: len(results) >= 10, timeout=30)

        # A valid change: a new deny rule for the raw tool.
        changed_at = time.monotonic()
        write_atomically(extra, VALID_EXTRA)
        reloaded = wait_until("the new bundle to be in force",
                              lambda: (h := health(stack))["digest"] != start["digest"] and h,
                              timeout=PICKUP_TIMEOUT)
        assert reloaded["lastError"] is None
        assert reloaded["reloadedAt"] is not None
        wait_until("a call denied by the new rule",
                   lambda: any(denied_by_new_rule(r) for r in list(results)),
                   timeout=PICKUP_TIMEOUT)

        # A syntax error: refused, the previous bundle kept, the error on /healthz.
        write_atomically(extra, BROKEN_EXTRA)
        refused = wait_until("the broken bundle to be refused",
                             lambda: (h := health(stack))["lastError"] and h,
                             timeout=PICKUP_TIMEOUT)
        assert EXTRA_FILE in refused["lastError"], refused
        assert refused["digest"] == reloaded["digest"]
        # Calls after the refusal, and past the table poll that ends the old bundle's leases.
        first_denial_at = next(r["at"] for r in list(results) if denied_by_new_rule(r))
        refused_seen = max(time.monotonic(), first_denial_at + LEASE_POLL_GRACE)
        wait_until("calls after the refusal",
                   lambda: sum(r["at"] > refused_seen for r in list(results)) >= 10, timeout=30)
    finally:
        stop.set()
        worker.join(timeout=120)
    assert not worker.is_alive()

    # Not one call failed for want of a decision, or with a server error.
    assert len(results) >= MIN_CALLS
    failed = [r for r in results if r["status"] >= 500 or str(AUTHZ_UNAVAILABLE) in r["text"]]
    assert not failed, failed[:3]
    # Every call was either allowed (old bundle) or denied by the new rule: nothing else.
    odd = [r for r in results if not allowed(r) and not denied_by_new_rule(r)]
    assert not odd, odd[:3]

    before = [r for r in results if r["done"] < changed_at]
    first_denial = next(r for r in results if denied_by_new_rule(r))
    assert before and all(allowed(r) for r in before)
    assert first_denial["at"] - changed_at < PICKUP_TIMEOUT
    after_refusal = [r for r in results if r["at"] > refused_seen]
    assert after_refusal and all(denied_by_new_rule(r) for r in after_refusal)
    # Once denied, never allowed again — past the table poll that tells every Envoy worker of the
    # new bundle (until then a worker may still allow under a lease granted by the old one:
    # docs/policy.md, "Leases") — and the broken bundle did not bring back the old one.
    settled = first_denial["at"] + LEASE_POLL_GRACE
    assert all(denied_by_new_rule(r) for r in results if r["at"] > settled)

    # The audit record names the bundle that decided each call.
    assert decision_digest(stack, before[0]["trace"]) == start["digest"]
    assert decision_digest(stack, first_denial["trace"]) == reloaded["digest"]
    assert decision_digest(stack, after_refusal[-1]["trace"]) == reloaded["digest"]
    assert health(stack)["digest"] == reloaded["digest"]

    # Removing the file goes back to the shipped bundle and clears the error.
    extra.unlink()
    restored = wait_until("the shipped bundle to be back",
                          lambda: (h := health(stack))["digest"] == start["digest"] and h,
                          timeout=PICKUP_TIMEOUT)
    assert restored["lastError"] is None
    assert allowed(governed_call(stack, token))

    # Every change of the bundle in force is in the audit log, the refusal with its error.
    def changes():
        events = [e for e in stack.policy_events()
                  if e["request"]["method"].startswith("policy/")]
        return events if [e["detail"]["outcome"] for e in events] == [
            "loaded", "applied", "refused", "applied"] else None
    loaded, applied, refusal, back = wait_until("the policy changes in the audit log", changes,
                                                timeout=PICKUP_TIMEOUT)
    assert loaded["detail"]["bundleDigest"] == start["digest"]
    assert applied["detail"] == {"outcome": "applied", "bundleDigest": reloaded["digest"],
                                 "previousDigest": start["digest"]}
    assert EXTRA_FILE in refusal["detail"]["error"]
    assert refusal["detail"]["bundleDigest"] == reloaded["digest"]
    assert back["detail"]["bundleDigest"] == start["digest"]
    verify = stack.cli("audit", "verify", "--db", str(stack.audit_db), check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


# A second `decision` for one request the bundle's own cases make (tests/default.yaml: a developer
# calling `echo` with "hi"): the warm-up input loads it, but that call would fail to evaluate.
CONFLICTING_EXTRA = """package behavry.authz

import rego.v1

decision := {"allow": true, "reasons": [], "ruleIds": ["e2e.reload.conflict"], "obligations": {}} if {
\tinput.request.tool == "echo"
\tinput.request.arguments.message == "hi"
}
"""


def test_a_bundle_that_fails_one_of_its_own_cases_is_refused_and_the_old_one_kept(reload_stack):
    stack = reload_stack
    token = stack.mint()
    extra = stack.policy_dir / EXTRA_FILE
    start = health(stack)
    assert start["lastError"] is None
    write_atomically(extra, CONFLICTING_EXTRA)
    try:
        refused = wait_until("the bundle to be refused",
                             lambda: (h := health(stack))["lastError"] and h,
                             timeout=PICKUP_TIMEOUT)
        assert "case `a developer may call a tool of its role`" in refused["lastError"], refused
        assert refused["digest"] == start["digest"]
        assert allowed(governed_call(stack, token))
    finally:
        extra.unlink()
    cleared = wait_until("the refusal to clear", lambda: (h := health(stack))["lastError"] is None
                         and h, timeout=PICKUP_TIMEOUT)
    assert cleared["digest"] == start["digest"]
