"""Blast radius and the evaluation budget through Envoy (docs/policy.md, "Blast radius",
"Blast radius counters" and "Evaluation budget").

Each stack serves its own copy of `policies/` with small budgets (`budgets.agent."1m".calls: 5`,
`budgets.chain."1m".calls: 3`):

- in memory, the sixth call of an agent in the minute is denied with JSON-RPC -32080 and
  `behavry.budget.exceeded`, and the audit decision holds the rule;
- in Redis, two stacks (two Envoys, two sidecars) on the same prefix share one budget, for an
  agent and for a delegation chain; a sidecar on another prefix counts on its own;
- a rule that outlasts `decision_timeout_ms` fails closed (-32081) and nothing reaches the
  upstream, while ordinary calls on the same sidecar pass;
- a sidecar whose Redis is unreachable does not start, and says why.

The Redis stacks use a random key prefix per run; every key under it is deleted afterwards.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from harness import AGENT, ROOT, Stack, http, wait_until

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}"
AGENT_LIMIT = 5
CHAIN_LIMIT = 3
POLICY_DENIED = -32080
AUTHZ_UNAVAILABLE = -32081
EXCEEDED = "behavry.budget.exceeded"
# An agent of its own for the evaluation-budget test, so that its calls do not spend the budget
# of the agent the budget test counts.
TIMEOUT_AGENT = "e2e-timeout-agent"
# The evaluation budget of the memory stack: above what an ordinary decision of the debug build
# takes on a busy machine (5 ms was overrun by plain calls), below the filter's 1 s timeout.
DECISION_TIMEOUT_MS = 250
# Far more than `decision_timeout_ms` of evaluation (9 million iterations) without a large
# allocation: only a working execution timer answers before the filter's own 1 s timeout.
SLOW_RULE = """package behavry.authz

import rego.v1

