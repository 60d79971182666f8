// The official npm MCP client against a per-session Myriad agent (@mcp.per_session).
// usage: node mcp_session.mjs <url> <key>   -> prints one JSON line of what it saw
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "myriad-node-session-test", version: "1.0.0" });
await client.connect(transport);
const lines = [];
for (const text of ["one", "two"]) {
  const r = await client.callTool({ name: "jot", arguments: { text } });
  lines.push(JSON.parse(r.content[0].text));
}
const sessionId = transport.sessionId ?? null;
await transport.terminateSession();
console.log(JSON.stringify({ sessionId, lines }));
await client.close();
