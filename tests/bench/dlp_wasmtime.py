"""Runs the DLP throughput example (core/examples/dlp_throughput.rs, built for wasm32-wasip1)
in wasmtime, beside the V8 run of tests/bench/dlp_wasm.mjs. Usage:

    python tests/bench/dlp_wasmtime.py target/wasm32-wasip1/release/examples/dlp_throughput.wasm

(`make bench` builds and runs it; numbers in docs/performance.md "DLP").
"""
import importlib.metadata
import sys

import wasmtime


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: dlp_wasmtime.py <dlp_throughput.wasm>", file=sys.stderr)
        return 2
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    wasi.inherit_env()
    wasi.argv = ["dlp_throughput"]
    store.set_wasi(wasi)
    module = wasmtime.Module.from_file(engine, sys.argv[1])
    print(f"wasmtime {importlib.metadata.version('wasmtime')} (Python package)", flush=True)
    instance = linker.instantiate(store, module)
    start = instance.exports(store)["_start"]
    try:
        start(store)
    except wasmtime.ExitTrap as exit_trap:
        return exit_trap.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