denials contains {"rule": "e2e.slow", "reason": "a deliberately slow rule"} if {
\tinput.request.arguments.slow == true
\tcount([1 | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000); (x * y) % 7 == 0]) < 0
}
"""
# An agent whose role allows BYTES_LIMIT response bytes an hour: three answers of BIG_BYTES pass,
# the fourth call is refused once the filter has reported them.
BYTES_AGENT = "e2e-bytes-agent"
BYTES_LIMIT = 20_000
BIG_BYTES = 8_000
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


# -- Redis, spoken directly (RESP2) so the tests need no client package ----------------------
def _redis(*args: str) -> object:
    """One command on a fresh connection; answers the decoded reply."""
    with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=5) as sock:
        out = f"*{len(args)}\r\n".encode()
        for arg in args:
            raw = arg.encode()
            out += b"$%d\r\n%s\r\n" % (len(raw), raw)
        sock.sendall(out)
        reader = sock.makefile("rb")

        def reply():
            line = reader.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:]
            if kind == b"+":
                return rest.decode()
            if kind == b"-":
                raise RuntimeError(f"Redis error: {rest.decode()}")
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                return None if size < 0 else reader.read(size + 2)[:-2].decode()
            if kind == b"*":
                size = int(rest)
                return None if size < 0 else [reply() for _ in range(size)]
            raise RuntimeError(f"unexpected Redis reply {line!r}")

        return reply()


def redis_keys(prefix: str) -> list[str]:
    keys, cursor = [], "0"
    while True:
        cursor, batch = _redis("SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000")
        keys += batch
        if cursor == "0":
            return keys


def delete_keys(prefix: str) -> None:
    for key in redis_keys(prefix):
        _redis("DEL", key)


def redis_store(prefix: str, url: str = REDIS_URL) -> str:
    return f'[blast_radius.store]\nbackend = "redis"\nurl = "{url}"\nprefix = "{prefix}"\n'


# -- stacks -----------------------------------------------------------------------------------
def small_budget_policies(folder: Path, slow_rule: bool = False) -> Path:
    """A copy of the shipped bundle with small per-agent and per-chain budgets per minute."""
    shutil.copytree(ROOT / "policies", folder, dirs_exist_ok=True)
    data = folder / "data.yaml"
    text = data.read_text()
    budgets = re.search(r"\n  budgets:\n(?:    .*\n|\s*#.*\n|\s*\n)+", text)
    assert budgets, "policies/data.yaml has no budgets block"
    block = budgets.group(0)
    small = re.sub(r"(\n    agent:\n      1m: \{)calls: \d+", rf"\g<1>calls: {AGENT_LIMIT}", block)
    small = re.sub(r"(\n    chain:\n      1m: \{)calls: \d+", rf"\g<1>calls: {CHAIN_LIMIT}", small)
    assert small.count(f"calls: {AGENT_LIMIT}") == 1, block
    assert small.count(f"calls: {CHAIN_LIMIT}") == 1, block
    # A role with a small hourly `bytes` budget (response bytes, reported by the filter).
    roles = "\n    roles:\n"
    assert roles in small, block
    small = small.replace(roles, roles + f"      bytes-tester:\n        1h: {{bytes: {BYTES_LIMIT}}}\n")
    data.write_text(text.replace(block, small))
    if slow_rule:
        (folder / "slow_e2e.rego").write_text(SLOW_RULE)
    return folder


@pytest.fixture(scope="module")
def memory_stack(tmp_path_factory):
    """In-memory counters, small budgets, the slow rule and a short evaluation budget."""
    policies = small_budget_policies(tmp_path_factory.mktemp("budget-policies"), slow_rule=True)
    extra = (f"decision_timeout_ms = {DECISION_TIMEOUT_MS}\n\n"
             f"[[agents]]\nid = \"{TIMEOUT_AGENT}\"\n[agents.servers.raw]\ntools = [\"raw\"]\n"
             f"[[agents]]\nid = \"{BYTES_AGENT}\"\nroles = [\"bytes-tester\"]\n"
             "[agents.servers.scripted]\ntools = [\"big\"]\n")
    stack = Stack(tmp_path_factory.mktemp("budget-stack"), name="blast-radius-memory",
                  policy_dir=policies, authz_extra=extra)
    with stack.running() as s:
        yield s


@pytest.fixture(scope="module")
def redis_prefix():
    prefix = f"behavry:e2e-blast:{secrets.token_hex(6)}:"
    yield prefix
    delete_keys(prefix)


@pytest.fixture(scope="module")
def redis_stacks(tmp_path_factory, redis_prefix):
    """Two whole stacks counting in the same Redis under the same prefix."""
    policies = small_budget_policies(tmp_path_factory.mktemp("fleet-policies"))
    first = Stack(tmp_path_factory.mktemp("fleet-a"), name="blast-radius-redis-a",
                  policy_dir=policies, authz_extra=redis_store(redis_prefix))
    second = Stack(tmp_path_factory.mktemp("fleet-b"), name="blast-radius-redis-b",
                   policy_dir=policies, authz_extra=redis_store(redis_prefix))
    with first.running() as a, second.running() as b:
        yield a, b


# -- calls ------------------------------------------------------------------------------------
def call_raw(stack: Stack, token: str, server: str = "raw", arguments: dict | None = None) -> dict:
    """One governed `tools/call` of the scripted server's raw tool, over plain HTTP."""
    trace_id = secrets.token_hex(16)
    path = "/echo-headers" if server == "raw" else "/raw/echo-headers"
    status, _, body = http("POST", stack.url(server) + path, json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "raw", "arguments": arguments or {}}}).encode(), {
        "authorization": f"Bearer {token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}, timeout=30)
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {"text": body.decode(errors="replace")}
    return {"trace": trace_id, "status": status, "answer": answer}


def allowed(result: dict) -> bool:
    return result["status"] == 200 and "result" in result["answer"]


def error_of(result: dict) -> dict:
    return result["answer"].get("error") or {}


def assert_exceeded(result: dict, scope: str, limit: int) -> None:
    error = error_of(result)
    assert error.get("code") == POLICY_DENIED, result
    assert error["data"]["ruleIds"] == [EXCEEDED], result
    reason = f"{scope} budget exceeded: {limit} calls in 1m (limit {limit})"
    assert error["data"]["reason"] == reason, result
    assert reason in error["message"], result


def spend_until_denied(stack: Stack, token: str, limit: int, **kwargs) -> int:
    """Calls until one is denied for the budget; answers how many passed (at most `limit`)."""
    for passed in range(limit + 1):
        result = call_raw(stack, token, **kwargs)
        if not allowed(result):
            assert_exceeded(result, "agent", limit)
            return passed
    raise AssertionError(f"{limit + 1} calls passed a budget of {limit}")


def delegated_token(stack: Stack) -> str:
    """helper-1 acting for orchestrator (RFC 8693), issued by this stack's sidecar."""
    form = {"grant_type": GRANT, "subject_token": stack.mint("orchestrator"),
            "subject_token_type": ACCESS_TOKEN, "actor_token": stack.mint("helper-1"),
            "actor_token_type": ACCESS_TOKEN}
    status, _, body = http("POST", f"{stack.authz_url()}/oauth/token",
                           urllib.parse.urlencode(form).encode(),
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, body
    return json.loads(body)["access_token"]


def decision_event(stack: Stack, trace_id: str) -> dict:
    events = stack.wait_trace(trace_id)
    return next(e["event"] for e in events if e["event"]["kind"] == "decision")


# -- tests ------------------------------------------------------------------------------------
def test_the_call_over_the_agent_budget_is_denied_and_audited(memory_stack):
    stack = memory_stack
    token = stack.mint(AGENT)
    before = stack.upstream_requests()
    passed = [call_raw(stack, token) for _ in range(AGENT_LIMIT)]
    assert all(allowed(r) for r in passed), [r for r in passed if not allowed(r)]
    assert stack.upstream_requests() == before + AGENT_LIMIT
    granted = decision_event(stack, passed[0]["trace"])["detail"]
    assert granted["allow"] is True and granted["ruleIds"] == ["behavry.tools.granted"], granted

    over = call_raw(stack, token)
    assert_exceeded(over, "agent", AGENT_LIMIT)
    assert over["answer"]["error"]["data"]["traceId"] == over["trace"]
    assert stack.upstream_requests() == before + AGENT_LIMIT
    detail = decision_event(stack, over["trace"])["detail"]
    assert detail["allow"] is False
    assert detail["ruleIds"] == [EXCEEDED]
    assert detail["reasons"] == [
        f"agent budget exceeded: {AGENT_LIMIT} calls in 1m (limit {AGENT_LIMIT})"]

    # Denied calls are not counted, and the budget stays spent: the next one is refused too.
    assert_exceeded(call_raw(stack, token), "agent", AGENT_LIMIT)


def test_response_bytes_count_against_the_budget(memory_stack):
    """The filter reports the size of each budgeted answer; once an agent's answers reach its
    `bytes` budget, its next call is refused (`behavry.budget.bytes_exceeded`)."""
    stack = memory_stack
    token = stack.mint(BYTES_AGENT)

    def big() -> dict:
        trace = secrets.token_hex(16)
        body = json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                           "params": {"name": "big", "arguments": {"bytes": BIG_BYTES}}})
        status, _, answer = http("POST", stack.url("scripted-json"), body.encode(), {
            "authorization": f"Bearer {token}", "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01"}, timeout=30)
        return {"trace": trace, "status": status, "answer": json.loads(answer)}

    for _ in range(3):
        passed = big()
        assert "result" in passed["answer"], passed
        assert len(passed["answer"]["result"]["content"][0]["text"]) == BIG_BYTES

    def refused():
        result = big()
        error = result["answer"].get("error")
        return result if error else None

    # The reports travel on the workers' timers: the refusal comes within a few ticks.
    result = wait_until("the bytes budget to be spent", refused, timeout=10, interval=0.3)
    error = result["answer"]["error"]
    assert error["code"] == POLICY_DENIED, result
    assert error["data"]["ruleIds"] == ["behavry.budget.bytes_exceeded"], result
    assert f"bytes returned in 1h (limit {BYTES_LIMIT})" in error["data"]["reason"], result


