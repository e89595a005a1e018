"""4. @modelcontextprotocol/inspector-cli lists tools through the proxy with a bearer header."""
from __future__ import annotations

import json
import subprocess

from harness import NODE22, NODE_MODULES


def inspector(*args: str) -> subprocess.CompletedProcess:
    build = NODE_MODULES / "@modelcontextprotocol" / "inspector-cli" / "build"
    # It resolves its package.json from the working directory, so it runs from its build folder.
    return subprocess.run([str(NODE22), "index.js", *args], cwd=build, capture_output=True,
                          text=True, timeout=60)


def test_inspector_cli_lists_tools_with_bearer_header(stack, token):
    run = inspector(stack.url("everything"), "--transport", "http", "--method", "tools/list",
                    "--header", f"Authorization: Bearer {token}")
    assert run.returncode == 0, run.stderr
    names = {tool["name"] for tool in json.loads(run.stdout)["tools"]}
    assert {"echo", "get-sum"} <= names


def test_inspector_cli_without_token_is_refused(stack):
    run = inspector(stack.url("everything"), "--transport", "http", "--method", "tools/list")
    assert run.returncode != 0
    assert "tools" not in run.stdout
