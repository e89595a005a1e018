"""3. The official MCP conformance suite's server scenarios against server-everything, directly and
through Envoy + Behavry (an agent whose policy allows everything): the same scenarios must pass and
fail both ways.

The suite's scenarios are written for its own fixture server, which the npm package does not ship,
so against server-everything some fail in both runs; what matters here is that Behavry changes no
verdict. The comparison is written to tests/e2e/.logs/conformance.json for the record.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from harness import LOGS, NODE22, NODE_MODULES, ROOT

RUNNER = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

# Scenarios whose verdict legitimately differs, with the reason.
KNOWN_DIFFERENCES = {
    # The scenario sends raw requests with a forged Host/Origin and no Authorization header (it
    # does not go through fetch). Directly, server-everything answers 200 and the check fails;
    # through Behavry, jwt_authn refuses the unauthenticated request with 401 first, which is the
    # 4xx the check asks for.
    "dns-rebinding-protection",
}


def run_suite(url: str, out: Path, headers: dict | None = None) -> dict[str, bool]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    argv = [str(NODE22)]
    env = dict(os.environ)
    if headers:
        argv += ["--import", str(ROOT / "tests" / "e2e" / "conformance_auth.mjs")]
        env["BEHAVRY_EXTRA_HEADERS"] = json.dumps(headers)
    argv += [str(RUNNER), "server", "--url", url, "-o", str(out)]
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    (out / "runner.log").write_text(run.stdout + run.stderr)
    verdicts: dict[str, bool] = {}
    for checks in out.glob("server-*/checks.json"):
        # Directory names end in an ISO timestamp: strip it from the right, whatever its dashes.
        name = checks.parent.name.removeprefix("server-")
        scenario = name[: name.index("-20")] if "-20" in name else name
        results = json.loads(checks.read_text())
        verdicts[scenario] = all(c.get("status") != "FAILURE" for c in results)
    assert verdicts, f"the conformance runner produced no results:\n{run.stdout}\n{run.stderr}"
    return verdicts


def test_conformance_verdicts_are_the_same_directly_and_through_behavry(stack):
    token = stack.mint("conformance-agent")
    direct = run_suite(stack.direct_url("everything"), LOGS / "conformance" / "direct")
    proxied = run_suite(stack.url("everything"), LOGS / "conformance" / "behavry",
                        {"Authorization": f"Bearer {token}"})
    report = {
        "direct_passed": sorted(s for s, ok in direct.items() if ok),
        "behavry_passed": sorted(s for s, ok in proxied.items() if ok),
        "scenarios": len(direct),
        "differences": sorted(s for s in direct if direct[s] != proxied.get(s)),
    }
    (LOGS / "conformance.json").write_text(json.dumps(report, indent=2))
    assert set(direct) == set(proxied)
    unexplained = set(report["differences"]) - KNOWN_DIFFERENCES
    assert not unexplained, f"Behavry changed these verdicts: {sorted(unexplained)}\n{report}"
    assert report["direct_passed"], "nothing passed directly: the comparison would be empty"
