#!/usr/bin/env python3
"""`make bench`: latency and throughput of one MCP `tools/call`, three ways, in one run.

Starts (with tests/e2e/harness.py) the authz-sidecar, the audit-sink, our scripted MCP server in
stateless JSON mode (a `tools/call` of `echo` is answered without `initialize`), Envoy with
Behavry (envoy/behavry.yaml.tmpl, route /mcp/scripted) and a bare Envoy (envoy/bare.yaml.tmpl,
same route, same upstream). Then, for several rounds, runs `behavry-loadgen` against

  direct          the upstream itself: the loopback floor;
  bare-envoy      Envoy with only the router: the baseline the budgets are ratios against;
  behavry         Envoy with jwt_authn + the Behavry filter and three audit events per call;
                  the allowed echo is decided by the sidecar, which grants a lease of more
                  calls like it, and then mostly by the filter under that lease,
  behavry-callout the same allowed call through an Envoy with Behavry and
                  `inline.enabled: false`: a sidecar decision on every call,
  denied-inline   the same Envoy, a call of a tool the agent is not granted: denied by the
                  filter from the bundle's published decision table, no callout,
  denied-callout  an Envoy with Behavry and `inline.enabled: false`: the same denied call,
                  decided by the sidecar,

and, on its own, `POST /v1/decide` of the authz-sidecar over loopback HTTP (the decision the
filter asks for an allowed echo: evaluation, blast-radius counters, HTTP),
at concurrency 1 (latency) and at a higher concurrency (throughput), the order of the targets
rotating each round so that drift on the machine hits them alike. Reports the median of the
rounds, the ratios against bare Envoy, the CPU time per call of each process of the stack (and of
each Envoy's worker threads) in the c=16 runs, and checks afterwards that the audit-sink holds
three events per call made through Behavry and that the chain verifies. Writes
target/bench/tools_call.json. Method and results: docs/performance.md.

Environment (all optional): BENCH_ROUNDS (3), BENCH_LATENCY_REQUESTS (3000),
BENCH_THROUGHPUT_REQUESTS (5000), BENCH_THROUGHPUT_CONCURRENCY (16), BENCH_WARMUP (300),
BENCH_ENVOY_CONCURRENCY (1). BEHAVRY_PROFILE picks the binaries (the Makefile sets release).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from harness import (  # noqa: E402
    BIN, ENVOY, PROFILE, ROOT, Service, Stack, free_port, http, render_envoy, wait_until,
)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
LATENCY_REQUESTS = int(os.environ.get("BENCH_LATENCY_REQUESTS", "3000"))
THROUGHPUT_REQUESTS = int(os.environ.get("BENCH_THROUGHPUT_REQUESTS", "5000"))
THROUGHPUT_CONCURRENCY = int(os.environ.get("BENCH_THROUGHPUT_CONCURRENCY", "16"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "300"))
# One Envoy worker thread for both Envoys: the machine has 2 cores and also runs the load
# generator, the upstream, the sidecar and the sink; a second worker would only compete with them
# for the same cores, and one worker makes the throughput ratio read as "cost per core".
ENVOY_CONCURRENCY = int(os.environ.get("BENCH_ENVOY_CONCURRENCY", "1"))
# Safety bound handed to each load generator run; a healthy run takes a few seconds.
RUN_LIMIT_SECS = 120

LOADGEN = BIN / "behavry-loadgen"
OUT = ROOT / "target" / "bench" / "tools_call.json"
TARGETS = ("direct", "bare-envoy", "behavry", "behavry-callout", "denied-inline",
           "denied-callout")
# The agent the benchmark calls as: a `batch` role (policies/data.yaml), whose per-minute call
# budget the load stays far below; the demo agent's default budget would stop it.
BENCH_AGENT = "bench-agent"
BENCH_AGENT_CONFIG = (f'[[agents]]\nid = "{BENCH_AGENT}"\nroles = ["batch"]\n'
                      '[agents.servers.scripted]\ntools = ["echo"]\n')
MODES = {"latency": (1, LATENCY_REQUESTS), "throughput": (THROUGHPUT_CONCURRENCY, THROUGHPUT_REQUESTS)}
METRICS = ("p50_us", "p90_us", "p99_us", "p999_us", "max_us", "throughput_rps")
# The call every run sends: the scripted server's `echo`, which the demo agent may call.
TOOLS_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
              "params": {"name": "echo", "arguments": {"message": "hello from behavry-loadgen"}}}
# A tool the bench agent is not granted: concealed ("Unknown tool") by the decision table.
DENIED_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "not-granted", "arguments": {}}}
DENIED_TARGETS = ("denied-inline", "denied-callout")
# What the filter sends the sidecar for the allowed echo.
DECIDE_REQUEST = {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                  "agent": {"id": "bench-agent", "scopes": ["mcp"]},
                  "request": {"server": "scripted", "method": "tools/call", "tool": "echo",
                              "arguments": TOOLS_CALL["params"]["arguments"]}}
# Budget rows of /work/shared/DESIGN.md ("Performance budgets") this run measures: "filter +
# sidecar decision on every tools/call" (p99 +1 ms, p99.9 +3 ms, throughput 0.5×; 0.8× when
# decided from what the filter holds): the allowed call with a callout each (behavry-callout), and
# with the leases the sidecar grants (behavry).
BUDGET = {"p99_add_us": 1000, "p999_add_us": 3000, "throughput_ratio": 0.5}
BUDGET_HELD = {"p99_add_us": 1000, "p999_add_us": 3000, "throughput_ratio": 0.8}


def bare_envoy(stack: Stack, upstream_port: int) -> Service:
    """Envoy with only the router, on the same route and upstream as the Behavry Envoy."""
    listen, admin = free_port(), free_port()
    stack.ports.update(bare_envoy=listen, bare_admin=admin)
    config = render_envoy("bare.yaml.tmpl", stack.dir / "envoy-bare.yaml", {
        "ADMIN_PORT": admin, "LISTEN_PORT": listen,
        "EVERYTHING_PORT": stack.ports["everything"], "SCRIPTED_PORT": upstream_port,
    })
    return Service("envoy-bare", [ENVOY, "-c", config, "--concurrency", str(ENVOY_CONCURRENCY),
                                  "--log-level", "warn", "--base-id", str(admin)],
                   stack.logs / "envoy-bare.log",
                   ready_url=f"http://127.0.0.1:{admin}/ready")


def second_behavry_envoy(stack: Stack, name: str, inline: bool = True,
                         edit=None) -> tuple[Service, int]:
    """Another Envoy with Behavry for the benchmarks: their worker count, quiet logs."""
    return stack.another_envoy(name, concurrency=ENVOY_CONCURRENCY, log_level="warn",
                               inline=inline, edit=edit)


def start_stack(workdir: Path, authz_extra: str) -> tuple[Stack, int]:
    """The authz-sidecar, the audit-sink, the scripted server in stateless JSON mode and Envoy
    with Behavry (route /mcp/scripted to that server). Returns the stack and the upstream's port;
    the caller adds its own Envoys and stops the stack."""
    upstream_port = free_port()
    # The Behavry Envoy's /mcp/scripted route goes to the JSON-mode server too.
    stack = Stack(workdir, name="bench", ports={"scripted": upstream_port,
                                                "scripted_json": upstream_port},
                  authz_extra=authz_extra)
    try:
        stack.services["authz"] = stack.authz().start()
        stack.services["audit"] = stack.audit().start()
        upstream = stack.scripted_json()
        # rmcp logs every stateless request at info (tens of MB per run): that would be CPU
        # taken from the 2 cores on every path, so the upstream logs warnings only.
        upstream.env["RUST_LOG"] = "warn"
        stack.services["scripted_json"] = upstream.start()
        stack.services["envoy"] = stack.envoy(concurrency=ENVOY_CONCURRENCY,
                                              log_level="warn").start()
    except Exception:
        stack.stop()
        raise
    return stack, upstream_port


def start(workdir: Path) -> tuple[Stack, dict[str, str]]:
    stack, upstream_port = start_stack(workdir, BENCH_AGENT_CONFIG)
    try:
        stack.services["envoy_bare"] = bare_envoy(stack, upstream_port).start()
        callout, callout_port = second_behavry_envoy(stack, "envoy-callout", inline=False)
        stack.services["envoy_callout"] = callout.start()
        wait_until("JWKS to reach Envoy", stack.jwks_loaded, timeout=30)
    except Exception:
        stack.stop()
        raise
    urls = {
        "direct": stack.direct_url("scripted_json"),
        "bare-envoy": f"http://127.0.0.1:{stack.ports['bare_envoy']}/mcp/scripted",
        "behavry": stack.url("scripted"),
        "behavry-callout": f"http://127.0.0.1:{callout_port}/mcp/scripted",
        "denied-inline": stack.url("scripted"),
        "denied-callout": f"http://127.0.0.1:{callout_port}/mcp/scripted",
    }
    return stack, urls


def audit_size(stack: Stack) -> int:
    status, _, body = http("GET", f"http://127.0.0.1:{stack.ports['audit']}/v1/log/head")
    if status != 200:
        raise RuntimeError(f"audit-sink /v1/log/head answered {status}: {body[:200]!r}")
    return json.loads(body)["size"]


def envoy_timings(stack: Stack) -> dict[str, str]:
    """Envoy's own request-time histograms (ms; P50 and P99 over the whole run, both modes and
    warm-up included): how much of a call through Behavry is the sidecar round trip."""
    timings = {}
    for admin in (stack.ports["admin"], stack.ports["bare_admin"],
                  stack.ports["envoy-callout_admin"]):
        _, _, body = http("GET", f"http://127.0.0.1:{admin}/stats?usedonly"
                                 "&filter=(upstream_rq_time|downstream_rq_time)$")
        for line in body.decode().splitlines():
            name, _, quantiles = line.partition(": ")
            if ".internal." in name or ".external." in name or name.startswith("http.admin."):
                continue
            timings[name] = summarize_histogram(quantiles)
    return timings


def summarize_histogram(quantiles: str) -> str:
    """`P0(nan,0) P25(nan,0.5) P50(nan,1.03) ...` -> `P50 1.03 ms, P99 6.06 ms` (the second value
    in each pair is cumulative over the run; the first covers the last stats interval only)."""
    picked = []
    for q in quantiles.split():
        label, _, values = q.partition("(")
        if label in ("P50", "P99"):
            cumulative = values.rstrip(")").split(",")[-1]
            picked.append(f"{label} {float(cumulative):.2f} ms")
    return ", ".join(picked)


def check_targets(urls: dict[str, str], token: str) -> None:
    """One call per target before measuring, so a broken set-up fails with a readable reason: an
    echo answered, or (denied targets) the table's concealed denial."""
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Authorization": f"Bearer {token}"}
    for target, url in urls.items():
        denied = target in DENIED_TARGETS
        body = json.dumps(DENIED_CALL if denied else TOOLS_CALL).encode()
        # The table reaches each worker at its first poll: give it a moment.
        for _ in range(50):
            status, _, answer = http("POST", url, body, headers)
            try:
                reply = json.loads(answer or b"{}")
            except ValueError:
                reply = {}
            ok = (reply.get("error", {}).get("message") == "Unknown tool: not-granted") \
                if denied else "result" in reply
            if status == 200 and ok:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{target} ({url}) answered {status}: {answer[:300]!r}")


