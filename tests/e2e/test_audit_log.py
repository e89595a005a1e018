"""The audit log's proofs end to end: calls through Envoy land in a log whose signed checkpoints,
export and verification work with the real sink and the `behavry audit` commands."""
from __future__ import annotations

import json

import anyio
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
