#!/usr/bin/env python3
"""`make run`: the whole Behavry stack on loopback, until Ctrl-C.

Starts the authz-sidecar, the audit-sink (SQLite in .run/), server-everything as the demo MCP
server, our scripted server (also as three upstreams that demand their own credential), the Vault
KV v2 stand-in, and Envoy with the built filter; mints a token for the demo agent and prints how
to point a client at it.
"""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import AGENT, ROOT, Stack  # noqa: E402


def main() -> int:
    workdir = ROOT / ".run"
    workdir.mkdir(exist_ok=True)
    # Fixed, well-known ports for a local run.
    stack = Stack(workdir, name="run", ports=dict(envoy=10000, admin=9901, authz=9911, audit=9912,
                                                  everything=3001, scripted=3002,
                                                  scripted_json=3003, exchanged=3004, keyed=3005,
                                                  vaulted=3006, vault=8200))
    print("starting Behavry (logs in tests/e2e/.logs/run/) ...", flush=True)
    try:
        stack.start()
    except Exception as err:  # noqa: BLE001
        stack.stop()
        print(f"could not start the stack: {err}", file=sys.stderr)
        return 1
    token = stack.mint()
    url = stack.url("everything")
    print(f"""
Behavry is running.

  MCP endpoint (server-everything behind Behavry): {url}
  upstreams with their own credential (the agent's token never reaches them):
    {stack.url("exchanged")}  token exchanged for the server (RFC 8693)
    {stack.url("keyed")}      static key from the encrypted secret file
    {stack.url("vaulted")}    static key from Vault KV v2 (a local stand-in, not Vault)
  agent: {AGENT}   token (valid 5 minutes; mint more with the command below):

{token}

  mint a token:   target/debug/behavry token mint --agent {AGENT} --config {stack.authz_config}
  try it:         .tools/venv/bin/python scripts/demo_client.py {url} "$(target/debug/behavry token mint --agent {AGENT} --config {stack.authz_config})"
  inspector:      (cd .tools/node/node_modules/@modelcontextprotocol/inspector-cli/build && node index.js {url} --transport http --method tools/list --header "Authorization: Bearer $TOKEN")
  audit trace:    curl http://127.0.0.1:{stack.ports['audit']}/v1/traces/<trace-id>
  verify the log: target/debug/behavry audit verify --url http://127.0.0.1:{stack.ports['audit']} --key "$(target/debug/behavry audit verifier-key --checkpoint-key {stack.checkpoint_key} --origin {stack.audit_origin})"
  keep its head:  curl http://127.0.0.1:{stack.ports['audit']}/v1/log/checkpoint > kept.note   (then verify ... --checkpoint kept.note)
  held calls:     BEHAVRY_AUTHZ_ADMIN_TOKEN=$(cat {workdir / 'admin-token'}) target/debug/behavry approvals list
  policy tests:   target/debug/behavry policy test policies   (the bundle served: {stack.policy_dir})

Ctrl-C stops everything.
""", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    while not stopped.wait(1.0):
        for name, service in stack.services.items():
            if not service.running():
                print(f"{name} exited; see {service.log_path}", file=sys.stderr)
                stopped.set()
    print("stopping ...", flush=True)
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
