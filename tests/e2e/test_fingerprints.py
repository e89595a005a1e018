"""Client fingerprints through real Envoy (docs/fingerprints.md).

Real clients call a tool through Behavry; the intent event of the call carries the fingerprint
the filter computed (from `initialize` for a session, from `_meta` in 2026-07-28), recognised
from the known-clients table, and the decision records whether it matches the clients the agent
is enrolled to use. A live capture of the installed clients checks the table against what they
send today.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import sys

import anyio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness import ROOT, wait_until
from mcp_client import connect
from test_identity import es256_assertion, request_token
from test_inspector import inspector

sys.path.insert(0, str(ROOT / "tests" / "fingerprints"))
import capture  # noqa: E402


def events_of(stack, trace_id: str) -> dict[str, dict]:
    events = stack.wait_trace(trace_id)
    return {e["event"]["kind"]: e["event"] for e in events}


def call_echo(stack, token: str, mode: str) -> str:
    # server-everything speaks the session revisions only; the scripted (rmcp) server both.
    server = "everything" if mode == "legacy" else "scripted"

    async def run():
        async with connect(stack.url(server), token, mode=mode) as client:
            await client.call_tool("echo", {"message": f"fingerprint {mode}"})
            return client.recorder.trace_of("tools/call", "echo")
    return anyio.run(run)


def test_python_sdk_is_recognised_in_both_protocol_generations(stack, token):
    for mode in ("legacy", "2026-07-28"):
        events = events_of(stack, call_echo(stack, token, mode))
        client = events["intent"]["request"]["client"]
        assert client["known"] == "python-mcp", (mode, client)
        assert client["clientName"] == "mcp"
        assert client["userAgent"].startswith("python-httpx")
        # The fingerprint is recorded once, with the intent.
        assert "client" not in events["decision"]["request"]
        # demo-agent names no clients: any client matches.
        assert events["decision"]["detail"]["clientMatches"] is True
    assert events["intent"]["request"]["protocolVersion"] == "2026-07-28"


def test_inspector_cli_is_recognised(stack, token):
    marker = f"inspector-{secrets.token_hex(4)}"
    run = inspector(stack.url("everything"), "--transport", "http", "--method", "tools/call",
                    "--tool-name", "echo", "--tool-arg", f"message={marker}",
                    "--header", f"Authorization: Bearer {token}")
    assert run.returncode == 0, run.stderr

    def intent():
        with sqlite3.connect(stack.audit_db) as db:
            for (body,) in db.execute("SELECT body FROM audit_records WHERE kind = 'intent' "
                                      "ORDER BY seq DESC LIMIT 50"):
                event = json.loads(body)
                if (event["request"].get("arguments") or {}).get("message") == marker:
                    return event
        return None

    event = wait_until("the inspector's call to be audited", intent, timeout=20)
    assert event["request"]["client"]["known"] == "mcp-inspector", event["request"]["client"]


def test_a_client_the_agent_is_not_enrolled_for_is_audited_as_a_mismatch(stack, tmp_path):
    agent = f"fingerprint-{secrets.token_hex(4)}"
    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = tmp_path / "agent.pub.pem"
    public_pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    stack.agent_cli("enroll", "--id", agent, "--tool", "everything:echo", "--client", "claude-code",
                    "--public-key", str(public_pem), "--kid", "k1")
    try:
        status, answer = request_token(
            stack, es256_assertion(key, "k1", agent, f"{stack.authz_url()}/oauth/token"))
        assert status == 200, answer
        events = events_of(stack, call_echo(stack, answer["access_token"], "legacy"))
        assert events["intent"]["request"]["client"]["known"] == "python-mcp"
        # Audited, not refused: the default bundle leaves enforcement to policy authors.
        assert events["decision"]["detail"]["allow"] is True
        assert events["decision"]["detail"]["clientMatches"] is False
    finally:
        stack.agent_cli("delete", agent, check=False)


def test_live_capture_of_the_installed_clients_matches_the_table():
    """The table was built from captures; the clients installed now still send what it knows."""
    records = capture.capture_all(only=["python-mcp-legacy", "typescript-sdk",
                                        "mcp-inspector-cli"])
    observed = {r["run"]: r for r in json.loads(
        (ROOT / "tests" / "fingerprints" / "observed.json").read_text())["runs"]}
    for record in records:
        assert "error" not in record, record.get("error")
        now, then = record["observation"], observed[record["run"]]["observation"]
        assert now["clientName"] == then["clientName"], record["run"]
        assert now["userAgent"] == then["userAgent"], record["run"]
        assert sorted(now["headerNames"]) == sorted(then["headerNames"]), record["run"]
