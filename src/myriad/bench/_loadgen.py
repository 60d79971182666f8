"""The density load generator: WebSocket sessions with exponential think time.

Runs in its own process (pinned to the non-host core). Each session connects to an
agent, then loops: think ~Exp(think), send one RPC, wait for its reply. The agent
reports how long it awaited the model (``model_ms``); what is left of the round
trip is the latency the host added (queueing, protocol, persistence).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Sample:
    sent: float
    rtt: float
    host_added: float


@dataclass
class LoadState:
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    connected: int = 0
    stop: bool = False


async def _session(http: Any, url: str, think: float, rng: random.Random, st: LoadState, method: str) -> None:
    try:
        ws = await http.ws_connect(url, max_msg_size=0, heartbeat=None, autoping=True)
    except Exception:
        st.errors += 1
        return
    st.connected += 1
    try:
        for _ in range(3):  # identity, state, mcp
            await ws.receive()
        k = 0
        while not st.stop:
            await asyncio.sleep(rng.expovariate(1.0 / think))
            if st.stop:
                break
            k += 1
            rid = str(k)
            t0 = time.perf_counter()
            await ws.send_str(json.dumps({"type": "rpc", "id": rid, "method": method, "args": [f"message {k}"]}))
            while True:
                msg = await ws.receive()
                if msg.type != 1:  # not TEXT: closed or error
                    st.errors += 1
                    return
                data = json.loads(msg.data)
                if data.get("type") == "rpc" and data.get("id") == rid:
                    break
            rtt = time.perf_counter() - t0
            if not data.get("success"):
                st.errors += 1
                continue
            model_s = data["result"]["model_ms"] / 1000
            st.samples.append(Sample(t0, rtt, max(0.0, rtt - model_s)))
    except Exception:
        st.errors += 1
    finally:
        st.connected -= 1
        await ws.close()


async def run_levels(
    urls: Callable[[int], str],
    levels: list[int],
    think: float,
    duration: float,
    host_pid: int,
    report: Callable[[dict[str, Any]], None],
    method: str = "turn",
    max_p99_ms: float = 100.0,
    connect_rate: int = 1000,
    sum_children: bool = False,
    counters: Callable[[], dict[str, int]] | None = None,
    settle: float | None = None,
    stop_at_miss: bool = True,
) -> None:
    """Ramp through ``levels`` of concurrent sessions; call ``report`` per level.
    ``counters`` (optional) is read at both edges of each measured window; each level
    reports how much every counter grew in it. Each level is measured ``settle`` seconds
    (default ``think``) after its last session connected."""
    import aiohttp
    import psutil

    host = psutil.Process(host_pid)

    def sample() -> tuple[float, int, int]:
        procs = host.children() if sum_children else [host]
        cpu: float = 0
        rss = threads = 0
        for p in procs:
            try:
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
                threads += p.num_threads()
            except psutil.Error:
                pass
        return cpu, rss, threads
    st = LoadState()
    rng = random.Random(7)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        for level in levels:
            started = time.perf_counter()
            while len(tasks) < level:  # open new sessions at a bounded rate
                batch = min(level - len(tasks), max(1, connect_rate // 10))
                for _ in range(batch):
                    i = len(tasks)
                    tasks.append(asyncio.create_task(_session(http, urls(i), think, rng, st, method)))
                await asyncio.sleep(0.1)
            await asyncio.sleep(think if settle is None else settle)  # let sessions reach their steady rhythm
            cpu0, _, _ = sample()
            c0 = counters() if counters else {}
            t0 = time.perf_counter()
            n0 = len(st.samples)
            err0 = st.errors
            await asyncio.sleep(duration)
            t1 = time.perf_counter()
            cpu1, rss, threads = sample()
            c1 = counters() if counters else {}
            window = [s for s in st.samples[n0:] if s.sent >= t0]
            added = sorted(s.host_added for s in window)
            rtts = sorted(s.rtt for s in window)

            def pct(xs: list[float], p: float) -> float:
                return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000 if xs else float("nan")
            result: dict[str, Any] = {
                "sessions": level,
                "connected": st.connected,
                "turns": len(window),
                "turns_per_s": round(len(window) / (t1 - t0), 1),
                "host_added_p50_ms": round(pct(added, 50), 2),
                "host_added_p99_ms": round(pct(added, 99), 2),
                "rtt_p50_ms": round(pct(rtts, 50), 1),
                "host_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
                # all the host's CPU in the window over the turns sent and answered in it
                "cpu_ms_per_turn": round(1000 * (cpu1 - cpu0) / len(window), 2) if window else None,
                "host_rss_mb": round(rss / 2**20, 1),
                "host_threads": threads,
                **{k: c1[k] - c0.get(k, 0) for k in c1},
                "errors": st.errors - err0,
                "ramp_s": round(t0 - started, 1),
            }
            report(result)
            ok = result["host_added_p99_ms"] <= max_p99_ms and result["errors"] == 0 and st.connected >= level * 0.99
            if not ok and stop_at_miss:
                break
        st.stop = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["run_levels"]
