"""How many hibernated agents one machine holds, and how fast one wakes.

Creates N agents through the real runtime (each: a turn that creates its row and
persists a small state), hibernates them all, then wakes random ones. Reports host
RSS (and its growth per agent), bytes on disk per agent, and wake latency p50/p99.
Baseline in the same run: the same call on an agent that is already resident, so
"wake cost" is the difference between the two.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

DESCRIPTION = __doc__ or ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", type=int, default=100_000, help="agents to create (default 100,000)")
    p.add_argument("--samples", type=int, default=2_000, help="random wakes to time (default 2,000)")
    p.add_argument("--data-dir", type=Path, help="where to put the data (default: a temp dir, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the data directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    from myriad.agents import Agent, AgentHost, AgentRef, callable
    from myriad.bench.report import print_table, progress, summary_ms
    from myriad.settings import AgentSettings
    from myriad.storage import SQLiteStorage

    class Sleeper(Agent):
        initial_state = None

        @callable()
        async def init(self, i: int) -> None:
            self.set_state({"i": i, "user": f"user-{i}", "notes": []})

        @callable()
        async def get(self) -> Any:
            return self.state

    proc = psutil.Process()
    tmp = args.data_dir or Path(tempfile.mkdtemp(prefix="myriad-bench-hib-"))
    storage = SQLiteStorage(tmp)
    await storage.open()
    host = AgentHost(storage, AgentSettings(max_resident=1_000, hibernate_after=3600))
    host.register(Sleeper)
    n = args.agents

    def ref_of(i: int) -> AgentRef:  # addresses are made on the fly: the host keeps none
        return AgentRef("bench", "sleeper", f"a{i}")

    gc.collect()
    rss0 = proc.memory_info().rss

    t0 = time.perf_counter()
    step = max(1, n // 100)
    for i in range(n):
        await host.call(ref_of(i), "init", [i])
        if i % step == 0:
            await asyncio.sleep(0)  # let the loop run, as a server's would between requests
            progress("creating agents", i, n)
    progress("creating agents", n, n)
    create_s = time.perf_counter() - t0
    host.hibernate_idle(0)
    storage.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    gc.collect()
    rss1 = proc.memory_info().rss
    disk = storage.disk_bytes()

    rng = random.Random(42)
    wake: list[float] = []
    warm: list[float] = []
    for k in range(args.samples):
        ref = ref_of(rng.randrange(n))
        assert host._slots.get(ref.path) is None or host._slots[ref.path].agent is None
        t = time.perf_counter()
        state = await host.call(ref, "get")
        wake.append(time.perf_counter() - t)
        assert state["i"] == int(ref.name[1:])
        t = time.perf_counter()
        await host.call(ref, "get")  # baseline: the same call, agent already resident
        warm.append(time.perf_counter() - t)
        host.hibernate_idle(0)
        if k % max(1, args.samples // 20) == 0:
            progress("waking random agents", k, args.samples)
    progress("waking random agents", args.samples, args.samples)
    await host.stop()
    await storage.close()
    if not args.keep and args.data_dir is None:
        shutil.rmtree(tmp, ignore_errors=True)

    w, b = summary_ms(wake), summary_ms(warm)
    rss_per_agent = (rss1 - rss0) / n
    disk_per_agent = disk / n
    mem = psutil.virtual_memory().total
    result = {
        "bench": "hibernation",
        "agents": n,
        "create_per_s": round(n / create_s),
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_after_mb": round(rss1 / 2**20, 1),
        "rss_growth_bytes_per_agent": round(rss_per_agent, 1),
        "disk_bytes_per_agent": round(disk_per_agent, 1),
        "wake_p50_ms": w["p50_ms"],
        "wake_p99_ms": w["p99_ms"],
        "resident_call_p50_ms": b["p50_ms"],
        "resident_call_p99_ms": b["p99_ms"],
        "wake_cost_p50_ms": round(w["p50_ms"] - b["p50_ms"], 4),
        "machine_memory_gb": round(mem / 2**30, 1),
    }
    print_table(
        f"hibernation: {n:,} agents created ({result['create_per_s']:,}/s), all hibernated",
        ["measure", "value"],
        [
            ["host RSS before creating (MB)", result["rss_before_mb"]],
            ["host RSS with all hibernated (MB)", result["rss_after_mb"]],
            ["RSS growth per hibernated agent (bytes)", result["rss_growth_bytes_per_agent"]],
            ["disk per agent (bytes)", result["disk_bytes_per_agent"]],
            ["wake + call p50 / p99 (ms)", f"{w['p50_ms']:.3f} / {w['p99_ms']:.3f}"],
            ["baseline: resident call p50 / p99 (ms)", f"{b['p50_ms']:.3f} / {b['p99_ms']:.3f}"],
            ["wake cost p50 (ms)", result["wake_cost_p50_ms"]],
        ],
    )
    print("targets: wake p50 <= 1 ms, p99 <= 10 ms; 1,000,000 agents on a 24 GB machine\n")
    return result
