"""``myriad bench agents``: Myriad's agent runtime against the Cloudflare Agents SDK.

The same RPC workload runs against each side: N WebSocket sessions, each its own
agent instance, each thinking ~Exp(think) seconds and then calling ``add(a, b)``,
which sets the agent's state (a durable write). Myriad serves ``examples.counter``
(``python -m myriad serve``); with ``--peer workerd`` the same Counter written with
the npm ``agents`` package (``peers/workerd/worker.js``) is served by workerd through
miniflare, installed on first use into ``~/.cache/myriad/peers/workerd`` (skipped
with a clear line if it cannot be). Both speak the same wire protocol, so one client
drives both. Reported per side: server CPU per 1,000 turns, RSS per session and the
p50/p99 of the RPC round trip, measured over the window in which all N are connected.
Local workerd is not Cloudflare's production runtime: the numbers compare two local
processes on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

DESCRIPTION = "N WebSocket agents calling add() every ~2 s: Myriad vs the Cloudflare Agents SDK on workerd (--peer workerd)"

NOT_PRODUCTION = ("local workerd (miniflare, one process on this machine) is not Cloudflare's production runtime; "
                  "these numbers compare two local servers")
PEER_SOURCES = Path(__file__).parent / "peers" / "workerd"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions", type=int, default=500, help="WebSocket sessions, one agent each (default 500)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured with all sessions live (default 20)")
    p.add_argument("--think", type=float, default=2.0, help="mean think time between calls, exponential (default 2 s)")
    p.add_argument("--connect-concurrency", type=int, default=50, help="sessions opened at once while ramping up")
    p.add_argument("--peer", choices=["workerd"], default=None,
                   help="also run the same workload against this peer (workerd: npm agents + miniflare)")
    p.add_argument("--no-myriad", action="store_true", help="only the peer")


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    """One side under test: how to reach an agent and which processes to measure."""

    name: str
    url: Callable[[int], str]
    procs: list[Any]
    stop: Callable[[], None]
    helpers: Sequence[Any] = ()  # processes not counted per turn but reported (miniflare's node)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def _terminate(proc: subprocess.Popen[bytes], extra: Sequence[Any] = ()) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for p in extra:  # children the parent did not take down (by pid, only ours)
        try:
            p.kill()
        except Exception:
            pass


def _start_myriad(tmp: Path) -> Server:
    import psutil

    import myriad

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    repo = Path(myriad.__file__).resolve().parents[2]
    if (repo / "examples" / "counter.py").exists():  # a checkout: examples/ sits next to src/
        env["PYTHONPATH"] = os.pathsep.join([str(repo), env["PYTHONPATH"]])
    data, port = tmp / "myriad", _free_port()
    log = open(tmp / "myriad.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "myriad", "serve", "--data-dir", str(data), "--port", str(port),
                             "--agents", "examples.counter"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, 90, f"myriad serve (see {tmp / 'myriad.log'})")
        key = (data / "default.key").read_text().strip()
    except Exception:
        _terminate(proc)
        raise
    me = psutil.Process(proc.pid)
    return Server("myriad", lambda i: f"ws://127.0.0.1:{port}/agents/counter/s{i}?token={key}",
                  [me, *me.children(recursive=True)], lambda: _terminate(proc))


def _peer_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "myriad" / "peers" / "workerd"


def _install_workerd() -> tuple[Path | None, str]:
    """npm ``agents`` + ``miniflare`` + ``esbuild`` in the peer cache dir; (dir, how) or (None, why not)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, "node and npm are needed (not on PATH)"
    d = _peer_dir()
    want = (PEER_SOURCES / "package.json").read_text()
    have = d / "package.json"
    ready = (d / "node_modules" / "miniflare").is_dir() and have.exists() and have.read_text() == want
    how = "cached"
    if not ready:
        d.mkdir(parents=True, exist_ok=True)
        have.write_text(want)
        print(f"installing the workerd peer (npm agents, miniflare) into {d} ...", flush=True)
        try:
            subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=d, check=True,
                           capture_output=True, text=True, timeout=900)
        except subprocess.CalledProcessError as e:
            lines = (e.stderr or "").strip().splitlines()
            return None, f"npm install failed: {lines[-1] if lines else e}"
        except subprocess.TimeoutExpired:
            return None, "npm install took longer than 15 minutes"
        how = "installed"
        if not (d / "node_modules" / "miniflare").is_dir():
            return None, "npm install did not install miniflare"
    for f in ("worker.js", "serve.mjs"):  # run from the cache dir so its node_modules resolve
        shutil.copyfile(PEER_SOURCES / f, d / f)
    return d, how


