// The TypeScript SDK client (@modelcontextprotocol/sdk, pinned in tests/js/package.json) over
// Streamable HTTP with the SDK's defaults, for tests/fingerprints/capture.py.
// Usage: node ts_client.mjs <node_modules dir> <url>
// The SDK has no default clientInfo (the application names itself), so the name below is the
// capture's own; the table recognises the SDK by what the SDK itself puts on the wire.
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, url] = process.argv.slice(2);
if (!modules || !url) {
  console.error("usage: node ts_client.mjs <node_modules dir> <url>");
  process.exit(2);
}
const sdk = (p) => import(pathToFileURL(join(modules, "@modelcontextprotocol/sdk/dist/esm", p)).href);
const { Client } = await sdk("client/index.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");

const client = new Client({ name: "behavry-fingerprint-capture", version: "0.0.0" });
await client.connect(new StreamableHTTPClientTransport(new URL(url)));
const tools = await client.listTools();
console.log(`${tools.tools.length} tools`);
await client.close();