def test_a_decision_over_its_time_budget_fails_closed(memory_stack):
    stack = memory_stack
    token = stack.mint(TIMEOUT_AGENT)
    assert allowed(call_raw(stack, token))
    before = stack.upstream_requests()

    slow = call_raw(stack, token, arguments={"slow": True})
    error = error_of(slow)
    assert error.get("code") == AUTHZ_UNAVAILABLE, slow
    assert "fail closed" in error["message"], slow
    # The sidecar's own timeout answered (HTTP 500 policy_error), not the filter's 1 s timeout.
    reason = error["data"]["reason"]
    assert "HTTP 500" in reason and "policy_error" in reason, slow
    # The interpreter writes the limit in ns, the Rego VM in ms (policy_engine "auto" may use either).
    assert "time limit" in reason.lower(), slow
    assert (f"limit={DECISION_TIMEOUT_MS * 1_000_000}ns" in reason
            or f"limit={DECISION_TIMEOUT_MS}ms" in reason), slow
    assert stack.upstream_requests() == before
    detail = decision_event(stack, slow["trace"])["detail"]
    assert detail["allow"] is False and detail["failureMode"] == "closed", detail
    assert "policy_error" in detail["authzUnavailable"], detail

    # The same sidecar keeps deciding ordinary calls.
    ordinary = call_raw(stack, token, arguments={"slow": False})
    assert allowed(ordinary), ordinary
    assert stack.upstream_requests() == before + 1


