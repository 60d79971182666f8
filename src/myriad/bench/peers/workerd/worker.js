// The workerd peer of `myriad bench agents`: the same Counter as examples/counter.py,
// written with the npm `agents` package (Cloudflare Agents SDK) and served by workerd
// through miniflare. Bundled by esbuild in serve.mjs; never deployed anywhere.
import { Agent, callable, routeAgentRequest } from "agents";

export class Counter extends Agent {
  initialState = { n: 0 };

  @callable()
  add(a, b) {
    this.setState({ n: this.state.n + a + b });
    return this.state.n;
  }
}

export default {
  async fetch(request, env) {
    // /agents/counter/{name}: one Durable Object (one agent) per name
    return (await routeAgentRequest(request, env)) ?? new Response("not found", { status: 404 });
  },
};
