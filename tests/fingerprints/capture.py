"""Capture what real MCP clients send, for Behavry's known-clients table (core/src/fingerprint.rs).

Re-run (from the repository root, after `make setup` has built .tools/venv and .tools/node):

    .tools/venv/bin/python tests/fingerprints/capture.py --out tests/fingerprints/observed.json

Options: `--only NAME` (repeatable) runs just those runs; `--skip NAME` leaves runs out (the rmcp
run builds a small Rust example with cargo, which takes a few minutes the first time; set
`RMCP_FINGERPRINT_CLIENT` to an already built `fingerprint_client` to skip cargo).

The `claude-code` run needs the Claude Code CLI, which is not part of `make setup` (a ~350 MB
package): install it anywhere (`npm install @anthropic-ai/claude-code` in a scratch directory) and
point `CLAUDE_CODE_BIN` at its `claude`, or have `claude` on PATH. It runs `claude mcp add` and
`claude mcp list` (a health check that connects) under a throw-away HOME; no login is needed.
When a client's toolchain is missing, the run is skipped and, with `--out`, the record already in
that file is kept (marked `carriedOver`), so a partial re-run does not throw evidence away.

A loopback HTTP server answers just enough MCP Streamable HTTP (MCP 2025-11-25 basic/transports)
for each client to connect and list tools: `initialize` gets a result and an `Mcp-Session-Id`,
notifications get 202 Accepted, `tools/list` an empty list, any other request "method not found"
(-32601), GET 405 (no server-initiated stream) and DELETE 204. Each client runs as its own process
against its own path (`/mcp/<run>`), so every recorded request belongs to exactly one client.
For each run the script records every request (HTTP method, header names in arrival order,
header values, JSON body) and derives the `observation`: the fields the fingerprint is built
from, taken from the first request that carries `clientInfo` (`initialize` params in the
handshake era, `params._meta["io.modelcontextprotocol/clientInfo"]` in MCP 2026-07-28).

Importable: `capture_all(only=None, skip=()) -> list[dict]` returns the run records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".tools" / "node" / "node_modules"
TS_CLIENT = Path(__file__).resolve().parent / "ts_client.mjs"
INSPECTOR_BUILD = NODE_MODULES / "@modelcontextprotocol" / "inspector-cli" / "build"

META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
SESSION_ID = "fingerprint-capture-session"
# Header values that differ on every run are recorded as this, so observed.json stays stable.
VARIES = "<varies per run>"
VARYING_HEADERS = {"host", "traceparent", "tracestate", "content-length"}
CLIENT_TIMEOUT_S = 120

# Each run: the table name of the client it exercises, and how it is started.
RUNS: dict[str, str] = {
    "python-mcp-legacy": "python-mcp",
    "python-mcp-2026-07-28": "python-mcp",
    "fastmcp": "fastmcp",
    "typescript-sdk": "typescript-sdk",
    "mcp-inspector-cli": "mcp-inspector",
    "rmcp": "rmcp",
    "claude-code": "claude-code",
}

# The package whose version each client's record carries.
PACKAGE_OF: dict[str, str] = {
    "python-mcp": "mcp",
    "fastmcp": "fastmcp",
    "typescript-sdk": "@modelcontextprotocol/sdk",
    "mcp-inspector": "@modelcontextprotocol/inspector-cli",
    "rmcp": "rmcp",
    "claude-code": "claude-code",
}


class _Recorder:
    """Requests seen per run, filled by the HTTP handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, list[dict[str, Any]]] = {}

    def add(self, run: str, record: dict[str, Any]) -> None:
        with self.lock:
            self.requests.setdefault(run, []).append(record)