def policy_events(stack: Stack) -> int:
    """The authz-sidecar's own events in the log (its policy bundle loaded or changed)."""
    import sqlite3
    with sqlite3.connect(f"file:{stack.audit_db}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM audit_records WHERE kind = 'policy'").fetchone()[0]


def decided_by(stack: Stack) -> dict[str, int]:
    """How the decisions in the audit log were made: `sidecar`, `table`, `cache` or `lease`."""
    import sqlite3
    counts: dict[str, int] = {}
    with sqlite3.connect(f"file:{stack.audit_db}?mode=ro", uri=True) as db:
        for (body,) in db.execute("SELECT body FROM audit_records WHERE kind = 'decision'"):
            detail = json.loads(body).get("detail", {})
            source = detail.get("decidedBy", "sidecar")
            counts[source] = counts.get(source, 0) + 1
    return counts


def stat_fields(stat: Path) -> tuple[str, list[str]] | None:
    """The command name and the fields after it of a /proc `stat` file (the name is in parentheses
    and may hold spaces), or None when the process or thread has gone."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    head, _, rest = text.rpartition(")")
    return head.partition("(")[2], rest.split()


def group_cpu_ticks(pgid: int) -> tuple[int, int]:
    """User + system CPU time (clock ticks) of every live process in process group `pgid` (a
    service and anything it runs: the `envoy` launcher and the Envoy binary), and the part of it
    spent by Envoy's worker threads (named `wrk:worker_N`), which carry the requests."""
    total = workers = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        parsed = stat_fields(stat)
        if parsed is None or int(parsed[1][2]) != pgid:
            continue
        total += int(parsed[1][11]) + int(parsed[1][12])
        for task in stat.parent.glob("task/*/stat"):
            thread = stat_fields(task)
            if thread is not None and thread[0].startswith("wrk:"):
                workers += int(thread[1][11]) + int(thread[1][12])
    return total, workers


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each service of the stack (and, for the Envoys, by their worker
    threads alone: `<name>.workers`), and by the load generator runs (this script's waited-for
    children)."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for name, service in stack.services.items():
        if not service.running():
            continue
        total, workers = group_cpu_ticks(service.proc.pid)
        seconds[name] = total / tick
        if name.startswith("envoy"):
            seconds[f"{name}.workers"] = workers / tick
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds["loadgen"] = children.ru_utime + children.ru_stime
    return seconds


