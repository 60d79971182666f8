"""``myriad serve --cluster local|auto|ADDRESS``: start this node's shards on Ray and
serve the node's front door.

- ``local``: start a Ray instance on this machine with one CPU per shard.
- ``auto`` (or a Ray address): join the running Ray cluster (``ray start`` first);
  the shards go on this node (or ``--node``), so every node runs its own
  ``myriad serve`` with the same port, and each front door reaches every shard.

Shards are Ray actors with ``max_restarts=-1``: Ray restarts one that dies, and the
restarted process registers a new incarnation in the directory. The shards of a node
belong to its ``myriad serve``: when that process exits, they go with it (and their
leases expire, so their agents move).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from myriad.cluster.shard import ShardActor
from myriad.errors import ConfigError

log = logging.getLogger("myriad.cluster")


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError(f"cluster mode needs Ray: pip install 'myriad[cluster]' ({e})") from None
    return ray


def start_ray(mode: str, shards: int | None) -> Any:
    """Connect to (or, for ``local``, start) Ray with this process's import path."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
    kwargs: dict[str, Any] = {"namespace": "myriad", "runtime_env": env, "log_to_driver": True,
                              "logging_level": logging.WARNING}
    if mode == "local":
        # address="local": a new Ray instance even when another one runs on this machine
        ray.init(address="local", num_cpus=shards or os.cpu_count() or 1, include_dashboard=False, **kwargs)
    else:
        ray.init(address="auto" if mode == "auto" else mode, **kwargs)
    return ray


def start_shards(settings: Any, database: str, *, shards: int | None = None, node: str | None = None,
                 ttl: float = 2.0, first: int = 0) -> tuple[list[Any], list[dict[str, Any]]]:
    """Create this node's shard actors; returns (actors, their info)."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = node or ray.get_runtime_context().get_node_id()
    alive = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
    if node_id not in alive:
        raise ConfigError(f"Ray node {node_id} is not alive in this cluster")
    count = shards or max(1, int(alive[node_id].get("Resources", {}).get("CPU", 1)))
    bind = alive[node_id].get("NodeManagerAddress", "127.0.0.1")
    remote = ray.remote(ShardActor)
    actors = []
    for i in range(first, first + count):
        name = f"shard-{node_id[:8]}-{i}"
        spec = {"settings": settings, "database": database, "name": name, "node": node_id, "bind": bind,
                "ttl": ttl, "sys_path": [p for p in sys.path if p], "cwd": os.getcwd()}
        actors.append(remote.options(
            name=name, num_cpus=1, max_restarts=-1, max_task_retries=-1, max_concurrency=4,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(spec))
    infos = ray.get([a.info.remote() for a in actors], timeout=180)
    return actors, infos


def serve_cluster(settings: Any, database: str, *, mode: str, shards: int | None = None, node: str | None = None,
                  ttl: float = 2.0) -> int:
    """Start the shards, then serve the front door until interrupted."""
    import uvicorn

    from myriad.cluster.frontdoor import FrontDoor

    ray = start_ray(mode, shards)
    actors, infos = start_shards(settings, database, shards=shards, node=node, ttl=ttl)
    url = f"http://{settings.host}:{settings.port}"
    print("\n".join([
        "",
        f"  Myriad cluster front door on {url} ({mode})",
        f"  node:      {infos[0]['node'] if infos else '?'}",
        *(f"  shard:     {i['name']} pid {i['pid']} at {i['address']}" for i in infos),
        "  status:    myriad cluster status --database <url>",
        "",
    ]), flush=True)
    from myriad.telemetry import setup_telemetry

    telemetry = setup_telemetry(settings.telemetry, os.environ, install_global=True)
    door = FrontDoor(database, settings, telemetry=telemetry, route_timeout=max(10.0, 4 * ttl),
                     max_frame_bytes=settings.agents.max_frame_bytes)
    config = door.server_config(settings.host, settings.port, log_level=settings.log_level)
    try:
        uvicorn.Server(config).run()  # uvicorn's loop setup: uvloop when installed
    finally:
        telemetry.shutdown()
        try:
            ray.get([a.stop.remote() for a in actors], timeout=15)
        except Exception:
            pass
        ray.shutdown()
    return 0


__all__ = ["serve_cluster", "start_ray", "start_shards", "import_ray"]