def _handler(recorder: _Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def _run(self) -> str | None:
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            if len(parts) == 2 and parts[0] == "mcp" and parts[1] in RUNS:
                return parts[1]
            return None

        def _record(self, body: Any) -> None:
            run = self._run()
            if run is None:
                return
            names = [name.lower() for name in self.headers.keys()]
            values = {
                name.lower(): (VARIES if name.lower() in VARYING_HEADERS else value)
                for name, value in self.headers.items()
            }
            recorder.add(
                run,
                {"httpMethod": self.command, "headerNames": names, "headers": values, "body": body},
            )

        def _send(self, status: int, body: Any = None, extra: dict[str, str] | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            self._record(None)
            # No server-initiated SSE stream (MCP 2025-11-25 basic/transports: the server MAY
            # answer 405 to GET).
            self._send(405)

        def do_DELETE(self) -> None:  # noqa: N802
            self._record(None)
            self._send(204)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                message = json.loads(raw)
            except ValueError:
                self._record(raw.decode("utf-8", "replace"))
                self._send(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
                return
            self._record(message)
            if self._run() is None:
                self._send(404)
                return
            if not isinstance(message, dict) or "id" not in message:
                self._send(202)  # a notification or a response
                return
            self._send(200, _answer(message), {"Mcp-Session-Id": SESSION_ID})

    return Handler


class _CaptureServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that closes its keep-alive connection at exit is not an error worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    method = request.get("method")
    params = request.get("params") if isinstance(request.get("params"), dict) else {}
    rid = request.get("id")
    if method == "initialize":
        version = params.get("protocolVersion") or "2025-11-25"
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "behavry-fingerprint-capture", "version": "0.0.0"},
        }
        return {"jsonrpc": "2.0", "id": rid, "result": result}
    if method == "tools/list":
        result = {"tools": []}
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        if meta.get(META_PROTOCOL_VERSION) == "2026-07-28":
            # MCP 2026-07-28 results carry a result type and caching directives (SEP-2549
            # ttlMs/cacheScope); the Python SDK refuses a tools/list result without them.
            result.update({"resultType": "complete", "ttlMs": 0, "cacheScope": "private"})
        return {"jsonrpc": "2.0", "id": rid, "result": result}
    if method == "ping":
        return {"jsonrpc": "2.0", "id": rid, "result": {}}
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"method not found: {method}"}}