def loadgen(url: str, token: str, body_file: Path, concurrency: int, requests: int,
            expect: str = "result") -> dict:
    # The same request bytes go to every target (the bare path forwards the token, which the
    # upstream ignores; Behavry's jwt_authn verifies and strips it).
    argv = [str(LOADGEN), "--url", url, "--header", f"Authorization: Bearer {token}",
            "--body-file", str(body_file), "--requests", str(requests),
            "--concurrency", str(concurrency), "--warmup", str(WARMUP),
            "--duration-limit-secs", str(RUN_LIMIT_SECS), "--expect", expect]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_LIMIT_SECS + 30)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"behavry-loadgen printed nothing (exit {done.returncode}): {done.stderr}")
    return json.loads(lines[-1])


def median_of(runs: list[dict]) -> dict:
    processes = sorted({name for r in runs for name in r.get("cpu_us_per_call", {})})
    cpu = {name: statistics.median(r["cpu_us_per_call"].get(name, 0.0) for r in runs)
           for name in processes}
    return {m: statistics.median(r[m] for r in runs) for m in METRICS} | {
        "errors": sum(r["errors"] for r in runs), "requests": sum(r["requests"] for r in runs),
        "cpu_us_per_call": cpu}


def summarize(results: dict) -> tuple[dict, dict]:
    summary = {t: {mode: median_of(results[t][mode]) for mode in MODES} for t in TARGETS}
    base_lat, base_tp = summary["bare-envoy"]["latency"], summary["bare-envoy"]["throughput"]
    ratios = {}
    for t in ("direct", "behavry", "behavry-callout", "denied-inline", "denied-callout"):
        lat, tp = summary[t]["latency"], summary[t]["throughput"]
        ratios[t] = {
            "p50_add_us": lat["p50_us"] - base_lat["p50_us"],
            "p99_add_us": lat["p99_us"] - base_lat["p99_us"],
            "p999_add_us": lat["p999_us"] - base_lat["p999_us"],
            "p50_ratio": lat["p50_us"] / base_lat["p50_us"],
            "p99_ratio": lat["p99_us"] / base_lat["p99_us"],
            "throughput_ratio_c1": lat["throughput_rps"] / base_lat["throughput_rps"],
            "throughput_ratio": tp["throughput_rps"] / base_tp["throughput_rps"],
        }
    return summary, ratios


