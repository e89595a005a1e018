// Preloaded into the MCP conformance runner (node --import) to add headers to every fetch it makes:
// the runner has no option for an Authorization header, and Behavry requires one.
const extra = JSON.parse(process.env.BEHAVRY_EXTRA_HEADERS ?? "{}");
const originalFetch = globalThis.fetch;
globalThis.fetch = (input, init = {}) => {
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  for (const [name, value] of Object.entries(extra)) {
    if (!headers.has(name)) headers.set(name, value);
  }
  return originalFetch(input, { ...init, headers });
};
