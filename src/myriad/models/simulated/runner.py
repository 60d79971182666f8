"""Run the simulated upstream on a free 127.0.0.1 port, in a thread or a process.

>>> up = start_simulated_upstream(ttft=0.05, tps=200)      # a thread in this process
>>> client = openai.OpenAI(base_url=up.base_url, api_key="x")
>>> up.fail_next(2, status=503); up.rate_limit_next(1, retry_after=0.2)
>>> up.close()

``mode="process"`` starts ``python -m myriad.models.simulated`` instead (optionally
pinned to one CPU with ``cpu=1``), which is what a benchmark wants: the upstream's
work then does not steal the measured process's core.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any

import httpx

from myriad.models.simulated._engine import Profile
from myriad.models.simulated.app import SimulatedConfig, SimulatedUpstream


class UpstreamHandle:
    """A running simulated upstream. ``base_url`` ends in ``/v1`` (what OpenAI clients want)."""

    def __init__(self, root_url: str, closer: Any, app: SimulatedUpstream | None = None) -> None:
        self.root_url = root_url
        self.base_url = root_url + "/v1"
        self.app = app
        """The ASGI app itself in thread mode (None in process mode)."""
        self._closer = closer
        self._closed = False

    # ---- fault injection (works for both modes: it goes through the control API)

    def add_fault(self, kind: str, count: int = 1, model: str | None = None, **params: Any) -> None:
        """Schedule a fault for the next ``count`` requests (negative: until cleared)."""
        r = httpx.post(f"{self.root_url}/_simulated/faults",
                       json={"kind": kind, "count": count, "model": model, **params}, timeout=5)
        r.raise_for_status()

    def fail_next(self, count: int = 1, status: int = 500, model: str | None = None) -> None:
        self.add_fault("error", count, model, status=status)

    def stall_next(self, count: int = 1, seconds: float = 3600.0, model: str | None = None) -> None:
        self.add_fault("stall", count, model, seconds=seconds)

    def stall_after_first_token_next(self, count: int = 1, seconds: float = 3600.0, model: str | None = None) -> None:
        self.add_fault("stall_after_first", count, model, seconds=seconds)

    def rate_limit_next(self, count: int = 1, retry_after: float = 1.0, model: str | None = None) -> None:
        self.add_fault("rate_limit", count, model, retry_after=retry_after)

    def clear_faults(self) -> None:
        httpx.delete(f"{self.root_url}/_simulated/faults", timeout=5).raise_for_status()

    def reset(self) -> None:
        """Clear faults and counters."""
        httpx.post(f"{self.root_url}/_simulated/reset", timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """``{"requests", "by_status", "by_model", "in_flight"}`` (status keys are strings)."""
        r = httpx.get(f"{self.root_url}/_simulated/stats", timeout=5)
        r.raise_for_status()
        stats: dict[str, Any] = r.json()
        return stats

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._closer()

    def __enter__(self) -> "UpstreamHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start_simulated_upstream(
    config: SimulatedConfig | None = None,
    *,
    mode: str = "thread",
    cpu: int | None = None,
    host: str = "127.0.0.1",
    **profile: Any,
) -> UpstreamHandle:
    """Start a simulated upstream and return once it accepts connections.

    ``profile`` keywords (``ttft``, ``tps``, ``latency``, ``tokens``,
    ``context_window``, ``chunk_interval``, ``embedding_dims``) set the default
    profile when no ``config`` is given.
    """
    if config is None:
        config = SimulatedConfig(profile=Profile(**profile))
    elif profile:
        raise TypeError("pass either config or profile keywords, not both")
    starter = _STARTERS.get(mode)
    if starter is None:
        raise ValueError(f"mode must be one of {sorted(_STARTERS)}, not {mode!r}")
    return starter(config, host, cpu)


def _bind(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _uvicorn_server(app: Any) -> Any:
    import uvicorn

    cfg = uvicorn.Config(app, http="httptools", loop="none", lifespan="off", access_log=False,
                         log_level="warning", timeout_keep_alive=60, backlog=4096,
                         timeout_graceful_shutdown=1)
    return uvicorn.Server(cfg)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is in uvicorn[standard]; plain asyncio still works
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _start_thread(config: SimulatedConfig, host: str, cpu: int | None) -> UpstreamHandle:
    if cpu is not None:
        raise ValueError("cpu pinning needs mode='process'")
    app = SimulatedUpstream(config)
    sock = _bind(host)
    port = sock.getsockname()[1]
    server = _uvicorn_server(app)
    started = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        loop = _new_loop()
        asyncio.set_event_loop(loop)
        try:
            async def main() -> None:
                serve = asyncio.ensure_future(server.serve(sockets=[sock]))
                while not server.started and not serve.done():
                    await asyncio.sleep(0.005)
                started.set()
                await serve

            loop.run_until_complete(main())
        except BaseException as e:  # surfaced to the starter below
            errors.append(e)
        finally:
            started.set()
            loop.close()

    thread = threading.Thread(target=run, name=f"simulated-upstream-{port}", daemon=True)
    thread.start()
    started.wait(10)
    if errors or not server.started:
        raise RuntimeError(f"simulated upstream did not start: {errors[0] if errors else 'timeout'}")

    def close() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return UpstreamHandle(f"http://{host}:{port}", close, app)


def _start_process(config: SimulatedConfig, host: str, cpu: int | None) -> UpstreamHandle:
    cmd = [sys.executable, "-m", "myriad.models.simulated", "--host", host, "--port", "0",
           "--config-json", json.dumps(config.to_json())]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, env=env, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening "):
        proc.kill()
        raise RuntimeError(f"simulated upstream process did not start (said {line!r})")
    port = int(line.split()[1])

    def close() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return UpstreamHandle(f"http://{host}:{port}", close)


_STARTERS = {"thread": _start_thread, "process": _start_process}


def serve_main(argv: list[str] | None = None) -> None:
    """``python -m myriad.models.simulated``: serve until killed; prints ``listening PORT``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m myriad.models.simulated", description=serve_main.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    p.add_argument("--config-json", default=None, help="a SimulatedConfig as JSON")
    p.add_argument("--ttft", type=float, default=None)
    p.add_argument("--tps", type=float, default=None)
    p.add_argument("--tokens", type=int, default=None)
    args = p.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    config = SimulatedConfig.from_json(json.loads(args.config_json)) if args.config_json else SimulatedConfig()
    overrides = {k: v for k, v in (("ttft", args.ttft), ("tps", args.tps), ("tokens", args.tokens)) if v is not None}
    if overrides:
        config.profile = config.profile.with_options({k: str(v) for k, v in overrides.items()})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    sock.setblocking(False)
    print(f"listening {sock.getsockname()[1]}", flush=True)
    server = _uvicorn_server(SimulatedUpstream(config))
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(server.serve(sockets=[sock]))


__all__ = ["start_simulated_upstream", "UpstreamHandle", "serve_main"]
