// The scenario, driven by the unmodified npm `agents` client (AgentClient).
// Usage: node scenario.mjs HOST:PORT TOKEN NAME  -> prints one JSON line of observations.
import { AgentClient } from "agents/client";
import WebSocket from "ws";

const [host, token, name] = process.argv.slice(2);
const seen = { a: [], b: [] };
const make = (who) => new AgentClient({
  host, agent: "Counter", name, WebSocket, query: { token },
  onStateUpdate: (s, source) => seen[who].push({ source, state: s }),
});
const timeout = (p, ms, what) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error("timeout: " + what)), ms))]);
const waitFor = async (pred, what) => { for (let i = 0; i < 200; i++) { if (pred()) return; await new Promise(r => setTimeout(r, 25)); } throw new Error("timeout: " + what); };

const out = {};
const a = make("a"), b = make("b");
await timeout(Promise.all([a.ready, b.ready]), 5000, "ready");
out.identity = { name: a.name, agent: a.agent, identified: a.identified };
out.initialState = a.state;
out.add = await timeout(a.call("add", [2, 3]), 5000, "add");
const chunks = [];
out.streamDone = await timeout(a.call("count", [3], { stream: { onChunk: (c) => chunks.push(c), onDone: () => {} } }), 5000, "count");
out.chunks = chunks;
try { await a.call("nope", []); out.unknown = "no error"; } catch (e) { out.unknown = e.message; }
a.setState({ n: 42 });
await waitFor(() => seen.b.some(u => u.state && u.state.n === 42), "b sees a's state");
out.bSawSetState = seen.b.filter(u => u.state && u.state.n === 42).map(u => u.source);
out.bSawAdd = seen.b.some(u => u.state && u.state.n === 5);
out.afterSet = await timeout(b.call("add", [0, 0]), 5000, "add after set");
a.close(); b.close();
console.log(JSON.stringify(out));
process.exit(0);