def _start_workerd(tmp: Path) -> Server | str:
    """The workerd peer, or the reason it was skipped."""
    import psutil

    d, how = _install_workerd()
    if d is None:
        return how
    port = _free_port()
    log = open(tmp / "workerd.log", "wb")
    # workerd's SQLite memory cap fails Durable Objects with SQLITE_NOMEM past ~1,400 agents without this
    env = {**os.environ, "WORKERD_ALL_AUTOGATES": "1"}
    proc = subprocess.Popen(["node", "serve.mjs", str(port), str(tmp / "workerd-persist")], cwd=d, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, 120, "miniflare")
    except RuntimeError as e:
        _terminate(proc)
        tail = (tmp / "workerd.log").read_text(errors="replace").strip().splitlines()[-3:]
        return f"{e} ({how}): {' | '.join(tail)}"
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "workerd" in p.name()]
    if not workers:
        _terminate(proc)
        return "miniflare started no workerd process"
    return Server("workerd", lambda i: f"ws://127.0.0.1:{port}/agents/counter/s{i}", workers,
                  lambda: _terminate(proc, workers), [psutil.Process(proc.pid)])


# ---------------------------------------------------------------- load


@dataclass
class Load:
    start: float = 0.0  # measured window: [start, end)
    end: float = float("inf")
    stop: bool = False
    latencies: list[float] = field(default_factory=list)
    connected: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


async def _session(http: Any, url: str, i: int, think: float, st: Load, gate: asyncio.Semaphore,
                   go: asyncio.Event) -> None:
    rng = random.Random(i)
    try:
        async with gate:
            ws = await http.ws_connect(url, max_msg_size=0, heartbeat=None, autoping=True)
            while True:  # the identity frame comes first; state and MCP frames may follow
                msg = await asyncio.wait_for(ws.receive(), 30)
                if msg.type != 1:
                    raise ConnectionError("closed before identity")
                if json.loads(msg.data).get("type") == "cf_agent_identity":
                    break
    except Exception as e:
        st.error(f"connect: {type(e).__name__}")
        return
    st.connected += 1
    try:
        await go.wait()
        k = 0
        while not st.stop:
            await asyncio.sleep(rng.expovariate(1.0 / think))
            if st.stop:
                break
            k += 1
            rid = f"{i}-{k}"
            t0 = time.perf_counter()
            await ws.send_str(json.dumps({"type": "rpc", "id": rid, "method": "add", "args": [1, k]}))
            while True:
                msg = await ws.receive()
                if msg.type != 1:  # not TEXT: closed or error
                    st.error("closed mid-call")
                    return
                data = json.loads(msg.data)
                if data.get("type") == "rpc" and data.get("id") == rid:
                    break
            t1 = time.perf_counter()
            if not data.get("success"):
                st.error(f"rpc: {str(data.get('error'))[:60]}")
            elif t0 >= st.start and t1 < st.end:
                st.latencies.append(t1 - t0)
    except Exception as e:
        st.error(f"session: {type(e).__name__}")
    finally:
        await ws.close()


