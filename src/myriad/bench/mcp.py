"""MCP: what Myriad adds to a tool call, and Code Mode against tool-call round trips.

1. Serving. The same ``echo`` tool served two ways, called with the same client
   (JSON-RPC ``tools/call`` over HTTP, revision 2025-11-25, one request at a time):
     direct   the official ``mcp`` SDK's MCPServer (stateless, JSON answers)
     myriad   a Myriad agent's MCP endpoint ``/mcp/echo/{name}`` (full default stack:
              auth, per-tool scope check, one agent turn, metering and telemetry)
   Prints p50/p99 latency and server CPU per call (the server process's CPU time over
   the run / calls).
   Calling. An agent's call to a remote MCP server (the SDK's MCPServer above) through
   Myriad's outbound path (delegated token checked for ``egress:``, the user's vault
   credential injected, RFC 9421 signature, audit row) against the same call with a
   plain HTTP client: p50/p99 and client CPU per call (this process).
2. Ten tools. Ten MCP tools (``lookup_0`` .. ``lookup_9``) used to answer one task,
   with the SIMULATED model (its own latency profile) through Myriad's gateway:
     round trips  the model calls one tool per turn: 10 tool calls + 1 answer = 11 model calls
     code mode    the model reads the tools' TypeScript declaration and writes one script
                  (the script a model would write is supplied; its tokens are counted as
                  completion tokens), the script runs in a V8 isolate calling all 10
                  tools, then one model call answers: 2 model calls
   Prints model calls, tokens and wall time for both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DESCRIPTION = __doc__ or ""
_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2025-11-25"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=2000, help="tools/call requests per server (default 2000)")
    parser.add_argument("--no-model", action="store_true", help="skip part 2 (model round trips vs Code Mode)")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, headers: dict[str, str], proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    import httpx

    ping = {"jsonrpc": "2.0", "id": 0, "method": "ping"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            if httpx.post(url, json=ping, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


def _round_trips(url: str, headers: dict[str, str], pid: int, n: int, label: str) -> dict[str, Any]:
    import httpx

    from myriad.bench._cpu import process_cpu_s
    from myriad.bench.report import progress, summary_ms

    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}
    samples: list[float] = []
    with httpx.Client(headers=headers, timeout=30) as client:
        for _ in range(min(200, n)):  # warm up (imports, first turns)
            client.post(url, json=body).raise_for_status()
        cpu0 = process_cpu_s(pid)
        for i in range(n):
            t0 = time.perf_counter()
            r = client.post(url, json=body)
            samples.append(time.perf_counter() - t0)
            if r.status_code != 200 or r.json().get("result", {}).get("isError"):
                raise RuntimeError(f"{label}: tools/call failed: {r.status_code} {r.text[:200]}")
            if i % 100 == 0:
                progress(label, i, n)
        progress(label, n, n)
        cpu = process_cpu_s(pid) - cpu0
    return {**summary_ms(samples), "server_cpu_ms_per_call": round(cpu * 1000 / n, 4)}


def _part1(n: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    data = Path(tempfile.mkdtemp(prefix="myriad-bench-mcp-"))
    up_port, my_port = _free_port(), _free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "myriad.bench._mcp_upstream", str(up_port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = subprocess.Popen([sys.executable, "-m", "myriad", "serve", "--data-dir", str(data / "data"), "--port",
                               str(my_port), "--agents", "myriad.bench._mcp_upstream"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        direct_url = f"http://127.0.0.1:{up_port}/mcp"
        _wait(direct_url, _HEADERS, upstream)
        deadline = time.monotonic() + 60
        while not (data / "data" / "default.key").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        key = (data / "data" / "default.key").read_text().strip()
        myriad_url = f"http://127.0.0.1:{my_port}/mcp/echo/bench"
        my_headers = {**_HEADERS, "authorization": f"Bearer {key}"}
        _wait(myriad_url, my_headers, server)
        direct = _round_trips(direct_url, _HEADERS, upstream.pid, n, "direct")
        via = _round_trips(myriad_url, my_headers, server.pid, n, "myriad")
        calling = asyncio.run(_calling(direct_url, n))
    finally:
        for p in (upstream, server):
            p.terminate()
        for p in (upstream, server):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    return {"direct": direct, "myriad": via, "calling": calling,
            "cpu_ratio_direct_over_myriad": round(direct["server_cpu_ms_per_call"] / max(1e-9, via["server_cpu_ms_per_call"]), 2)}


async def _calling(url: str, n: int) -> dict[str, Any]:
    import httpx

    from myriad.bench.report import summary_ms
    from myriad.identity import Identity, KeyStore
    from myriad.mcp import McpSession
    from myriad.settings import IdentitySettings

    data = Path(tempfile.mkdtemp(prefix="myriad-bench-mcp-id-"))
    keys = KeyStore(data)
    keys.open()
    keys.create_tenant("bench")
    identity = Identity(IdentitySettings(), keys, data)
    user = identity.tokens.user_token("bench", "alice", scopes="*", resources=["urn:myriad:egress"])
    agent = identity.for_agent("bench", "researcher/alice")
    delegated = await agent.act_for(user, scope="egress:127.0.0.1 vault:svc", resources=["urn:myriad:egress"])
    principal = await identity.authenticate(delegated)
    identity.vault.put("bench", "alice", "svc", "s3cret-token-value-xyz", domains=["127.0.0.1"])
    out: dict[str, Any] = {}
    for label, http in (("plain", httpx.AsyncClient(timeout=30)),
                        ("outbound", identity.outbound.client(principal, timeout=30))):
        session = McpSession(url, http, 30.0, "'bench'")
        args = {"name": "echo", "arguments": {"text": "hi"}}
        for _ in range(min(100, n)):
            await session.request("tools/call", args)
        samples = []
        cpu0 = time.process_time()
        for _ in range(n):
            t0 = time.perf_counter()
            await session.request("tools/call", args)
            samples.append(time.perf_counter() - t0)
        out[label] = {**summary_ms(samples), "client_cpu_ms_per_call": round((time.process_time() - cpu0) * 1000 / n, 4)}
        await http.aclose()
    keys.close()
    out["added_p50_ms"] = round(out["outbound"]["p50_ms"] - out["plain"]["p50_ms"], 4)
    out["added_cpu_ms_per_call"] = round(out["outbound"]["client_cpu_ms_per_call"] - out["plain"]["client_cpu_ms_per_call"], 4)
    return out


_TASK = "For ids 1..10, look up record k for id k+1 and tell me the sum of the values."
_SCRIPT = """async () => {
  let sum = 0;
  for (let k = 0; k < 10; k++) {
    const r = await tools[`lookup_${k}`]({ id: k + 1 });
    sum += r.value;
  }
  return { sum };
}"""


async def _part2() -> dict[str, Any]:
    import httpx

    from myriad.mcp import McpSession
    from myriad.models import Gateway
    from myriad.models._tokens import estimate_text_tokens
    from myriad.sandbox import Sandboxes, Tool, render_typescript
    from myriad.settings import Settings

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    port = _free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "myriad.bench._mcp_upstream", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = Settings()
    gateway = Gateway.from_settings(settings.models, env={})
    sandboxes = Sandboxes(settings.sandbox, data_dir=Path(tempfile.mkdtemp(prefix="myriad-bench-mcp-sb-")))
    http = httpx.AsyncClient(timeout=30)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        await asyncio.to_thread(_wait, url, _HEADERS, upstream)
        session = McpSession(url, http, 30.0, "'bench'")
        specs = [t for t in (await session.request("tools/list"))["tools"] if t["name"].startswith("lookup_")]
        functions = [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                                       "parameters": t["inputSchema"]}} for t in specs]

        # round trips: one tool call per model turn
        t0 = time.perf_counter()
        messages: list[dict[str, Any]] = [{"role": "user", "content": _TASK}]
        prompt = completion = calls = 0
        for k in range(10):
            r = await gateway.chat({"messages": messages, "tools": functions,
                                    "tool_choice": {"type": "function", "function": {"name": f"lookup_{k}"}}})
            calls += 1
            prompt, completion = prompt + r.raw["usage"]["prompt_tokens"], completion + r.raw["usage"]["completion_tokens"]
            call = r.raw["choices"][0]["message"]["tool_calls"][0]
            result = await session.request("tools/call", {"name": call["function"]["name"],
                                                          "arguments": json.loads(call["function"]["arguments"])})
            messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result["structuredContent"])}]
        r = await gateway.chat({"messages": messages, "tools": functions})
        calls += 1
        prompt, completion = prompt + r.raw["usage"]["prompt_tokens"], completion + r.raw["usage"]["completion_tokens"]
        trips = {"model_calls": calls, "prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion, "wall_s": round(time.perf_counter() - t0, 3)}

        # code mode: one script against typed tools
        async def mcp_tool(name: str, **arguments: Any) -> Any:
            return (await session.request("tools/call", {"name": name, "arguments": arguments}))["structuredContent"]

        tools = [Tool(t["name"], (lambda n: (lambda **a: mcp_tool(n, **a)))(t["name"]), t.get("description", ""),
                      t["inputSchema"]) for t in specs]
        t0 = time.perf_counter()
        system = "Write one JavaScript async function that uses these tools:\n" + render_typescript(tools)
        r1 = await gateway.chat({"messages": [{"role": "system", "content": system}, {"role": "user", "content": _TASK}]})
        box = await sandboxes.open(tier="isolate", tools=tools)
        try:
            value = (await box.run(_SCRIPT)).value
        finally:
            await box.close()
        r2 = await gateway.chat({"messages": [{"role": "system", "content": system}, {"role": "user", "content": _TASK},
                                              {"role": "assistant", "content": _SCRIPT},
                                              {"role": "user", "content": "The script returned " + json.dumps(value)}]})
        prompt = r1.raw["usage"]["prompt_tokens"] + r2.raw["usage"]["prompt_tokens"]
        completion = estimate_text_tokens(_SCRIPT) + r2.raw["usage"]["completion_tokens"]
        code = {"model_calls": 2, "prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion, "wall_s": round(time.perf_counter() - t0, 3),
                "script_result": value}
    finally:
        await http.aclose()
        await gateway.aclose()
        await sandboxes.aclose()
        upstream.terminate()
        upstream.wait(10)
    return {"round_trips": trips, "code_mode": code,
            "token_ratio": round(trips["total_tokens"] / max(1, code["total_tokens"]), 2),
            "wall_ratio": round(trips["wall_s"] / max(1e-9, code["wall_s"]), 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from myriad.bench.report import print_table

    part1 = _part1(args.calls)
    print_table(f"Serving: MCP tools/call round trip, {args.calls} calls each, one at a time (same client)",
                ["server", "p50 ms", "p99 ms", "server CPU ms/call"],
                [["direct (mcp SDK MCPServer)", part1["direct"]["p50_ms"], part1["direct"]["p99_ms"],
                  part1["direct"]["server_cpu_ms_per_call"]],
                 ["myriad (agent, full stack)", part1["myriad"]["p50_ms"], part1["myriad"]["p99_ms"],
                  part1["myriad"]["server_cpu_ms_per_call"]]])
    c = part1["calling"]
    print_table(f"Calling: an agent's tools/call to the SDK's MCPServer, {args.calls} calls each",
                ["client", "p50 ms", "p99 ms", "client CPU ms/call"],
                [["plain HTTP client", c["plain"]["p50_ms"], c["plain"]["p99_ms"], c["plain"]["client_cpu_ms_per_call"]],
                 ["myriad outbound path", c["outbound"]["p50_ms"], c["outbound"]["p99_ms"],
                  c["outbound"]["client_cpu_ms_per_call"]],
                 ["added by myriad", c["added_p50_ms"], "", c["added_cpu_ms_per_call"]]])
    result: dict[str, Any] = {"bench": "mcp", "calls": args.calls, "round_trip": part1}
    if not args.no_model:
        part2 = asyncio.run(_part2())
        rows = [[name, d["model_calls"], d["prompt_tokens"], d["completion_tokens"], d["total_tokens"], d["wall_s"]]
                for name, d in (("10 tool-call round trips", part2["round_trips"]), ("Code Mode script", part2["code_mode"]))]
        print_table("Ten MCP tools for one task, SIMULATED model (its latency profile)",
                    ["approach", "model calls", "prompt tok", "completion tok", "total tok", "wall s"], rows)
        print(f"round trips / Code Mode: {part2['token_ratio']}x tokens, {part2['wall_ratio']}x wall time")
        result["ten_tools"] = part2
    return result
