"""Cluster mode: many ``AgentHost`` shards on Ray, one live activation per agent.

Shards are Ray actors (one per core), each an ``AgentHost`` for many thousands of
agents serving its own internal door; a directory in PostgreSQL holds shard leases
and per-agent activations with fencing tokens; each node's front door routes every
agent URL to its holder. See docs/cluster.md. Ray and psycopg are imported only by
the code that needs them.

This room may import: agents, storage, server (to build a shard's stack), errors.
"""

from myriad.cluster.activation import Activations, AgentMoved
from myriad.cluster.directory import Directory, ShardInfo, root_path
from myriad.cluster.frontdoor import FrontDoor
from myriad.cluster.placement import placement_key, rendezvous
from myriad.cluster.shard import ShardActor, ShardServer

__all__ = ["Activations", "AgentMoved", "Directory", "FrontDoor", "ShardActor", "ShardInfo", "ShardServer",
           "placement_key", "rendezvous", "root_path"]