def test_sidecars_on_one_redis_prefix_share_the_agent_budget(redis_stacks, redis_prefix):
    a, b = redis_stacks
    token_a, token_b = a.mint(AGENT), b.mint(AGENT)
    first = [call_raw(a, token_a) for _ in range(3)]
    assert all(allowed(r) for r in first), first
    rest = [call_raw(b, token_b) for _ in range(AGENT_LIMIT - 3)]
    assert all(allowed(r) for r in rest), rest
    # The third call through B is the sixth of the agent: B counted A's calls.
    assert_exceeded(call_raw(b, token_b), "agent", AGENT_LIMIT)
    assert_exceeded(call_raw(a, token_a), "agent", AGENT_LIMIT)
    assert redis_keys(redis_prefix), "no counter was written under the prefix"


def test_a_delegation_chain_budget_is_shared_fleet_wide(redis_stacks):
    a, b = redis_stacks
    token_a, token_b = delegated_token(a), delegated_token(b)
    first = [call_raw(a, token_a, server="exchanged") for _ in range(CHAIN_LIMIT - 1)]
    assert all(allowed(r) for r in first), first
    assert allowed(call_raw(b, token_b, server="exchanged"))
    # The chain's fourth call, through either stack, is over the chain's budget of 3 (the
    # orchestrator's own budget of 5 is not spent yet).
    assert_exceeded(call_raw(b, token_b, server="exchanged"), "chain", CHAIN_LIMIT)
    assert_exceeded(call_raw(a, token_a, server="exchanged"), "chain", CHAIN_LIMIT)


def test_sidecars_on_different_prefixes_do_not_share(redis_stacks, redis_prefix):
    a, b = redis_stacks
    token_a, token_b = a.mint(AGENT), b.mint(AGENT)
    # The agent's budget under the shared prefix is spent (whatever ran before).
    spend_until_denied(a, token_a, AGENT_LIMIT)

    other_prefix = f"behavry:e2e-blast:{secrets.token_hex(6)}:"
    shared = b.authz_config.read_text()
    assert shared.count(f'prefix = "{redis_prefix}"') == 1
    b.authz_config.write_text(shared.replace(f'prefix = "{redis_prefix}"',
                                             f'prefix = "{other_prefix}"'))
    try:
        b.restart("authz")
        # B now counts on its own: a full budget, then a denial; A still refuses.
        assert spend_until_denied(b, token_b, AGENT_LIMIT) == AGENT_LIMIT
        assert_exceeded(call_raw(a, token_a), "agent", AGENT_LIMIT)
        assert redis_keys(other_prefix)
    finally:
        b.authz_config.write_text(shared)
        b.restart("authz")
        delete_keys(other_prefix)


def test_the_sidecar_does_not_start_without_its_redis(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("no-redis"), name="blast-radius-no-redis",
                  authz_extra=redis_store("behavry:e2e-blast:unused:", url="redis://127.0.0.1:1"))
    sidecar = stack.authz()
    # Run in the foreground: it must exit by itself (the connect timeout is 2 s).
    done = subprocess.run([str(a) for a in sidecar.argv], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **sidecar.env})
    sidecar.log_path.write_text(done.stdout + done.stderr)
    assert done.returncode != 0, done
    log = done.stdout + done.stderr
    assert "authz-sidecar cannot run: blast radius counters: cannot connect to Redis at 127.0.0.1:1" in log, log
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", stack.ports["authz"]), timeout=1).close()
