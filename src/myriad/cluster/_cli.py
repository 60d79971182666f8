"""The cluster's command-line verbs: ``serve --cluster``, ``cluster status``, ``cluster drain``."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, Callable

from myriad.errors import ConfigError


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    """The cluster flags of ``myriad serve`` (the embedded mode ignores them)."""
    serve.add_argument("--cluster", metavar="MODE",
                       help="run on Ray: 'local' (every core here), 'auto' (join the running Ray cluster) or a "
                            "Ray address; needs --database")
    serve.add_argument("--shards", type=int, help="cluster: shards on this node (default: one per CPU)")
    serve.add_argument("--node", help="cluster: Ray node id to start this front door's shards on (default: this one)")
    serve.add_argument("--lease-ttl", type=float, default=2.0,
                       help="cluster: seconds a shard's lease lasts without a heartbeat (default 2)")
    _database_argument(serve)


def _database_argument(parser: argparse.ArgumentParser) -> None:
    try:
        parser.add_argument("--database", help="PostgreSQL URL (env MYRIAD_DATABASE)")
    except argparse.ArgumentError:
        pass  # the storage room added it already


def database_url(args: argparse.Namespace, settings: Any) -> str:
    url = getattr(args, "database", None) or settings.storage.database
    if not url:
        raise ConfigError("cluster mode needs PostgreSQL: pass --database postgresql://user@host:5432/dbname")
    return str(url)


def run_serve(args: argparse.Namespace, settings: Any) -> int:
    from myriad.cluster.directory import migrate_cluster
    from myriad.cluster.runner import serve_cluster
    from myriad.identity import KeyStore
    from myriad.server.bootstrap import ensure_default_tenant

    url = database_url(args, settings)
    settings.storage.database = url  # shards keep agents in PostgreSQL: any shard can take any agent
    migrate_cluster(url, settings.storage.connect_timeout)
    keys = KeyStore(settings.data_dir, url)  # keys, like agents and the ledger, live in PostgreSQL
    keys.open()
    try:
        try:
            note = ensure_default_tenant(keys, settings.data_dir)
        except Exception:  # another node created the tenant at the same moment
            time.sleep(0.5)
            note = ensure_default_tenant(keys, settings.data_dir)
        print(f"  API key:   {note}", flush=True)
    finally:
        keys.close()
    return serve_cluster(settings, url, mode=args.cluster, shards=args.shards,
                         node=args.node, ttl=args.lease_ttl)


def add_commands(sub: Any, settings_of: Callable[[argparse.Namespace], Any]) -> None:
    """``myriad cluster status`` and ``myriad cluster drain NODE``."""
    cluster = sub.add_parser("cluster", help="cluster mode: status and drains").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    status = cluster.add_parser("status", help="nodes, shards, live agents per shard and load")
    _database_argument(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--all", action="store_true", help="also dead shard incarnations")
    status.set_defaults(func=lambda a: asyncio.run(_status(a, database_url(a, settings_of(a)))))
    door = cluster.add_parser("door", help="a front door alone (no shards here): routes to the cluster's shards")
    _database_argument(door)
    door.add_argument("--host", default="127.0.0.1")
    door.add_argument("--port", type=int, default=8787)
    door.set_defaults(func=lambda a: _door(a, settings_of(a), database_url(a, settings_of(a))))
    drain = cluster.add_parser("drain", help="move a node's agents away (before maintenance)")
    drain.add_argument("node", help="Ray node id (a unique prefix will do)")
    _database_argument(drain)
    drain.add_argument("--undo", action="store_true", help="let the node take agents again")
    drain.add_argument("--wait", type=float, default=30.0, help="seconds to wait for its activations to reach 0")
    drain.set_defaults(func=lambda a: asyncio.run(_drain(a, database_url(a, settings_of(a)))))


def _door(args: argparse.Namespace, settings: Any, url: str) -> int:
    import os

    import uvicorn

    from myriad.cluster.frontdoor import FrontDoor
    from myriad.telemetry import setup_telemetry

    telemetry = setup_telemetry(settings.telemetry, os.environ, install_global=True)
    door = FrontDoor(url, settings, telemetry=telemetry, max_frame_bytes=settings.agents.max_frame_bytes)
    try:
        uvicorn.Server(door.server_config(args.host, args.port)).run()  # uvloop when installed
    finally:
        telemetry.shutdown()
    return 0


async def _status(args: argparse.Namespace, url: str) -> int:
    import json

    from myriad.cluster.directory import Directory

    d = await Directory(url).connect()
    try:
        shards = await d.shards(include_dead=args.all)
        counts = await d.counts()
    finally:
        await d.close()
    if args.json:
        print(json.dumps({"shards": [{"id": s.id, "node": s.node, "address": s.address, "pid": s.pid,
                                      "live": s.live, "draining": s.draining, "activations": counts.get(s.id, 0),
                                      "load": s.load} for s in shards]}))
        return 0
    nodes = sorted({s.node for s in shards if s.live})
    print(f"nodes: {len(nodes)}   live shards: {sum(s.live for s in shards)}   "
          f"activations: {sum(counts.get(s.id, 0) for s in shards if s.live)}")
    print(f"{'node':<14} {'shard':<36} {'address':<21} {'pid':>7} {'state':<9} {'held':>7} {'resident':>8} "
          f"{'conns':>6} {'turns':>9} {'cpu s':>8}")
    for s in shards:
        state = "dead" if not s.live else ("draining" if s.draining else "live")
        load = s.load
        print(f"{s.node[:12]:<14} {s.id:<36} {s.address:<21} {s.pid:>7} {state:<9} {counts.get(s.id, 0):>7} "
              f"{load.get('resident', 0):>8} {load.get('connections', 0):>6} {load.get('turns', 0):>9} "
              f"{load.get('cpu_seconds', 0):>8}")
    return 0


async def _drain(args: argparse.Namespace, url: str) -> int:
    from myriad.cluster.directory import Directory

    d = await Directory(url).connect()
    try:
        nodes = {s.node for s in await d.shards(include_dead=True)}
        matches = sorted(n for n in nodes if n.startswith(args.node))
        if len(matches) != 1:
            raise ConfigError(f"node {args.node!r} matches {len(matches)} known nodes"
                              + (f": {', '.join(m[:12] for m in matches)}" if matches else ""))
        node = matches[0]
        if args.undo:
            await d.undrain(node)
            print(f"node {node[:12]} takes activations again")
            return 0
        n = await d.drain(node)
        print(f"draining node {node[:12]} ({n} live shards)", flush=True)
        deadline = time.monotonic() + args.wait
        while True:
            ids = {s.id for s in await d.shards() if s.node == node}
            held = sum(c for sid, c in (await d.counts()).items() if sid in ids)
            if held == 0:
                print(f"node {node[:12]} drained: no activations left (undo with --undo)")
                return 0
            if time.monotonic() > deadline:
                print(f"node {node[:12]} still holds {held} activations after {args.wait:g}s")
                return 1
            await asyncio.sleep(0.2)
    finally:
        await d.close()


__all__ = ["add_serve_arguments", "add_commands", "run_serve", "database_url"]
