"""Telemetry overhead: host CPU per turn with telemetry off, on (local store), and on
with OTLP export, measured in the same run.

Three Myriad hosts (real ``uvicorn`` + ``AgentHost`` processes) serve the same agent:
each turn arrives as an HTTP RPC, makes 2 streamed model calls through the gateway to
the simulated OpenAI-compatible upstream over HTTP (labelled SIMULATED; instant
replies, so the turn is pure host work), and persists its state. The hosts differ only
in telemetry:

- ``off``:   ``MYRIAD_TELEMETRY__ENABLED=false`` (nothing wrapped);
- ``local``: spans and metrics into the in-process store behind the dashboard;
- ``otlp``:  the same plus OTLP/HTTP export (batched) to a sink process;
- ``otlp-sampled``: as ``otlp`` with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``
  at 10% (metrics stay complete; the dashboard shows the sampled turns).

Turns go in blocks, the hosts interleaved block by block in a shuffled order so drift
and noise on this shared machine hit all three alike. The host's CPU (user + system,
every thread: export threads included) is read from /proc before and after each
block. Reported: median CPU per turn per mode, and the overhead against ``off`` as the
median of per-round ratios. Target: <= 3% (DESIGN.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from myriad.bench._cpu import process_cpu_s
from myriad.bench.report import print_table, progress

DESCRIPTION = __doc__ or ""
MODES = ("off", "local", "otlp", "otlp-sampled")

_SINK = textwrap.dedent("""
    import sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    stats = {"requests": 0, "bytes": 0}
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            self.rfile.read(n)
            stats["requests"] += 1; stats["bytes"] += n
            self.send_response(200); self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0"); self.end_headers()
        def do_GET(self):
            import json
            body = json.dumps(stats).encode()
            self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    s = ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(s.server_address[1], flush=True)
    s.serve_forever()
