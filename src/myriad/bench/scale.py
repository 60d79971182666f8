"""Cluster mode on this machine: 1 shard vs 2 shards, the front door's cost, failover.

Ray is started locally (one CPU per shard); shards are the real Ray actors of
``myriad serve --cluster``, the front door is a real ``myriad cluster door`` process,
the directory and (with the PostgreSQL storage) the agents' state live in a real
PostgreSQL (``--database``, or a throwaway server when the Debian binaries exist).

1. front-door overhead: one WebSocket session makes sequential turns (an RPC that
   changes state: a durable write), straight to the shard's door and through the
   front door; per-turn latency of both, and the front door's CPU per turn. The same
   over HTTP (``POST /v1/agents/.../rpc`` on a keep-alive connection, half as many),
   and the door's CPU per refused request (a wrong key, which no shard sees).
2. scaling: ``--sessions`` closed-loop sessions (each sends its next turn when the
   last is answered) for ``--duration`` s with 1 shard, then with 2 shards (new
   agents, placed over both): turns per second, and scaling efficiency
   = turns/s(2) / (2 x turns/s(1)). Baseline: the 1-shard run.
3. wake: agents spread over both shards, hibernated, then each woken by one turn
   through the front door (wake = one PostgreSQL read + the turn); p50/p99.
4. failover: the same load on 2 shards; one shard is killed with SIGKILL; for every
   agent it held, the time from the kill to that agent's first acknowledged turn
   (clients reconnect at once); p50/p99.

On a 2-core machine the load generator, the front door, PostgreSQL and both shards
share the two cores, so scaling here is bounded by that, not by the design;
quote it with that caveat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from myriad.bench.report import percentile, print_table, summary_ms

DESCRIPTION = __doc__ or ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database", help="PostgreSQL URL (default: a throwaway local server)")
    p.add_argument("--sessions", type=int, default=32, help="closed-loop sessions in the scaling runs")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per scaling run")
    p.add_argument("--turns", type=int, default=1000, help="sequential turns in the overhead run")
    p.add_argument("--ttl", type=float, default=1.5, help="shard lease in seconds")
    p.add_argument("--no-failover", action="store_true")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _throwaway_pg() -> Any:
    try:
        from tests.pg import PostgresServer  # a repo checkout
    except ImportError:
        raise SystemExit("bench scale needs PostgreSQL: pass --database postgresql://...") from None
    return PostgresServer().start()


async def _session(url: str, until: float, lat: list[float], acks: dict[str, float] | None = None,
                   name: str = "", done_at: list[float] | None = None) -> int:
    from websockets.asyncio.client import connect

    n = 0
    i = 0
    while time.monotonic() < until:
        try:
            async with connect(url, compression=None, open_timeout=20, ping_interval=None) as ws:
                while time.monotonic() < until:
                    i += 1
                    rid = str(i)
                    t0 = time.perf_counter()
                    await ws.send('{"type":"rpc","id":"%s","method":"add","args":[1]}' % rid)
                    while True:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 15))
                        if msg.get("type") == "rpc" and msg.get("id") == rid:
                            break
                    if msg.get("success"):
                        lat.append(time.perf_counter() - t0)
                        n += 1
                        if acks is not None:
                            acks[name] = time.monotonic()
                            if done_at is not None and done_at and name not in _FIRST_AFTER:
                                if time.monotonic() > done_at[0]:
                                    _FIRST_AFTER[name] = time.monotonic() - done_at[0]
        except Exception:
            await asyncio.sleep(0.02)
    return n


_FIRST_AFTER: dict[str, float] = {}


async def _load(door: int, key: str, prefix: str, sessions: int, duration: float) -> tuple[float, list[float]]:
    lat: list[float] = []
    until = time.monotonic() + duration
    started = time.monotonic()
    counts = await asyncio.gather(*[
        _session(f"ws://127.0.0.1:{door}/agents/scale-agent/{prefix}{i}?token={key}", until, lat)
        for i in range(sessions)])
    return sum(counts) / (time.monotonic() - started), lat


async def _sequential(url: str, turns: int) -> list[float]:
    lat: list[float] = []
    await _session_n(url, turns, lat)
    return lat


async def _sequential_http(base: str, key: str, name: str, n: int, expect: int = 200) -> list[float]:
    """``n`` sequential RPCs over one keep-alive connection; latencies of those answered ``expect``."""
    import httpx

    lat: list[float] = []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            r = await c.post(f"/v1/agents/scale-agent/{name}/rpc", json={"method": "add", "args": [1]})
            if r.status_code == expect:
                lat.append(time.perf_counter() - t0)
    return lat


async def _session_n(url: str, turns: int, lat: list[float]) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, ping_interval=None) as ws:
        for i in range(turns + 20):
            t0 = time.perf_counter()
            await ws.send('{"type":"rpc","id":"%d","method":"add","args":[1]}' % i)
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("type") == "rpc" and msg.get("id") == str(i):
                    break
            if i >= 20:  # warm-up turns are not counted
                lat.append(time.perf_counter() - t0)


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def run(args: argparse.Namespace) -> dict[str, Any]:
    pg = None
    database = args.database
    if not database:
        pg = _throwaway_pg()
        database = pg.create_database()
    try:
        return _run(args, database)
    finally:
        if pg is not None:
            pg.destroy()


def _run(args: argparse.Namespace, database: str) -> dict[str, Any]:
    from myriad.cluster.runner import start_ray, start_shards
    from myriad.identity import KeyStore
    from myriad.server.bootstrap import ensure_default_tenant
    from myriad.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="myriad-bench-scale-"))
    settings = Settings.load(data_dir=tmp / "data", agents_modules=["myriad.bench._scale_agent"])
    settings.storage.database = database
    settings.telemetry.enabled = False
    settings.agents.hibernate_after = 2.0  # so the wake step needs to wait only seconds
    from myriad.cluster.directory import migrate_cluster

    migrate_cluster(database)
    keys = KeyStore(settings.data_dir, database)
    keys.open()
    ensure_default_tenant(keys, settings.data_dir)
    keys.close()
    key = (settings.data_dir / "default.key").read_text().strip()
    result: dict[str, Any] = {"bench": "scale", "cpus": os.cpu_count(), "sessions": args.sessions,
                              "duration_s": args.duration, "lease_ttl_s": args.ttl,
                              "storage": "postgresql"}
    ray = start_ray("local", 2)
    door_port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "MYRIAD_TELEMETRY__ENABLED": "false"}  # as on the shards: the door's cost without tracing
    door = subprocess.Popen([sys.executable, "-m", "myriad", "cluster", "door", "--database", database,
                             "--port", str(door_port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        print("starting shard 1 of 2 ...", flush=True)
        actors, infos = start_shards(settings, database, shards=1, ttl=args.ttl, first=0)  # keep the handles:
        # Ray ends an actor whose last handle is gone
        shard_a = infos[0]
        _wait_door(door_port, 1)
        # 1. overhead
        direct = f"ws://{shard_a['address']}/agents/scale-agent/overhead-direct?token={key}"
        via = f"ws://127.0.0.1:{door_port}/agents/scale-agent/overhead-door?token={key}"
        lat_direct = asyncio.run(_sequential(direct, args.turns))
        cpu0 = _cpu(door.pid)
        lat_via = asyncio.run(_sequential(via, args.turns))
        door_cpu_ms = (_cpu(door.pid) - cpu0) * 1000 / args.turns
        result["overhead"] = {"direct": summary_ms(lat_direct), "via_front_door": summary_ms(lat_via),
                              "added_p50_ms": round((percentile(lat_via, 50) - percentile(lat_direct, 50)) * 1000, 3),
                              "front_door_cpu_ms_per_turn": round(door_cpu_ms, 3)}
        n_http = max(1, args.turns // 2)
        http_direct = asyncio.run(_sequential_http(f"http://{shard_a['address']}", key, "overhead-http-direct", n_http))
        cpu0 = _cpu(door.pid)
        http_via = asyncio.run(_sequential_http(f"http://127.0.0.1:{door_port}", key, "overhead-http-door", n_http))
        door_http_ms = (_cpu(door.pid) - cpu0) * 1000 / n_http
        cpu0 = _cpu(door.pid)
        refused = asyncio.run(_sequential_http(f"http://127.0.0.1:{door_port}", "myr_0123456789ab_" + "x" * 27,
                                               "overhead-http-door", n_http, expect=401))
        door_refused_ms = (_cpu(door.pid) - cpu0) * 1000 / n_http
        result["overhead_http"] = {
            "direct": summary_ms(http_direct), "via_front_door": summary_ms(http_via),
            "added_p50_ms": round((percentile(http_via, 50) - percentile(http_direct, 50)) * 1000, 3),
            "front_door_cpu_ms_per_request": round(door_http_ms, 3),
            "refused": summary_ms(refused), "front_door_cpu_ms_per_refusal": round(door_refused_ms, 3)}
        # 2. scaling
        print(f"1 shard: {args.sessions} closed-loop sessions for {args.duration:g}s ...", flush=True)
        pids = [shard_a["pid"]]
        cpu_a = sum(_cpu(p) for p in pids)
        tps1, lat1 = asyncio.run(_load(door_port, key, "one-", args.sessions, args.duration))
        cpu1 = sum(_cpu(p) for p in pids) - cpu_a
        print("starting shard 2 of 2 ...", flush=True)
        actors_b, infos_b = start_shards(settings, database, shards=1, ttl=args.ttl, first=1)
        _wait_door(door_port, 2)
        pids.append(infos_b[0]["pid"])
        cpu_b = sum(_cpu(p) for p in pids)
        print(f"2 shards: {args.sessions} closed-loop sessions for {args.duration:g}s ...", flush=True)
        tps2, lat2 = asyncio.run(_load(door_port, key, "two-", args.sessions, args.duration))
        cpu2 = sum(_cpu(p) for p in pids) - cpu_b
        n1, n2 = len(lat1), len(lat2)
        result["one_shard"] = {"turns_per_s": round(tps1, 1), "shard_cpu_ms_per_turn": round(cpu1 * 1000 / max(1, n1), 4),
                               **summary_ms(lat1)}
        result["two_shards"] = {"turns_per_s": round(tps2, 1), "shard_cpu_ms_per_turn": round(cpu2 * 1000 / max(1, n2), 4),
                                **summary_ms(lat2)}
        result["scaling_efficiency"] = round(tps2 / (2 * tps1), 3) if tps1 else None
        # What scaling would be with a core per shard: shard CPU per turn, 1 vs 2 shards.
        c1, c2 = result["one_shard"]["shard_cpu_ms_per_turn"], result["two_shards"]["shard_cpu_ms_per_turn"]
        result["cpu_scaling_efficiency"] = round(c1 / c2, 3) if c1 and c2 else None
        # wake: agents hibernated on both shards, each woken by one turn through the door
        result["wake"] = asyncio.run(_wake(door_port, key, args.sessions * 2, settings.agents.hibernate_after))
        # 3. failover
        if not args.no_failover:
            result["failover"] = asyncio.run(_failover(door_port, key, args, database))
    finally:
        door.send_signal(signal.SIGTERM)
        try:
            door.wait(10)
        except subprocess.TimeoutExpired:
            door.kill()
        ray.shutdown()
    o = result["overhead"]
    rows = [
        ["turn straight to a shard, p50 / p99 (ms)", f"{o['direct']['p50_ms']:.3f} / {o['direct']['p99_ms']:.3f}"],
        ["turn through the front door, p50 / p99 (ms)",
         f"{o['via_front_door']['p50_ms']:.3f} / {o['via_front_door']['p99_ms']:.3f}"],
        ["front door: added latency p50 (ms)", o["added_p50_ms"]],
        ["front door: CPU per turn (ms)", o["front_door_cpu_ms_per_turn"]],
        ["HTTP rpc straight to a shard / through the door, p50 (ms)",
         f"{result['overhead_http']['direct']['p50_ms']:.3f} / {result['overhead_http']['via_front_door']['p50_ms']:.3f}"],
        ["front door: CPU per HTTP request (ms)", result["overhead_http"]["front_door_cpu_ms_per_request"]],
        ["front door: CPU per refused request, bad key (ms)", result["overhead_http"]["front_door_cpu_ms_per_refusal"]],
        ["1 shard: turns/s (baseline)", result["one_shard"]["turns_per_s"]],
        ["2 shards: turns/s", result["two_shards"]["turns_per_s"]],
        ["scaling efficiency tps(2) / (2 x tps(1)) (this machine)", result["scaling_efficiency"]],
        ["shard CPU per turn, 1 shard / 2 shards (ms)",
         f"{result['one_shard']['shard_cpu_ms_per_turn']} / {result['two_shards']['shard_cpu_ms_per_turn']}"],
        ["CPU scaling efficiency cpu/turn(1) / cpu/turn(2)", result["cpu_scaling_efficiency"]],
        ["wake + turn through the door, 2 shards, p50 / p99 (ms)",
         f"{result['wake']['p50_ms']:.2f} / {result['wake']['p99_ms']:.2f}"],
    ]
    if "failover" in result:
        f = result["failover"]
        rows += [["failover: agents on the killed shard", f["agents"]],
                 ["failover: recovered / recovery p50 / p99 (s)", f"{f['recovered']} / {f['p50_s']} / {f['p99_s']}"]]
    print_table(f"bench scale ({result['storage']} storage, {result['cpus']} CPUs shared by everything)",
                ["measure", "value"], rows)
    return result


async def _wake(door_port: int, key: str, n: int, hibernate_after: float) -> dict[str, Any]:
    """First turn of ``n`` agents (over both shards) after they hibernated: the wake
    (a PostgreSQL read) plus the turn, through the front door."""
    from websockets.asyncio.client import connect

    async def one_turn(name: str) -> float:
        url = f"ws://127.0.0.1:{door_port}/agents/scale-agent/{name}?token={key}"
        async with connect(url, compression=None, ping_interval=None) as ws:
            for _ in range(2):  # identity, state
                await ws.recv()
            t0 = time.perf_counter()
            await ws.send('{"type":"rpc","id":"w","method":"add","args":[1]}')
            while json.loads(await ws.recv()).get("id") != "w":
                pass
            return time.perf_counter() - t0

    names = [f"wake-{i}" for i in range(n)]
    for name in names:
        await one_turn(name)  # creates it; the connection closes, so it may hibernate
    await asyncio.sleep(hibernate_after + 2)
    samples = [await one_turn(name) for name in names]
    return summary_ms(samples)


def _wait_door(port: int, shards: int, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["placeable"] >= shards:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("front door did not see the shards")


async def _failover(door_port: int, key: str, args: argparse.Namespace, database: str) -> dict[str, Any]:
    from myriad.cluster.directory import Directory

    names = [f"fo-{i}" for i in range(args.sessions)]
    lat: list[float] = []
    acks: dict[str, float] = {}
    killed: list[float] = []
    _FIRST_AFTER.clear()
    until = time.monotonic() + 4 + 3 * args.ttl + 6
    tasks = [asyncio.ensure_future(_session(f"ws://127.0.0.1:{door_port}/agents/scale-agent/{n}?token={key}",
                                            until, lat, acks, n, killed)) for n in names]
    await asyncio.sleep(3)
    d = await Directory(database).connect()
    shards = await d.shards()
    victim = shards[-1]
    rows = await d._rows("SELECT path FROM myriad_activations WHERE shard = %s", (victim.id,))
    held = {r[0].rsplit("/", 1)[-1] for r in rows}
    await d.close()
    killed.append(time.monotonic())
    os.kill(victim.pid, signal.SIGKILL)
    await asyncio.gather(*tasks)
    import httpx

    door_stats = httpx.get(f"http://127.0.0.1:{door_port}/healthz").json()
    on_victim = [n for n in names if n in held]
    times = [_FIRST_AFTER[n] for n in on_victim if n in _FIRST_AFTER]
    return {"agents": len(on_victim), "recovered": len(times),
            "p50_s": round(percentile(times, 50), 3) if times else None,
            "p99_s": round(percentile(times, 99), 3) if times else None,
            "max_s": round(max(times), 3) if times else None,
            "front_door": {k: door_stats.get(k) for k in ("moved", "retries", "unavailable")}}


__all__ = ["run", "add_arguments", "DESCRIPTION"]
