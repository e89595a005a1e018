// Runs the DLP throughput example (core/examples/dlp_throughput.rs, built for wasm32-wasip1) in
// Node's V8, the Wasm engine Envoy runs the filter in. Usage:
//   node tests/bench/dlp_wasm.mjs target/wasm32-wasip1/release/examples/dlp_throughput.wasm
// (`make bench` builds and runs it; numbers in docs/performance.md "DLP").
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import process from "node:process";

const path = process.argv[2];
if (!path) {
  console.error("usage: dlp_wasm.mjs <dlp_throughput.wasm>");
  process.exit(2);
}
const wasi = new WASI({ version: "preview1", args: ["dlp_throughput"], env: process.env });
const module = await WebAssembly.compile(await readFile(path));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
console.log(`V8 ${process.versions.v8} (node ${process.version})`);
process.exitCode = wasi.start(instance);
