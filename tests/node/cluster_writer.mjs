// One npm AgentClient writing to a Tally agent through a cluster front door, across
// a shard failure: it keeps calling add(1), counts acknowledged results, and notes
// the state the agent sends again after each reconnect.
// Usage: node cluster_writer.mjs HOST:PORT TOKEN NAME SECONDS -> one JSON line.
import { AgentClient } from "agents/client";
import WebSocket from "ws";

const [host, token, name, seconds] = process.argv.slice(2);
const out = { acked: [], errors: 0, identities: 0, statesAfterReconnect: [] };
let identities = 0;
const c = new AgentClient({
  host, agent: "Tally", name, WebSocket, query: { token },
  onStateUpdate: (s, source) => { if (source === "server" && identities > 1) out.statesAfterReconnect.push(s.n); },
  onIdentity: () => { identities += 1; },
});
c.addEventListener("open", () => { out.identities += 1; });
await c.ready;
const end = Date.now() + Number(seconds) * 1000;
while (Date.now() < end) {
  try {
    const r = await Promise.race([c.call("add", [1]), new Promise((_, rej) => setTimeout(() => rej(new Error("timeout")), 3000))]);
    out.acked.push(r);
  } catch (e) {
    out.errors += 1;
    await new Promise(r => setTimeout(r, 100));
  }
  await new Promise(r => setTimeout(r, 20));
}
c.close();
console.log(JSON.stringify(out));
process.exit(0);
