"""A real Ray cluster (``ray.cluster_utils.Cluster``, 1-CPU nodes) on this machine with
one ``myriad serve --cluster ADDRESS`` front door per node, over a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.live import REPO, free_port


class RayCluster:
    def __init__(self, nodes: int = 2) -> None:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        self.nodes = [self.cluster.head_node]
        for _ in range(nodes - 1):
            self.nodes.append(self.cluster.add_node(num_cpus=1))
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.nodes]

    def shutdown(self) -> None:
        self.cluster.shutdown()


class FrontDoorProc:
    """``myriad serve --cluster ADDRESS --node NODE --shards 1`` as a subprocess."""

    def __init__(self, ray_address: str, node: str, database: str, data_dir: Path, agents: str = "tests.cluster.agents",
                 shards: int = 1, ttl: float = 1.5, telemetry: bool = False) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.log = data_dir.parent / f"frontdoor-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "MYRIAD_TELEMETRY__ENABLED": str(telemetry).lower(),
               "RAY_ADDRESS": ray_address}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "myriad", "serve", "--cluster", ray_address, "--node", node, "--shards", str(shards),
             "--database", database, "--data-dir", str(data_dir), "--port", str(self.port), "--agents", agents,
             "--lease-ttl", str(ttl)],
            cwd=REPO, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, shards: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"front door exited: {self.log.read_text()[-3000:]}")
            try:
                r = httpx.get(self.url + "/healthz", timeout=1)
                if r.status_code == 200 and r.json()["shards"] >= shards:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"front door not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def shard_pids(status: dict[str, Any]) -> dict[str, int]:
    return {s["id"]: s["pid"] for s in status["shards"] if s["live"]}