def _cpu(procs: Sequence[Any]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:
            pass
    return total


def _rss(procs: list[Any]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except Exception:
            pass
    return total


async def _drive(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    from myriad.bench.report import progress, summary_ms

    n = args.sessions
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        # warm the code paths (first agent, first write) outside the measurement
        warm, go0 = Load(), asyncio.Event()
        go0.set()
        warm.start, warm.end = 0.0, float("inf")
        w = asyncio.create_task(_session(http, server.url(n + 1), n + 1, 0.05, warm, asyncio.Semaphore(1), go0))
        await asyncio.sleep(2.0)
        warm.stop = True
        await asyncio.wait_for(w, 30)
        if not warm.latencies:
            raise RuntimeError(f"{server.name}: the warm-up agent answered no add() ({warm.error_kinds})")
        await asyncio.sleep(0.5)
        rss0 = _rss(server.procs)

        st, gate, go = Load(), asyncio.Semaphore(max(1, args.connect_concurrency)), asyncio.Event()
        tasks = [asyncio.create_task(_session(http, server.url(i), i, args.think, st, gate, go)) for i in range(n)]
        label = f"{server.name}: connecting"
        while st.connected + st.errors < n:
            progress(label, st.connected + st.errors, n)
            await asyncio.sleep(0.25)
        progress(label, n, n)
        go.set()
        await asyncio.sleep(min(args.think, args.duration / 4))  # let the call rhythm settle
        aux0, cpu0, st.start = _cpu(server.helpers), _cpu(server.procs), time.perf_counter()
        await asyncio.sleep(args.duration)
        st.end, cpu1, aux1 = time.perf_counter(), _cpu(server.procs), _cpu(server.helpers)
        rss1 = _rss(server.procs)
        st.stop = True
        await asyncio.wait(tasks, timeout=max(10.0, 3 * args.think))
        for t in tasks:
            t.cancel()
    turns = len(st.latencies)
    cpu = cpu1 - cpu0
    return {
        "sessions": n, "connected": st.connected, "errors": st.errors, "error_kinds": st.error_kinds,
        "turns": turns, "turns_per_s": round(turns / args.duration, 1),
        "server_cpu_s": round(cpu, 3),
        **({"helper_cpu_s": round(aux1 - aux0, 3)} if server.helpers else {}),
        "cpu_s_per_1000_turns": round(cpu / turns * 1000, 4) if turns else None,
        "server_cpu_pct": round(100 * cpu / args.duration, 1),
        "rss_before_mb": round(rss0 / 2**20, 1), "rss_after_mb": round(rss1 / 2**20, 1),
        "kb_per_session": round((rss1 - rss0) / max(1, st.connected) / 1024, 1),
        "processes": len(server.procs),
        **summary_ms(st.latencies),
    }


def _measure(start: Callable[[], Server | str], args: argparse.Namespace) -> dict[str, Any]:
    server = start()
    if isinstance(server, str):
        return {"skipped": server}
    try:
        return asyncio.run(_drive(server, args))
    finally:
        server.stop()


# ---------------------------------------------------------------- run


def run(args: argparse.Namespace) -> dict[str, Any]:
    from myriad.bench.report import print_table

    result: dict[str, Any] = {"bench": "agents", "sessions": args.sessions, "duration_s": args.duration,
                              "think_s": args.think, "cores": os.cpu_count(),
                              "load_avg_1m": round(os.getloadavg()[0], 1)}
    tmp = Path(tempfile.mkdtemp(prefix="myriad-bench-agents-"))
    try:
        print(f"{args.sessions} sessions, one agent each, add() every ~{args.think:g} s (exponential), "
              f"{args.duration:g} s measured; load average {result['load_avg_1m']} on {result['cores']} cores",
              flush=True)
        sides: list[str] = []
        if not args.no_myriad:
            result["myriad"] = _measure(lambda: _start_myriad(tmp), args)
            sides.append("myriad")
        if args.peer == "workerd":
            result["workerd"] = _measure(lambda: _start_workerd(tmp), args)
            if "skipped" in result["workerd"]:
                print(f"peer workerd skipped: {result['workerd']['skipped']}", flush=True)
            else:
                sides.append("workerd")
                result["note"] = NOT_PRODUCTION
        rows = []
        for s in sides:
            r = result[s]
            rows.append([s, r["connected"], r["errors"], r["turns"], r["cpu_s_per_1000_turns"] or float("nan"),
                         r["server_cpu_pct"], r["kb_per_session"], r["p50_ms"], r["p99_ms"]])
        print_table("agents: same RPC workload (add() sets state), server-side CPU and memory, client round trip",
                    ["server", "sessions", "errors", "turns", "CPU s/1000 turns", "CPU %", "KB/session",
                     "p50 ms", "p99 ms"], rows)
        if "myriad" in sides and "workerd" in sides:
            m, w = result["myriad"], result["workerd"]
            ratios = {
                "cpu_workerd_over_myriad": _ratio(w["cpu_s_per_1000_turns"], m["cpu_s_per_1000_turns"]),
                "memory_workerd_over_myriad": _ratio(w["kb_per_session"], m["kb_per_session"]),
                "p99_workerd_over_myriad": _ratio(w["p99_ms"], m["p99_ms"]),
            }
            result["ratios"] = ratios
            print("ratios workerd/myriad: " + ", ".join(f"{k.split('_')[0]} {v}x" for k, v in ratios.items()))
            print(f"note: {NOT_PRODUCTION}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None
