"""A bad filter configuration is refused when Envoy starts, and the log names the field."""
from __future__ import annotations

import subprocess

from harness import ENVOY, WASM, free_port, render_envoy


def start_envoy_with(tmp_path, edit) -> tuple[int | None, str]:
    ports = {"ADMIN_PORT": free_port(), "LISTEN_PORT": free_port(), "AUTHZ_PORT": free_port(),
             "AUDIT_PORT": free_port(), "EVERYTHING_PORT": free_port(),
             "SCRIPTED_PORT": free_port(), "SCRIPTED_JSON_PORT": free_port(), "WASM_PATH": WASM}
    config = render_envoy("behavry.yaml.tmpl", tmp_path / "envoy.yaml", ports)
    config.write_text(edit(config.read_text()))
    proc = subprocess.Popen([str(ENVOY), "-c", str(config), "--concurrency", "1",
                             "--base-id", str(ports["ADMIN_PORT"])],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=30)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out


def test_bad_filter_config_stops_envoy_and_names_the_field(tmp_path):
    code, log = start_envoy_with(
        tmp_path, lambda text: text.replace('"timeoutMs": 1000', '"timeoutMs": 0')
        .replace('"timeoutMs": 500', '"timeoutMs": 0'))
    assert code not in (None, 0), "Envoy started with an invalid behavry configuration"
    assert "authz.timeoutMs" in log


def test_unknown_filter_config_field_is_refused(tmp_path):
    code, log = start_envoy_with(
        tmp_path, lambda text: text.replace('"failureMode": "closed"',
                                            '"failureMode": "closed", "surprise": true'))
    assert code not in (None, 0)
    assert "surprise" in log
