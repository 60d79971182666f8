"""Sandbox cold start and memory per live sandbox, for each tier, against baselines.

Cold start is *create + first run*: for the isolate tier, opening a fresh isolate
(bootstrap, tools object, console capture) and running ``1 + 1``; for the container
tier, creating a sandbox (directory, cgroup) and exec'ing ``/bin/true`` in it
(bubblewrap, namespaces, seccomp, cgroup join, uid drop). Baselines in the same run:
``node -e "1 + 1"`` as a process for isolates, and a bare fork/exec of
``/bin/true`` from the same asyncio loop for containers.

Memory per live sandbox: isolates are held open and the host's RSS growth is
divided by their number; a live container sandbox is one holding an idle process
(``sleep``), measured as the unique memory (USS) of every host process in its cgroup
plus the kernel's own count for the cgroup; baselines are an idle ``node`` process
and a bare ``sleep``. "Fit in 8 GB" divides 8 GiB by the per-sandbox figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

DESCRIPTION = __doc__ or ""
EIGHT_GB = 8 * 1024**3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--isolates", type=int, default=300, help="isolate cold starts to time (default 300)")
    p.add_argument("--live-isolates", type=int, default=500, help="isolates held open for memory (default 500)")
    p.add_argument("--containers", type=int, default=60, help="container cold starts to time (default 60)")
    p.add_argument("--live-containers", type=int, default=40, help="containers held live for memory (default 40)")
    p.add_argument("--baseline", type=int, default=30, help="baseline process starts to time (default 30)")
    p.add_argument("--skip-containers", action="store_true", help="isolates only (no bubblewrap needed)")
    p.add_argument("--disk-mb", type=int, default=1024,
                   help="container disk quota in MiB (default 1024, the server's default; 0: no quota)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from myriad.bench.report import print_table, progress, summary_ms
    from myriad.sandbox import ContainerSandbox, Sandboxes
    from myriad.settings import SandboxSettings

    tmp = Path(tempfile.mkdtemp(prefix="myriad-bench-sandbox-"))
    tmp.chmod(0o711)
    settings = SandboxSettings(root=str(tmp / "sandboxes"), warm_isolates=10**9, memory_mb=256, pids=64,
                               max_containers_per_owner=10**9, disk_mb=args.disk_mb)
    sbs = Sandboxes(settings)
    result: dict[str, Any] = {"bench": "sandbox"}
    rows: list[list[Any]] = []
    try:
        # -- isolates --------------------------------------------------------------------
        await (await sbs.open(tier="isolate")).run("1")  # load the V8 library once, off the clock
        samples = []
        for i in range(args.isolates):
            t0 = time.perf_counter()
            box = await sbs.open(tier="isolate", owner="bench", id=f"cold{i}")
            await box.run("1 + 1")
            samples.append(time.perf_counter() - t0)
            await sbs.close("bench", f"cold{i}")
            if i % 20 == 0:
                progress("isolate cold starts", i, args.isolates)
        progress("isolate cold starts", args.isolates, args.isolates)
        iso = summary_ms(samples)
        iso_mem = await _isolate_memory(sbs, args.live_isolates)
        node = await _process_baseline(["node", "-e", "1 + 1"], args.baseline, "node -e")
        node_mem = await _idle_process_uss(["node", "-e", "setTimeout(() => {}, 3600e3)"], 5)
        result["isolate"] = {**iso, **iso_mem, "fit_in_8gb": int(EIGHT_GB / max(iso_mem["bytes_per_sandbox"], 1))}
        result["baseline_node"] = {**node, "uss_bytes": node_mem, "fit_in_8gb": int(EIGHT_GB / max(node_mem, 1))}
        rows.append(["isolate (mini-racer)", iso["p50_ms"], iso["p99_ms"], _mb(iso_mem["bytes_per_sandbox"]),
                     result["isolate"]["fit_in_8gb"]])
        rows.append(["baseline: node -e", node["p50_ms"], node["p99_ms"], _mb(node_mem), result["baseline_node"]["fit_in_8gb"]])

        # -- containers ------------------------------------------------------------------
        if not args.skip_containers:
            first = await sbs.open(tier="container")
            assert isinstance(first, ContainerSandbox)
            await first.exec(["true"])  # check + sweep, off the clock
            samples = []
            for i in range(args.containers):
                t0 = time.perf_counter()
                box = await sbs.open(tier="container", owner="bench", id=f"c{i}")
                assert isinstance(box, ContainerSandbox)
                res = await box.exec(["/bin/true"])
                samples.append(time.perf_counter() - t0)
                assert res.exit_code == 0, res.stderr
                await sbs.close("bench", f"c{i}")
                if i % 10 == 0:
                    progress("container cold starts", i, args.containers)
            progress("container cold starts", args.containers, args.containers)
            ctr = summary_ms(samples)
            warm = []
            box = await sbs.open(tier="container", owner="bench", id="warm")
            assert isinstance(box, ContainerSandbox)
            for _ in range(args.baseline):
                t0 = time.perf_counter()
                await box.exec(["/bin/true"])
                warm.append(time.perf_counter() - t0)
            warm_s = summary_ms(warm)
            raw = await _raw_bwrap(box, args.baseline)
            await sbs.close("bench", "warm")
            bare = await _process_baseline(["/bin/true"], args.baseline, "fork/exec true")
            ctr_mem = await _container_memory(sbs, args.live_containers)
            sleep_mem = await _idle_process_uss(["sleep", "3600"], 5)
            result["container"] = {**ctr, **ctr_mem, "exec_warm_p50_ms": warm_s["p50_ms"],
                                   "fit_in_8gb": int(EIGHT_GB / max(ctr_mem["bytes_per_sandbox"], 1))}
            result["baseline_fork_exec"] = {**bare, "uss_bytes": sleep_mem, "fit_in_8gb": int(EIGHT_GB / max(sleep_mem, 1))}
            rows.append(["container (bwrap+cgroup)", ctr["p50_ms"], ctr["p99_ms"], _mb(ctr_mem["bytes_per_sandbox"]),
                         result["container"]["fit_in_8gb"]])
            rows.append(["  exec in a live container", warm_s["p50_ms"], warm_s["p99_ms"], "-", "-"])
            rows.append(["  bwrap alone, same flags", raw["p50_ms"], raw["p99_ms"], "-", "-"])
            result["bwrap_alone"] = raw
            rows.append(["baseline: fork/exec", bare["p50_ms"], bare["p99_ms"], _mb(sleep_mem), result["baseline_fork_exec"]["fit_in_8gb"]])
            result["container"]["cgroup_backend"] = ctr_mem.get("cgroup_backend")
    finally:
        await sbs.aclose()
        shutil.rmtree(tmp, ignore_errors=True)

    print_table("sandbox cold start (create + first run) and memory per live sandbox",
                ["tier", "p50 ms", "p99 ms", "MB each", "fit in 8 GB"], rows)
    if "container" in result:
        result["container_vs_fork_exec_p50"] = round(result["container"]["p50_ms"] / max(result["baseline_fork_exec"]["p50_ms"], 1e-9), 2)
    result["node_vs_isolate_p50"] = round(result["baseline_node"]["p50_ms"] / max(result["isolate"]["p50_ms"], 1e-9), 2)
    result["targets"] = {"isolate_p50_ms": 3, "isolate_mb": 2, "container_p50_ms": 15}
    return result


def _mb(n: float) -> float:
    return round(n / 1024**2, 3)


async def _isolate_memory(sbs: Any, n: int) -> dict[str, Any]:
    import psutil

    from myriad.bench.report import progress

    proc = psutil.Process()
    gc.collect()
    rss0 = proc.memory_info().rss
    for i in range(n):
        box = await sbs.open(tier="isolate", owner="bench-live", id=f"l{i}")
        await box.run("globalThis.x = [1, 2, 3]; x.length")
        if i % 50 == 0:
            progress("live isolates", i, n)
    progress("live isolates", n, n)
    gc.collect()
    grown = proc.memory_info().rss - rss0
    threads = proc.num_threads()
    for i in range(n):
        await sbs.close("bench-live", f"l{i}")
    return {"live": n, "bytes_per_sandbox": grown / max(n, 1), "host_threads_while_live": threads}


async def _container_memory(sbs: Any, n: int) -> dict[str, Any]:
    import psutil

    from myriad.bench.report import progress

    boxes = []
    for i in range(n):
        box = await sbs.open(tier="container", owner="bench-live", id=f"l{i}")
        await box.start_process(["sleep", "3600"])
        boxes.append(box)
        progress("live containers", i + 1, n)
    await asyncio.sleep(0.5)
    uss, cgroup_bytes, procs = [], [], []
    for box in boxes:
        # every process in the cgroup, plus bwrap's outer monitor (kept outside the group)
        pids = set(box.group.pids()) | {p.proc.pid for p in box._processes.values() if p.proc.returncode is None}
        total = 0
        for pid in pids:
            try:
                total += psutil.Process(pid).memory_full_info().uss
            except psutil.Error:
                pass
        # bwrap's outer monitor is outside the pid list only when there are no cgroups
        uss.append(total)
        procs.append(len(pids))
        cgroup_bytes.append(box.memory_bytes())
    backend = boxes[0].group.backend if boxes else None
    for box in boxes:
        await sbs.close("bench-live", box.id)
    per = statistics.median(uss) if uss else 0
    return {"live": n, "bytes_per_sandbox": per, "cgroup_bytes_median": statistics.median(cgroup_bytes) if cgroup_bytes else 0,
            "processes_per_sandbox": statistics.median(procs) if procs else 0, "cgroup_backend": backend}


async def _raw_bwrap(box: Any, n: int) -> dict[str, Any]:
    """bubblewrap with the sandbox's own namespaces and mounts, without Myriad's wrappers,
    cgroup, seccomp or proxy plumbing: how much of the cold start is bwrap itself."""
    import os

    from myriad.bench.report import summary_ms

    tier = box._tier
    ws = os.open(box.workspace_dir, os.O_PATH | os.O_DIRECTORY)
    tmp = os.open(box.tmp_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        argv = tier.layout.argv(workspace_fd=ws, tmp_fd=tmp, cwd="/workspace", env={"PATH": "/usr/bin:/bin"})
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(tier.bwrap, *argv, "--", "/bin/true", pass_fds=[ws, tmp, *tier.layout.fds],
                                                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            await proc.communicate()
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(ws)
        os.close(tmp)
    return summary_ms(samples)


async def _process_baseline(argv: list[str], n: int, label: str) -> dict[str, Any]:
    from myriad.bench.report import progress, summary_ms

    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        await proc.communicate()
        samples.append(time.perf_counter() - t0)
        progress(f"baseline {label}", i + 1, n)
    return summary_ms(samples)


async def _idle_process_uss(argv: list[str], n: int) -> float:
    import psutil

    procs = [await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL) for _ in range(n)]
    await asyncio.sleep(0.8)
    sizes = []
    for p in procs:
        try:
            sizes.append(psutil.Process(p.pid).memory_full_info().uss)
        except psutil.Error:
            pass
        p.kill()
        await p.wait()
    return float(statistics.median(sizes)) if sizes else 0.0


__all__ = ["DESCRIPTION", "add_arguments", "run"]
