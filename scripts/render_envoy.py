#!/usr/bin/env python3
"""Render an Envoy bootstrap template (`${NAME}` placeholders) with NAME=VALUE arguments.

Every placeholder must be given (or have a default below): a missing one is an error that names it.
"""
import os
import string
import sys

DEFAULTS = {
    "ADMIN_PORT": "9901",
    "LISTEN_PORT": "10000",
    "AUTHZ_PORT": "9911",
    "AUDIT_PORT": "9912",
    "EVERYTHING_PORT": "3001",
    "SCRIPTED_PORT": "3002",
    "SCRIPTED_JSON_PORT": "3003",
    "EXCHANGED_PORT": "3004",
    "KEYED_PORT": "3005",
    "VAULTED_PORT": "3006",
    # How long Envoy keeps the JWKS before fetching it again. Key rotation publishes the next key
    # ahead of use, so this bounds only how soon a removed key stops verifying.
    "JWKS_CACHE_SECS": "300",
    "JWT_ISSUER": "behavry-authz",
    "JWT_AUDIENCE": "behavry-gateway",
    "AUTHZ_TIMEOUT_MS": "500",
    # Decisions the filter makes itself from the bundle's published table and its decision cache
    # (docs/policy.md, "Inline decisions"); "false" sends every decision to the sidecar.
    "INLINE_DECISIONS": "true",
    "MAX_BODY_BYTES": "1048576",
    "MAX_SSE_EVENT_BYTES": "1048576",
    "WASM_PATH": "target/wasm32-wasip1/release-wasm/behavry_filter.wasm",
    # Bearer token the filter shows the authz-sidecar for upstream credentials; a development
    # value only: real deployments (and the e2e harness) pass their own.
    "PROXY_TOKEN": "dev-proxy-token-change-me",
    # HMAC key of DLP findings' hashes (docs/dlp.md): every Envoy of a deployment needs the same
    # one, so hashes of one value match across them. A development value only.
    "DLP_HASH_KEY": "dev-dlp-hash-key-change-me-0123456789abcdef",
}


def render(template_path: str, values: dict) -> str:
    with open(template_path, encoding="utf-8") as f:
        template = string.Template(f.read())
    merged = {**DEFAULTS, **values}
    try:
        return template.substitute(merged)
    except KeyError as missing:
        sys.exit(f"render_envoy: no value for placeholder {missing} in {template_path}")


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: render_envoy.py TEMPLATE OUTPUT [NAME=VALUE ...]")
    values = {}
    for arg in sys.argv[3:]:
        name, sep, value = arg.partition("=")
        if not sep:
            sys.exit(f"render_envoy: argument {arg!r} is not NAME=VALUE")
        values[name] = value
    out = render(sys.argv[1], values)
    # The rendered bootstrap holds the filter's proxy credential: readable by its owner only.
    fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(out)


if __name__ == "__main__":
    main()
