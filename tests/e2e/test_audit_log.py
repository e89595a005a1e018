"""The audit log's proofs end to end: calls through Envoy land in a log whose signed checkpoints,
export and verification work with the real sink and the `behavry audit` commands."""
from __future__ import annotations

import json

import anyio
from mcp import types
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from harness import http, wait_until
from mcp_client import connect


def audit_url(stack) -> str:
    return f"http://127.0.0.1:{stack.ports['audit']}"


def newest_checkpoint(stack) -> tuple[int, str] | None:
    status, _, body = http("GET", f"{audit_url(stack)}/v1/log/checkpoint")
    if status != 200:
        return None
    note = body.decode()
    return int(note.split("\n")[1]), note


def test_the_log_is_signed_exported_and_verified_against_a_kept_checkpoint(stack, token, tmp_path):
    async def calls():
        traces = []
        async with connect(stack.url("everything"), token) as client:
            for i in range(4):
                await client.call_tool("echo", {"message": f"audited {i}"})
                traces.append(client.recorder.trace_of("tools/call", "echo"))
        return traces

    traces = anyio.run(calls)
    for trace_id in traces:
        stack.wait_trace(trace_id)
    size = int(json.loads(http("GET", f"{audit_url(stack)}/v1/log/head")[2])["size"])
    # The sink signs within its interval once records arrived; keep one as a verifier would.
    size_kept, note = wait_until("a checkpoint covering the calls",
                                 lambda: (c := newest_checkpoint(stack)) and c[0] >= size and c)
    kept = tmp_path / "kept.note"
    kept.write_text(note)

    vkey = stack.cli("audit", "verifier-key", "--checkpoint-key", str(stack.checkpoint_key),
                     "--origin", stack.audit_origin).stdout.strip()
    assert vkey.startswith(stack.audit_origin + "+"), vkey

    # The live log, fetched whole from the running sink.
    live = stack.cli("audit", "verify", "--url", audit_url(stack), "--key", vkey,
                     "--checkpoint", str(kept))
    assert live.stdout.startswith("ok: "), live.stdout
    assert "signatures verified" in live.stdout and "1 kept checkpoints matched" in live.stdout

    # The database file, read-only while the sink runs.
    db = stack.cli("audit", "verify", "--db", str(stack.audit_db), "--key", vkey,
                   "--checkpoint", str(kept))
    assert db.stdout.startswith("ok: "), db.stdout

    # An export file with inclusion proofs, checked offline.
    export = tmp_path / "log.ndjson"
    stack.cli("audit", "export", "--db", str(stack.audit_db), "--proofs", "-o", str(export))
    lines = export.read_text().splitlines()
    assert json.loads(lines[0])["type"] == "header"
    assert any('"inclusion"' in line for line in lines)
    offline = stack.cli("audit", "verify", "--export", str(export), "--key", vkey,
                        "--checkpoint", str(kept))
    assert offline.stdout.startswith("ok: "), offline.stdout

    # One record's evidence over HTTP: its line, its proof, the checkpoint that covers it.
    status, headers, part = http(
        "GET", f"{audit_url(stack)}/v1/log/export?from=2&to=2&proofs=true")
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    evidence = stack.cli("audit", "verify", "--export", "-", "--key", vkey,
                         input_text=part.decode())
    assert evidence.stdout.startswith("ok: 1 records (seq 2..=2)"), evidence.stdout

    # A flipped byte in the export: named.
    record = next(i for i, line in enumerate(lines) if '"seq":3,' in line)
    lines[record] = lines[record].replace('\\"kind\\"', '\\"kinD\\"', 1)
    export.write_text("\n".join(lines) + "\n")
    tampered = stack.cli("audit", "verify", "--export", str(export), "--key", vkey, check=False)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert tampered.stdout.startswith("FAILED at record seq=3 "), tampered.stdout
    assert "body or hash altered" in tampered.stdout

    # Checkpoints signed by another key do not verify.
    other_key = tmp_path / "other.pem"
    other_key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    other = stack.cli("audit", "verifier-key", "--checkpoint-key", str(other_key),
                      "--origin", stack.audit_origin).stdout.strip()
    forged = stack.cli("audit", "verify", "--db", str(stack.audit_db), "--key", other,
                       check=False)
    assert forged.returncode == 1, forged.stdout + forged.stderr
    assert "has no signature by key" in forged.stdout, forged.stdout

    # Bad ranges are refused before anything is streamed.
    assert http("GET", f"{audit_url(stack)}/v1/log/export?from=0")[0] == 400
    assert http("GET", f"{audit_url(stack)}/v1/log/export?to=999999999")[0] == 404


def test_a_decision_trace_is_found_and_shown_as_a_tree_with_its_proofs(stack, token):
    """A call in which the server asks the client's model: searched by agent, tool and
    decision, then rendered with the request under the call and every record proved."""
    async def on_sampling(context, params):
        return types.CreateMessageResult(role="assistant", model="test",
                                         content=types.TextContent(type="text", text="forty-two"))

    async def scenario():
        async with connect(stack.url("scripted"), token, read_timeout_seconds=20,
                           sampling_callback=on_sampling) as client:
            result = await client.call_tool("ask_client", {"question": "what is six times seven"})
            return result, client.recorder.trace_of("tools/call", "ask_client")

    result, trace_id = anyio.run(scenario)
    assert result.content[0].text == "forty-two"
    events = stack.wait_trace(trace_id)
    outcome = next(e["event"] for e in events if e["event"]["kind"] == "outcome")
    assert outcome["detail"]["serverRequests"][0]["method"] == "sampling/createMessage"
    intent = next(e["event"] for e in events if e["event"]["kind"] == "intent")
    assert intent["detail"]["argumentsDigest"].startswith("hmac-sha256:")
    assert "parentSpanId" in intent

    found = stack.cli("traces", "--url", audit_url(stack), "--agent", intent["agent"],
                      "--tool", "ask_client", "--decision", "allow", "--since", "10m")
    assert found.stdout.startswith(trace_id), found.stdout
    denied = stack.cli("traces", "--url", audit_url(stack), "--tool", "ask_client",
                       "--decision", "deny")
    assert trace_id not in denied.stdout

    seq = max(e["seq"] for e in events)
    wait_until("a checkpoint covering the trace",
               lambda: (c := newest_checkpoint(stack)) and c[0] >= seq)
    vkey = stack.cli("audit", "verifier-key", "--checkpoint-key", str(stack.checkpoint_key),
                     "--origin", stack.audit_origin).stdout.strip()
    shown = stack.cli("trace", trace_id, "--url", audit_url(stack), "--key", vkey)
    text = shown.stdout
    assert f"trace {trace_id}  (3 records)" in text, text
    assert "proofs: 3 of 3 records in checkpoint" in text and "signature verified" in text, text
    assert f"client span {intent['parentSpanId']}" in text, text
    assert "tools/call ask_client" in text, text
    for kind in ("intent", "decision", "outcome"):
        assert any(line.lstrip("│├└─ ").startswith(kind) and line.endswith("✓")
                   for line in text.splitlines()), (kind, text)
    assert "server → client sampling/createMessage" in text, text

    # Another key: the checkpoint does not verify, and the command says so.
    other_key = stack.dir / "other-checkpoint-key.pem"
    other_key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    other = stack.cli("audit", "verifier-key", "--checkpoint-key", str(other_key),
                      "--origin", stack.audit_origin).stdout.strip()
    refused = stack.cli("trace", trace_id, "--url", audit_url(stack), "--key", other,
                        check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "signature FAILED" in refused.stdout, refused.stdout