""")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--turns", type=int, default=2000, help="measured turns per mode (default 2000)")
    parser.add_argument("--block", type=int, default=100, help="turns per block (default 100)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured turns per host first (default 200)")
    parser.add_argument("--agents", type=int, default=50, help="agent instances the turns rotate over")
    parser.add_argument("--tokens", type=int, default=30, help="simulated reply tokens per model call")
    parser.add_argument("--seed", type=int, default=1)


def _agent_class() -> type:
    from myriad.agents import Agent, callable

    class TelemetryBenchAgent(Agent):
        initial_state = {"turns": 0}

        @callable()
        async def turn(self, text: str) -> str:
            plan = await self.models.stream_text(text)
            answer: str = await self.models.stream_text(
                [{"role": "user", "content": text}, {"role": "assistant", "content": plan},
                 {"role": "user", "content": "and so?"}])
            self.set_state({"turns": self.state["turns"] + 1, "last": answer[:40]})
            return answer[:40]

    return TelemetryBenchAgent


def serve_main(spec_json: str) -> None:
    """Entry point of one host process (``python -c``)."""
    import asyncio

    import uvicorn

    from myriad.server import build_services, create_app
    from myriad.settings import ModelsSettings, Settings, TelemetrySettings

    spec = json.loads(spec_json)
    os.environ.update(spec["env"])
    settings = Settings(data_dir=Path(spec["data_dir"]), port=spec["port"],
                        models=ModelsSettings(config=spec["models_config"]),
                        telemetry=TelemetrySettings(enabled=spec["telemetry"]))
    settings.metering.enabled = False  # measure telemetry, not the ledger
    services = build_services(settings, [_agent_class()])
    config = uvicorn.Config(create_app(services), host="127.0.0.1", port=spec["port"], log_level="warning",
                            access_log=False, lifespan="on")
    asyncio.run(uvicorn.Server(config).serve())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])




def _start_host(mode: str, root: Path, models_config: Path, sink_url: str) -> tuple[subprocess.Popen[bytes], str, str]:
    from myriad.identity import KeyStore

    data = root / mode
    keys = KeyStore(data)
    keys.create_tenant("bench")
    _, key = keys.create_key("bench")
    keys.close()
    port = _free_port()
    env = {"OTEL_SDK_DISABLED": "false"}
    if mode.startswith("otlp"):
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink_url, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_BSP_SCHEDULE_DELAY="200")
    if mode == "otlp-sampled":
        env.update(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.1")
    spec = {"data_dir": str(data), "port": port, "models_config": str(models_config), "telemetry": mode != "off",
            "env": env}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen([sys.executable, "-c", f"from myriad.bench.telemetry import serve_main; "
                             f"serve_main({json.dumps(json.dumps(spec))})"], env=clean,
                            stdout=subprocess.DEVNULL, stderr=open(root / f"{mode}.log", "wb"))
    return proc, f"http://127.0.0.1:{port}", key


def _wait_up(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"host exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"host at {url} did not come up: {log.read_text()[-2000:]}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from myriad.models.simulated import start_simulated_upstream

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="myriad-bench-telemetry-"))
    upstream = start_simulated_upstream(mode="process", ttft=0.0, tps=0.0, tokens=args.tokens)
    sink = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        assert sink.stdout is not None
        sink_url = f"http://127.0.0.1:{int(sink.stdout.readline())}"
        models_config = root / "models.toml"
        models_config.write_text(textwrap.dedent(f"""
            [router]
            default_model = "sim-small"
            [[deployment]]
            model = "sim-small"
            provider = "openai"
            upstream_model = "sim-small"
            base_url = "{upstream.base_url}"
            price = {{ input = 0.15, output = 0.60 }}
        """))
        clients, urls = {}, {}
        for mode in MODES:
            procs[mode], urls[mode], key = _start_host(mode, root, models_config, sink_url)
            clients[mode] = httpx.Client(base_url=urls[mode], headers={"authorization": f"Bearer {key}"}, timeout=30)
        for mode in MODES:
            _wait_up(procs[mode], urls[mode], root / f"{mode}.log")
        print(f"{len(MODES)} Myriad hosts (telemetry {', '.join(MODES)}); SIMULATED upstream over HTTP; "
              f"{args.turns} measured turns per host in blocks of {args.block}", flush=True)

        counter = [0]

        def turns(mode: str, n: int) -> list[float]:
            lat = []
            c = clients[mode]
            for _ in range(n):
                i = counter[0] = counter[0] + 1
                t0 = time.perf_counter()
                r = c.post(f"/v1/agents/telemetry-bench-agent/a{i % args.agents}/rpc",
                           json={"method": "turn", "args": [f"question {i}"]})
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{mode} host answered {r.status_code}: {r.text[:300]}")
            return lat

        for mode in MODES:
            turns(mode, args.warmup)
        blocks = max(1, args.turns // args.block)
        per_turn: dict[str, list[float]] = {m: [] for m in MODES}
        latency: dict[str, list[float]] = {m: [] for m in MODES}
        for b in range(blocks):
            order = list(MODES)
            rng.shuffle(order)
            for mode in order:
                pid = procs[mode].pid
                before = process_cpu_s(pid)
                latency[mode] += turns(mode, args.block)
                time.sleep(0.3)  # let the batch exporter ship this block's spans (counted here)
                per_turn[mode].append((process_cpu_s(pid) - before) / args.block)
            progress("telemetry bench", b + 1, blocks)
        exported = httpx.get(sink_url, timeout=5).json()
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        sink.kill()
        upstream.close()

    off = statistics.median(per_turn["off"])
    result: dict[str, Any] = {"bench": "telemetry", "turns_per_mode": blocks * args.block, "block": args.block,
                              "model_calls_per_turn": 2, "simulated_upstream": True, "modes": {}}
    rows = []
    for mode in MODES:
        med = statistics.median(per_turn[mode])
        ratios = [a / b for a, b in zip(per_turn[mode], per_turn["off"]) if b > 0]
        overhead = (statistics.median(ratios) - 1) * 100 if mode != "off" else 0.0
        lat = sorted(latency[mode])
        entry: dict[str, Any] = {"cpu_us_per_turn_median": round(med * 1e6, 1),
                 "cpu_us_per_turn_p10_p90": [round(_q(per_turn[mode], 0.1) * 1e6, 1),
                                             round(_q(per_turn[mode], 0.9) * 1e6, 1)],
                 "overhead_pct_vs_off": round(overhead, 2),
                 "overhead_pct_of_medians": round((med / off - 1) * 100, 2) if off else None,
                 "turn_latency_p50_ms": round(lat[len(lat) // 2] * 1000, 3)}
        result["modes"][mode] = entry
        rows.append([mode, entry["cpu_us_per_turn_median"], f"{entry['cpu_us_per_turn_p10_p90'][0]}-"
                     f"{entry['cpu_us_per_turn_p10_p90'][1]}", f"{overhead:+.2f}%" if mode != "off" else "baseline",
                     entry["turn_latency_p50_ms"]])
    result["exported"] = exported
    result["target_pct"] = 3.0
    result["otlp_overhead_pct"] = result["modes"]["otlp"]["overhead_pct_vs_off"]
    result["otlp_sampled_overhead_pct"] = result["modes"]["otlp-sampled"]["overhead_pct_vs_off"]
    print_table("host CPU per turn (HTTP RPC, 2 streamed model calls, state persisted)",
                ["telemetry", "CPU us/turn (median)", "p10-p90", "overhead vs off", "turn p50 ms"], rows)
    print(f"\nOTLP sink received {exported['requests']} export requests, {exported['bytes']:,} bytes; "
          f"target overhead <= 3%", flush=True)
    return result


def _q(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


__all__ = ["DESCRIPTION", "add_arguments", "run", "serve_main"]