def print_table(summary: dict, ratios: dict) -> None:
    c = THROUGHPUT_CONCURRENCY
    print(f"\ntools/call `echo`, median of {ROUNDS} rounds; Envoy --concurrency {ENVOY_CONCURRENCY};"
          f" latency in µs")
    print(f"{'target':<15} | {'c=1 p50':>8} {'p90':>6} {'p99':>6} {'p99.9':>6} {'max':>6} "
          f"{'req/s':>7} | {f'c={c} p50':>9} {'p99':>6} {'req/s':>7}")
    print("-" * 93)
    for t in TARGETS:
        lat, tp = summary[t]["latency"], summary[t]["throughput"]
        print(f"{t:<15} | {lat['p50_us']:>8.0f} {lat['p90_us']:>6.0f} {lat['p99_us']:>6.0f} "
              f"{lat['p999_us']:>6.0f} {lat['max_us']:>6.0f} {lat['throughput_rps']:>7.0f} | "
              f"{tp['p50_us']:>9.0f} {tp['p99_us']:>6.0f} {tp['throughput_rps']:>7.0f}")
    print(f"\nCPU per call at c={c} (µs, user + system, median of the rounds; each process over the "
          "whole run, so what the shipping of earlier calls costs lands in the run it happens in):")
    processes = sorted({name for t in TARGETS
                        for name in summary[t]["throughput"]["cpu_us_per_call"]})
    widths = {name: max(len(name), 6) for name in processes}
    print(f"{'target':<15} | " + " ".join(f"{name:>{widths[name]}}" for name in processes)
          + f" | {'total':>7}")
    for t in TARGETS:
        cpu = summary[t]["throughput"]["cpu_us_per_call"]
        total = sum(v for name, v in cpu.items() if not name.endswith(".workers"))
        print(f"{t:<15} | "
              + " ".join(f"{cpu.get(name, 0):>{widths[name]}.0f}" for name in processes)
              + f" | {total:>7.0f}")
    print()
    for t, label in (("direct", "loopback floor"), ("behavry", "Envoy + Behavry (leases)"),
                     ("behavry-callout", "Envoy + Behavry (a callout each)"),
                     ("denied-inline", "denial from the table"),
                     ("denied-callout", "denial by callout")):
        r = ratios[t]
        print(f"{label} vs bare Envoy: p50 {r['p50_add_us']:+.0f} µs ({r['p50_ratio']:.2f}×), "
              f"p99 {r['p99_add_us']:+.0f} µs ({r['p99_ratio']:.2f}×), "
              f"p99.9 {r['p999_add_us']:+.0f} µs, throughput {r['throughput_ratio_c1']:.2f}× at c=1, "
              f"{r['throughput_ratio']:.2f}× at c={c}")