def _observation(requests: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fingerprint input: from the first request that carries clientInfo."""
    for request in requests:
        body = request["body"]
        if not isinstance(body, dict) or not isinstance(body.get("params"), dict):
            continue
        params = body["params"]
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        if body.get("method") == "initialize" and isinstance(params.get("clientInfo"), dict):
            info, version, caps = params["clientInfo"], params.get("protocolVersion"), params.get("capabilities")
        elif isinstance(meta.get(META_CLIENT_INFO), dict):
            info, version, caps = meta[META_CLIENT_INFO], meta.get(META_PROTOCOL_VERSION), meta.get(META_CLIENT_CAPABILITIES)
        else:
            continue
        headers = request["headers"]
        return {
            "method": body.get("method"),
            "clientName": info.get("name"),
            "clientVersion": info.get("version"),
            # The MCP-Protocol-Version header, when sent, wins over the body (basic/transports).
            "protocolVersion": headers.get("mcp-protocol-version") or version,
            "capabilities": sorted(caps) if isinstance(caps, dict) else [],
            "userAgent": headers.get("user-agent"),
            "headerNames": request["headerNames"],
        }
    return None


def _package_versions() -> dict[str, str | None]:
    def py(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    def node(name: str) -> str | None:
        try:
            return json.loads((NODE_MODULES / name / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return None

    return {
        "mcp": py("mcp"),
        "fastmcp": py("fastmcp"),
        "@modelcontextprotocol/sdk": node("@modelcontextprotocol/sdk"),
        "@modelcontextprotocol/inspector-cli": node("@modelcontextprotocol/inspector-cli"),
        "node": shutil.which("node") and subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        # rmcp: the version pinned by Cargo.lock (the example is built from this workspace).
        "rmcp": _cargo_lock_version("rmcp"),
        "claude-code": _claude_code_version(),
    }


def _claude_code_version() -> str | None:
    claude = _claude_code_bin()
    if claude is None:
        return None
    done = subprocess.run([claude, "--version"], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or None


def _cargo_lock_version(crate: str) -> str | None:
    try:
        lines = (ROOT / "Cargo.lock").read_text().splitlines()
    except OSError:
        return None
    for i, line in enumerate(lines):
        if line == f'name = "{crate}"' and i + 1 < len(lines) and lines[i + 1].startswith("version = "):
            return lines[i + 1].split('"')[1]
    return None


def _command(run: str, url: str) -> list[str] | None:
    """How to start the client of `run` against `url`; None when its toolchain is absent."""
    me = [sys.executable, str(Path(__file__).resolve()), "--client", run, "--url", url]
    if run in ("python-mcp-legacy", "python-mcp-2026-07-28", "fastmcp"):
        return me
    node = shutil.which("node")
    if run == "typescript-sdk":
        return [node, str(TS_CLIENT), str(NODE_MODULES), url] if node else None
    if run == "mcp-inspector-cli":
        # build/index.js is the CLI proper (the `--cli` flag belongs to the inspector launcher);
        # it is run from build/ because it reads ../package.json for its clientInfo.
        return [node, "index.js", url, "--transport", "http", "--method", "tools/list"] if node else None
    if run == "claude-code":
        return me if _claude_code_bin() else None
    if run == "rmcp":
        prebuilt = os.environ.get("RMCP_FINGERPRINT_CLIENT")
        if prebuilt:
            return [prebuilt, url]
        cargo = shutil.which("cargo")
        if cargo is None:
            return None
        return [cargo, "run", "--quiet", "-p", "behavry-scripted-server", "--example", "fingerprint_client", "--", url]
    return None


def _claude_code_bin() -> str | None:
    return os.environ.get("CLAUDE_CODE_BIN") or shutil.which("claude")


def _claude_code_client(url: str) -> None:
    """Claude Code as it comes: register the server, then let `claude mcp list` connect to it."""
    import tempfile

    claude = _claude_code_bin()
    if claude is None:
        raise SystemExit("claude not found")
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, HOME=home, DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
        subprocess.run([claude, "mcp", "add", "--transport", "http", "capture", url], cwd=home, env=env,
                       check=True, capture_output=True, timeout=CLIENT_TIMEOUT_S)
        listed = subprocess.run([claude, "mcp", "list"], cwd=home, env=env, check=True, capture_output=True,
                                text=True, timeout=CLIENT_TIMEOUT_S)
        if "Connected" not in listed.stdout:
            raise SystemExit(f"claude mcp list did not connect: {listed.stdout.strip()}")


async def _python_client(run: str, url: str) -> None:
    """The Python clients with their defaults; only the connection mode is chosen."""
    if run == "fastmcp":
        from fastmcp import Client as FastMCPClient

        async with FastMCPClient(url) as client:
            await client.list_tools()
        return
    from mcp import Client

    mode = "legacy" if run == "python-mcp-legacy" else "2026-07-28"
    async with Client(url, mode=mode) as client:
        await client.list_tools()


def capture_all(only: list[str] | None = None, skip: tuple[str, ...] | list[str] = ()) -> list[dict[str, Any]]:
    """Run each client against a fresh loopback capture server; return one record per run."""
    recorder = _Recorder()
    server = _CaptureServer(("127.0.0.1", 0), _handler(recorder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    records: list[dict[str, Any]] = []
    try:
        for run, client in RUNS.items():
            if (only and run not in only) or run in skip:
                continue
            url = f"http://127.0.0.1:{port}/mcp/{run}"
            command = _command(run, url)
            record: dict[str, Any] = {"run": run, "client": client}
            if command is None:
                record["skipped"] = "toolchain not found"
                records.append(record)
                continue
            cwd = INSPECTOR_BUILD if run == "mcp-inspector-cli" else ROOT
            try:
                done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
                if done.returncode != 0:
                    record["error"] = f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"
            except subprocess.TimeoutExpired:
                record["error"] = f"timed out after {CLIENT_TIMEOUT_S}s"
            requests = recorder.requests.get(run, [])
            record["observation"] = _observation(requests)
            record["requests"] = requests
            records.append(record)
    finally:
        server.shutdown()
        server.server_close()
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the records here as JSON")
    parser.add_argument("--only", action="append", choices=list(RUNS), help="run only these")
    parser.add_argument("--skip", action="append", default=[], choices=list(RUNS), help="leave these out")
    # Internal: run one Python client in this process (capture_all starts these as subprocesses).
    parser.add_argument("--client", choices=list(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client == "claude-code":
        _claude_code_client(args.url)
        return 0
    if args.client:
        asyncio.run(_python_client(args.client, args.url))
        return 0
    records = capture_all(args.only, args.skip)
    packages = _package_versions()
    for record in records:
        if "skipped" not in record:
            record["packageVersion"] = packages.get(PACKAGE_OF[record["client"]])
    if args.out and args.out.exists():
        # Keep what an earlier capture recorded for clients left out or unable to run this time.
        previous = {r["run"]: r for r in json.loads(args.out.read_text()).get("runs", [])}
        fresh = {r["run"]: r for r in records}
        records = []
        for run in RUNS:
            new, old = fresh.get(run), previous.get(run)
            if old is not None and "skipped" not in old and (new is None or "skipped" in new):
                records.append(dict(old, carriedOver=True))
            elif new is not None:
                records.append(new)
    document = {
        "about": "What real MCP clients sent to tests/fingerprints/capture.py; source of the "
        "`observed` entries of core/src/fingerprint.rs. Regenerate with the command in capture.py.",
        "packages": packages,
        "runs": records,
    }
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    failed = [r["run"] for r in records if "error" in r or ("skipped" not in r and r.get("observation") is None)]
    for record in records:
        status = record.get("error") or record.get("skipped") or "ok"
        print(f"{record['run']}: {status}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
