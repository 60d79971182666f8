"""A shard: one ``AgentHost`` (the whole embedded stack) serving its own internal
HTTP/WebSocket door, holding a lease in the directory and activations of agents.

``ShardServer`` is the process-independent part (used directly by tests and the
bench); ``ShardActor`` is what Ray places and restarts: one per core, each running a
``ShardServer`` on its own thread and event loop, so Ray's calls to the actor
(``info``) never wait on agent turns. The hot path never crosses Ray: front doors
open HTTP and WebSocket connections straight to the shard's door.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from myriad.cluster.activation import Activations
from myriad.cluster.directory import Directory

log = logging.getLogger("myriad.cluster")


class ShardServer:
    """One shard: services, lease, activations, and the internal door."""

    def __init__(self, settings: Any, database: str, *, name: str, node: str, bind: str = "127.0.0.1",
                 port: int = 0, ttl: float = 2.0) -> None:
        self.settings = settings
        self.database = database
        self.name, self.node, self.bind, self.port = name, node, bind, port
        self.ttl = ttl
        self.services: Any = None
        self.activations: Activations | None = None
        self.address = ""
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._server: Any = None
        self.requests = 0
        """HTTP requests and WebSocket handshakes its door received (``load``)."""
        self._cpu0 = time.process_time()

    def info(self) -> dict[str, Any]:
        a = self.activations
        return {"name": self.name, "node": self.node, "address": self.address, "pid": os.getpid(),
                "shard": a.shard_id if a else "", "incarnation": a.incarnation if a else 0}

    def _load(self) -> dict[str, Any]:
        host = self.services.host
        a = self.activations
        return {"resident": host.resident_count, "connections": host.connection_count,
                "requests": self.requests, "turns": host.stats["turns"], "wakes": host.stats["wakes"],
                "activations": len(a.tokens) if a else 0, "cpu_seconds": round(time.process_time() - self._cpu0, 3),
                **({k: v for k, v in a.stats.items()} if a else {})}

    async def serve(self) -> None:
        """Run until cancelled (or ``stop``)."""
        import uvicorn

        from myriad.server import build_services, create_app

        try:
            self.services = build_services(self.settings)
            directory = await Directory(self.database, ttl=self.ttl).connect()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.bind, self.port))
            self.address = "%s:%d" % sock.getsockname()[:2]
            self.activations = Activations(directory, self.name, self.node, self.address, os.getpid())
            self.activations.load = self._load
            self.services.host.wrap_turn(self.activations)
            _attach_fence(self.services, self.activations)
            config = uvicorn.Config(self._counted(create_app(self.services)), lifespan="on", log_level="warning",
                                    ws_max_size=self.settings.agents.max_frame_bytes, ws_ping_interval=None,
                                    access_log=False)
            self._server = uvicorn.Server(config)
            serving = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            if serving.done():
                serving.result()
                raise RuntimeError("the shard's door stopped at start-up")
            await self.activations.start()
        except BaseException as e:
            self.error = e
            self.started.set()
            raise
        self.started.set()
        try:
            await serving
        finally:
            await self.activations.stop()
            await directory.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def _counted(self, app: Any) -> Any:
        """``app``, counting what reaches this shard's door (front doors refuse bad
        credentials before they get here: the count shows it)."""
        async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "lifespan":
                self.requests += 1
            await app(scope, receive, send)

        return counted


def _attach_fence(services: Any, fence: Activations) -> None:
    """Give the storage the fence when it takes one (PostgreSQL)."""
    storage = services.storage
    if hasattr(storage, "fence"):
        storage.fence = fence


class ShardActor:
    """The Ray actor around a ``ShardServer`` (decorated with ``ray.remote`` at launch,
    never at import). ``spec``: settings, database, name, node, bind host, ttl."""

    def __init__(self, spec: dict[str, Any]) -> None:
        for entry in reversed(spec.get("sys_path", [])):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        if spec.get("cwd"):
            try:
                os.chdir(spec["cwd"])
            except OSError:
                pass
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        self.shard = ShardServer(spec["settings"], spec["database"], name=spec["name"], node=spec["node"],
                                 bind=spec.get("bind", "127.0.0.1"), ttl=spec.get("ttl", 2.0))
        self._thread = threading.Thread(target=self._run, name="myriad-shard", daemon=True)
        self._thread.start()
        self.shard.started.wait(120)
        if self.shard.error is not None:
            raise RuntimeError(f"shard {spec['name']} failed to start: {self.shard.error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self.shard.serve())
        except BaseException as e:  # reported to the driver through info()
            self.shard.error = self.shard.error or e
            log.error("shard %s stopped: %r", self.shard.name, e)

    def info(self) -> dict[str, Any]:
        if self.shard.error is not None:
            raise RuntimeError(f"shard {self.shard.name} failed: {self.shard.error!r}")
        return self.shard.info()

    def stop(self) -> None:
        self.shard.stop()
        self._thread.join(10)


__all__ = ["ShardServer", "ShardActor"]