def budget_verdict(ratios: dict, target: str, budget: dict, row: str) -> dict:
    r = ratios[target]
    return {
        "row": row,
        "p99_add_us": {"budget": budget["p99_add_us"], "measured": r["p99_add_us"],
                       "met": r["p99_add_us"] <= budget["p99_add_us"]},
        "p999_add_us": {"budget": budget["p999_add_us"], "measured": r["p999_add_us"],
                        "met": r["p999_add_us"] <= budget["p999_add_us"]},
        "throughput_ratio": {"budget": budget["throughput_ratio"], "measured": r["throughput_ratio"],
                             "met": r["throughput_ratio"] >= budget["throughput_ratio"]},
    }


def main() -> int:
    for needed in (LOADGEN, BIN / "behavry-authz-sidecar", BIN / "behavry-audit-sink",
                   BIN / "behavry-scripted-server", BIN / "behavry", ENVOY):
        if not Path(needed).exists():
            print(f"missing {needed}: run `make bench` (it builds the {PROFILE} binaries)",
                  file=sys.stderr)
            return 2
    OUT.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="behavry-bench-"))
    body_file = workdir / "tools_call.json"
    body_file.write_text(json.dumps(TOOLS_CALL))
    denied_file = workdir / "denied_call.json"
    denied_file.write_text(json.dumps(DENIED_CALL))
    print(f"starting the stack ({PROFILE} binaries; logs in tests/e2e/.logs/bench/) ...", flush=True)
    stack, urls = start(workdir)
    started = time.monotonic()
    results = {t: {mode: [] for mode in MODES} for t in TARGETS}
    try:
        token = stack.mint(BENCH_AGENT)
        check_targets(urls, token)
        calls_through_behavry = len(TARGETS) - 2
        for round_index in range(ROUNDS):
            # Tokens live 300 s (authz config); a fresh one per round outlives any round.
            token = stack.mint(BENCH_AGENT)
            shift = round_index % len(TARGETS)
            order = TARGETS[shift:] + TARGETS[:shift]
            for mode, (concurrency, requests) in MODES.items():
                for target in order:
                    denied = target in DENIED_TARGETS
                    before = cpu_snapshot(stack)
                    report = loadgen(urls[target], token, denied_file if denied else body_file,
                                     concurrency, requests, "error" if denied else "result")
                    after = cpu_snapshot(stack)
                    calls = report["warmup"] + report["requests"]
                    report["cpu_us_per_call"] = {
                        name: round((after[name] - before[name]) * 1e6 / calls, 1)
                        for name in after if name in before}
                    results[target][mode].append(report)
                    if target not in ("direct", "bare-envoy"):
                        calls_through_behavry += report["warmup"] + report["requests"]
                    flag = f"  ERRORS {report['errors']}: {report['error_samples']}" \
                        if report["errors"] or report["limit_hit"] else ""
                    print(f"round {round_index + 1}/{ROUNDS} {mode:<10} {target:<15} "
                          f"c={concurrency:<3} p50 {report['p50_us']:>6} µs  p99 "
                          f"{report['p99_us']:>6} µs  {report['throughput_rps']:>7.0f} req/s{flag}",
                          flush=True)

        # The sidecar's decision endpoint alone, over loopback HTTP.
        decide_file = workdir / "decide.json"
        decide_file.write_text(json.dumps(DECIDE_REQUEST))
        decide_url = f"{stack.authz_url()}/v1/decide"
        # The filter's own credential: /v1/decide answers only the proxy.
        decide = {mode: loadgen(decide_url, stack.proxy_token, decide_file, concurrency, requests,
                                "json")
                  for mode, (concurrency, requests) in MODES.items()}
        for mode, report in decide.items():
            print(f"/v1/decide {mode:<10} p50 {report['p50_us']:>6} µs  p99 {report['p99_us']:>6} µs"
                  f"  {report['throughput_rps']:>7.0f} req/s  errors {report['errors']}", flush=True)

        # Three events (intent, decision, outcome) per call through Behavry, shipped in batches,
        # plus the sidecar's event for the bundle it loaded.
        expected_events = 3 * calls_through_behavry + policy_events(stack)
        try:
            wait_until("the audit-sink to hold every event",
                       lambda: audit_size(stack) >= expected_events, timeout=30)
        except TimeoutError:
            pass
        events = audit_size(stack)
        timings = envoy_timings(stack)
        sources = decided_by(stack)
        verify = stack.cli("audit", "verify", "--db", str(stack.audit_db), check=False)
    finally:
        stack.stop()
    elapsed = time.monotonic() - started

    summary, ratios = summarize(results)
    print_table(summary, ratios)
    verdicts = [
        budget_verdict(ratios, "behavry-callout", BUDGET,
                       "filter + sidecar decision on every tools/call (a callout each)"),
        budget_verdict(ratios, "behavry", BUDGET_HELD,
                       "filter + sidecar decision, from what the filter holds (leases)"),
    ]
    for verdict in verdicts:
        print(f"\nbudget ({verdict['row']}): "
              + ", ".join(f"{k} {v['measured']:.2f} vs {v['budget']} -> "
                          f"{'met' if v['met'] else 'NOT met'}"
                          for k, v in verdict.items() if k != "row"))
    audit = {"callsThroughBehavry": calls_through_behavry, "expectedEvents": expected_events,
             "logSize": events, "complete": events == expected_events,
             "verifyExitCode": verify.returncode, "verify": verify.stdout.strip()}
    print(f"audit: {events} events in the log for {calls_through_behavry} calls through Behavry "
          f"(expected {expected_events}: {'ok' if audit['complete'] else 'MISMATCH'}); "
          f"verify: {audit['verify'] or verify.stderr.strip()}")
    decisions = sum(sources.values())
    inline_share = (sources.get("table", 0) + sources.get("cache", 0)
                    + sources.get("lease", 0)) / max(decisions, 1)
    print(f"decisions: {sources} ({inline_share:.1%} made in the filter without a callout)")
    print("Envoy's histograms over the whole run (Behavry Envoy: mcp_ingress, behavry_authz is "
          "the sidecar callout; bare: mcp_bare):")
    for name, quantiles in timings.items():
        print(f"  {name:<48} {quantiles}")
    errors = sum(r["errors"] for t in TARGETS for mode in MODES for r in results[t][mode])
    limit_hits = sum(r["limit_hit"] for t in TARGETS for mode in MODES for r in results[t][mode])

    OUT.write_text(json.dumps({
        "benchmark": "tools_call_latency",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "settings": {"profile": PROFILE, "rounds": ROUNDS, "latencyRequests": LATENCY_REQUESTS,
                     "throughputRequests": THROUGHPUT_REQUESTS,
                     "throughputConcurrency": THROUGHPUT_CONCURRENCY, "warmup": WARMUP,
                     "envoyConcurrency": ENVOY_CONCURRENCY, "loadgenThreads": 1,
                     "request": TOOLS_CALL},
        "elapsedSecs": round(elapsed, 1),
        "summary": summary, "versusBareEnvoy": ratios, "budget": verdicts, "audit": audit,
        "decisionsBy": sources, "inlineShare": inline_share, "decideEndpoint": decide,
        "envoyTimings": timings,
        "errors": errors, "limitHits": limit_hits, "runs": results,
    }, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({elapsed:.0f} s of measuring)")
    if errors or limit_hits:
        print(f"FAILED: {errors} failed requests, {limit_hits} runs cut short by the time limit",
              file=sys.stderr)
        return 1
    if not audit["complete"] or verify.returncode != 0:
        print("FAILED: the audit log does not hold every event, or does not verify", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
