"""``myriad capacity``: what a deployment of N simultaneous sessions needs, from the
numbers the benches measured here (``myriad bench density``, ``scale``,
``hibernation``), next to the container-per-agent figure.

Results are read from ``<data dir>/bench/<name>.json`` (every ``myriad bench`` run
saves its JSON line there) or from files given with ``--results`` (any file whose
lines include a bench's JSON line). Where a result is missing, the figure measured
and written in docs/benchmarks.md is used and the output says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from myriad.bench.report import print_table

# Published measurements (docs/benchmarks.md, docs/cluster.md), used when no result file exists.
FALLBACK = {
    "density": {"myriad_sessions_per_core": 2000, "think_s": 10.0, "rss_kb_per_session": 790.0},
    "scale": {"front_door_cpu_ms_per_turn": 0.27, "efficiency": 1.0},
    "hibernation": {"disk_bytes_per_agent": 2048.0},
}
CONTAINER_SESSIONS_PER_CPU = (25, 50)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions", type=int, default=24_000_000, help="simultaneous sessions to plan for")
    p.add_argument("--think", type=float, default=10.0, help="mean seconds between a session's messages")
    p.add_argument("--cores-per-machine", type=int, default=64)
    p.add_argument("--memory-per-machine-gb", type=float, default=256.0)
    p.add_argument("--agents", type=int, default=0,
                   help="agents stored in total (default: 4x the sessions), for disk")
    p.add_argument("--lease-ttl", type=float, default=2.0, help="shard lease (heartbeats = 4 per ttl per shard)")
    p.add_argument("--results", nargs="*", default=None, help="files holding bench JSON lines (default: saved results)")
    p.add_argument("--data-dir", type=Path, default=None, help="where saved results live (default .myriad)")


def results_dir(data_dir: Path | None = None) -> Path:
    return Path(data_dir or os.environ.get("MYRIAD_DATA_DIR") or ".myriad") / "bench"


def save_result(result: dict[str, Any], data_dir: Path | None = None) -> Path | None:
    """Keep a bench's JSON so ``myriad capacity`` can read it (best effort)."""
    name = result.get("bench")
    if not isinstance(name, str) or not name.isidentifier():
        return None
    try:
        d = results_dir(data_dir)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{name}.json"
        path.write_text(json.dumps(result, default=str) + "\n")
        return path
    except OSError:
        return None


def load_results(files: list[str] | None, data_dir: Path | None = None) -> dict[str, tuple[dict[str, Any], str]]:
    paths = [Path(f) for f in files] if files else sorted(results_dir(data_dir).glob("*.json"))
    found: dict[str, tuple[dict[str, Any], str]] = {}
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("bench"), str):
                found[data["bench"]] = (data, str(path))
    return found


def _inputs(found: dict[str, tuple[dict[str, Any], str]]) -> tuple[dict[str, float], dict[str, str]]:
    val: dict[str, float] = {}
    src: dict[str, str] = {}
    density = found.get("density")
    if density and density[0].get("myriad_sessions_per_core"):
        d = density[0]
        val["sessions_per_core"] = float(d["myriad_sessions_per_core"])
        val["density_think_s"] = float(d.get("think_s", 10.0))
        row = next((r for r in d.get("myriad", []) if r.get("sessions") == d["myriad_sessions_per_core"]), None)
        if row and row.get("host_rss_mb"):
            val["rss_kb_per_session"] = row["host_rss_mb"] * 1024 / row["sessions"]
            src["rss_kb_per_session"] = density[1]
        src["sessions_per_core"] = density[1]
    if "sessions_per_core" not in val:
        val["sessions_per_core"] = FALLBACK["density"]["myriad_sessions_per_core"]
        val["density_think_s"] = FALLBACK["density"]["think_s"]
        src["sessions_per_core"] = "docs/benchmarks.md (no density result here)"
    if "rss_kb_per_session" not in val:
        val["rss_kb_per_session"] = FALLBACK["density"]["rss_kb_per_session"]
        src["rss_kb_per_session"] = "docs/benchmarks.md (no density result here)"
    scale = found.get("scale")
    if scale:
        s = scale[0]
        val["front_door_cpu_ms_per_turn"] = float(s.get("overhead", {}).get("front_door_cpu_ms_per_turn", 0.27))
        eff = s.get("cpu_scaling_efficiency") or s.get("scaling_efficiency") or 1.0
        val["efficiency"] = min(1.0, float(eff))
        src["front_door_cpu_ms_per_turn"] = src["efficiency"] = scale[1]
    else:
        val.update(front_door_cpu_ms_per_turn=FALLBACK["scale"]["front_door_cpu_ms_per_turn"],
                   efficiency=FALLBACK["scale"]["efficiency"])
        src["front_door_cpu_ms_per_turn"] = src["efficiency"] = "docs/cluster.md (no scale result here)"
    hib = found.get("hibernation")
    if hib and hib[0].get("disk_bytes_per_agent"):
        val["disk_bytes_per_agent"] = float(hib[0]["disk_bytes_per_agent"])
        src["disk_bytes_per_agent"] = hib[1]
    else:
        val["disk_bytes_per_agent"] = FALLBACK["hibernation"]["disk_bytes_per_agent"]
        src["disk_bytes_per_agent"] = "assumed (no hibernation result here)"
    return val, src


