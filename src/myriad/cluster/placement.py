"""Placement by rendezvous (highest-random-weight) hashing over live shards.

Every front door computes the same owner for a key from the same shard list, with no
coordination: each (key, shard) pair gets a pseudo-random score and the highest wins.
When a shard leaves, only its keys move (each to its own runner-up); when one joins,
it takes about 1/N of the keys from the others. The directory's activation rows
(``directory.py``) stay authoritative: a shard that does not hold an address answers
with where it lives, so placement is only the first guess.
"""

from __future__ import annotations

import hashlib
from typing import Sequence


def _score(key: str, shard: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{shard}\x00{key}".encode(), digest_size=8).digest(), "big")


def rendezvous(key: str, shards: Sequence[str]) -> str | None:
    """The shard (by stable name) that owns ``key``, or None with no shards."""
    best, best_score = None, -1
    for shard in shards:
        s = _score(key, shard)
        if s > best_score:
            best, best_score = shard, s
    return best


def placement_key(path: str) -> str | None:
    """The key an agent URL is placed by: the root agent's ``{class}/{name}`` (its
    sub-agents live with it). ``/agents/counter/u1/sub/x/y`` -> ``counter/u1``;
    ``/v1/agents/counter/u1/rpc`` -> ``counter/u1``; ``/mcp/notes/alice`` -> ``notes/alice``;
    None for other paths (a per-session ``/mcp/{agent}`` request lands on any shard, which
    answers ``agent_moved`` with the holder when it is not it).

    The tenant is not in the key (it comes from the credential, which the front
    door does not need to read): equal names of two tenants share a shard, which
    is harmless, since activations are per full address.
    """
    if path.startswith("/agents/"):
        parts = path[8:].split("/", 2)
    elif path.startswith("/v1/agents/"):
        parts = path[11:].split("/", 2)
    elif path.startswith("/mcp/"):
        parts = path[5:].split("/", 2)
    else:
        return None
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return None
    return f"{parts[0]}/{parts[1]}"


__all__ = ["rendezvous", "placement_key"]
