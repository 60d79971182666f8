// The official npm MCP client (@modelcontextprotocol/sdk) against a Myriad agent.
// usage: node mcp_client.mjs <url> <key>   -> prints one JSON line of what it saw
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "myriad-node-test", version: "1.0.0" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
const added = await client.callTool({ name: "add_note", arguments: { text: "from node" } });
const found = await client.callTool({ name: "search", arguments: { query: "node" } });
const resource = await client.readResource({ uri: "notes://all" });
const prompt = await client.getPrompt({ name: "summarize", arguments: { topic: "node" } });
console.log(JSON.stringify({
  protocol: transport.protocolVersion ?? null,
  tools,
  added: added.structuredContent,
  found: JSON.parse(found.content[0].text),
  resource: resource.contents[0].text,
  prompt: prompt.messages[0].content.text,
}));
await client.close();