def run(args: argparse.Namespace) -> dict[str, Any]:
    val, src = _inputs(load_results(args.results, args.data_dir))
    sessions, think = args.sessions, args.think
    turns_per_s = sessions / think
    # Load per session scales with 1/think: a core holds proportionally more sessions at a longer think time.
    per_core = val["sessions_per_core"] * think / val["density_think_s"]
    shard_cores = math.ceil(sessions / per_core / val["efficiency"])
    door_cores = math.ceil(turns_per_s * val["front_door_cpu_ms_per_turn"] / 1000)
    cores = shard_cores + door_cores
    memory_gb = sessions * val["rss_kb_per_session"] / 2**20
    machines_cpu = math.ceil(cores / args.cores_per_machine)
    machines_mem = math.ceil(memory_gb / args.memory_per_machine_gb)
    machines = max(machines_cpu, machines_mem)
    agents = args.agents or sessions * 4
    heartbeats = shard_cores * 4 / args.lease_ttl
    writes = turns_per_s + heartbeats  # one state write per turn (the output gate)
    lo, hi = (math.ceil(sessions / n) for n in reversed(CONTAINER_SESSIONS_PER_CPU))
    result = {
        "bench": "capacity", "sessions": sessions, "think_s": think, "turns_per_s": round(turns_per_s),
        "sessions_per_core": round(per_core), "shard_cores": shard_cores, "front_door_cores": door_cores,
        "cores": cores, "memory_gb": round(memory_gb), "machines": machines,
        "machines_bound_by": "memory" if machines_mem > machines_cpu else "cpu",
        "machine": {"cores": args.cores_per_machine, "memory_gb": args.memory_per_machine_gb},
        "postgres_writes_per_s": round(writes), "postgres_state_writes_per_s": round(turns_per_s),
        "postgres_heartbeats_per_s": round(heartbeats),
        "disk_gb_hibernated_agents": round(agents * val["disk_bytes_per_agent"] / 1e9, 1),
        "container_per_agent_cpus": [lo, hi],
        "ratio_vs_containers": [round(lo / cores, 1), round(hi / cores, 1)],
        "inputs": {k: round(v, 4) for k, v in val.items()}, "sources": src,
    }
    rows = [
        ["simultaneous sessions", f"{sessions:,}"],
        ["turns per second (sessions / think)", f"{turns_per_s:,.0f}"],
        ["sessions per shard core (at this think time)", f"{per_core:,.0f}"],
        ["shard cores", f"{shard_cores:,}"],
        ["front-door cores", f"{door_cores:,}"],
        ["cores in all", f"{cores:,}"],
        ["memory (GB)", f"{memory_gb:,.0f}"],
        [f"machines of {args.cores_per_machine} cores / {args.memory_per_machine_gb:g} GB",
         f"{machines:,} (bound by {result['machines_bound_by']})"],
        ["PostgreSQL writes per second (state + heartbeats)", f"{writes:,.0f}"],
        ["disk for stored agents (GB)", f"{result['disk_gb_hibernated_agents']:,}"],
        ["container per agent (25-50 sessions per CPU): CPUs", f"{lo:,} - {hi:,}"],
        ["Myriad vs containers (CPUs)", f"{result['ratio_vs_containers'][0]}x - {result['ratio_vs_containers'][1]}x fewer"],
    ]
    print_table(f"capacity for {sessions:,} sessions, think {think:g} s", ["quantity", "value"], rows)
    print("\nassumptions:")
    print(f"  - a shard core holds density's sessions per core ({val['sessions_per_core']:,.0f} at think "
          f"{val['density_think_s']:g} s; from {src['sessions_per_core']}), scaled by think time")
    print(f"  - cores scale with efficiency {val['efficiency']:.2f} ({src['efficiency']})")
    print(f"  - front door CPU {val['front_door_cpu_ms_per_turn']:.3f} ms per turn ({src['front_door_cpu_ms_per_turn']})")
    print(f"  - memory {val['rss_kb_per_session']:,.0f} KB per live session ({src['rss_kb_per_session']})")
    print(f"  - one state write per turn; activation upserts only when an agent changes shard; "
          f"heartbeats 4 per {args.lease_ttl:g} s lease per shard; per-agent SQL writes not included")
    print("  - PostgreSQL itself (a sharded/partitioned cluster at these write rates) is not in the core count")
    return result


def add_command(sub: Any) -> None:
    p = sub.add_parser("capacity", help="cores, machines, memory and PostgreSQL rate for N sessions",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)

    def _run(a: argparse.Namespace) -> int:
        from myriad.bench.report import emit_json

        emit_json(run(a))
        return 0

    p.set_defaults(func=_run)


__all__ = ["run", "add_arguments", "add_command", "save_result", "load_results"]
