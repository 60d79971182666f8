"""The shard directory in PostgreSQL: which shards are alive, and which shard holds
each agent's activation, with a fencing token per activation.

Two tables (``SCHEMA``):

- ``myriad_shards``: one row per shard *incarnation* (a restarted shard gets a new
  id), with its internal address and a lease (``expires_at``) it renews by heartbeat.
  A lease that has expired is never renewed again: the incarnation is dead for good.
- ``myriad_activations``: one row per root agent address that some shard activated:
  the holder and a fencing token from one sequence. An activation is *live* while its
  holder's lease is; another shard may take it over only once that lease expired.

Every comparison with the clock uses ``clock_timestamp()`` on the database server,
so the shards' clocks never matter. Writes of agent state carry the fence
(``FENCE_SQL``): the row must still name this shard and token, and the shard's lease
must still hold, checked in the same statement as the write, with a share lock on the
activation row so a takeover waits for a write in flight (and vice versa).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from myriad.errors import StorageError

SCHEMA = """
CREATE TABLE myriad_shards (
    id          text PRIMARY KEY,
    node        text NOT NULL,
    address     text NOT NULL,
    pid         integer NOT NULL,
    started     timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL,
    draining    boolean NOT NULL DEFAULT false,
    load        jsonb NOT NULL DEFAULT '{}'
);
CREATE SEQUENCE myriad_fence_seq;
CREATE TABLE myriad_activations (
    path   text PRIMARY KEY,
    shard  text NOT NULL,
    token  bigint NOT NULL,
    since  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX myriad_activations_shard ON myriad_activations (shard);
CREATE TABLE myriad_drains (
    node   text PRIMARY KEY,
    since  timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

def cluster_migrations() -> Any:
    """The cluster's tables as a component of the storage room's migrations registry."""
    from myriad.storage import Migrations

    return Migrations("cluster", ((1, SCHEMA),))


def migrate_cluster(url: str, timeout: float = 5.0) -> None:
    """Create or upgrade the runtime's tables (agents, schedules, per-agent SQL) and
    the cluster's (shards, activations, drains); idempotent, safe from many processes."""
    from myriad.server.database import migrate_database
    from myriad.storage.postgres import migrate

    migrate_database(url, timeout)
    migrate(url, [cluster_migrations()], timeout=timeout)


# The fence: true while (path, shard, token) is the live activation. ``FOR SHARE``
# makes a takeover (an UPDATE of the row) wait for a write in flight, and a write
# that waited re-reads the row and sees the new holder.
FENCE_SQL = (
    "EXISTS (SELECT 1 FROM myriad_activations fa JOIN myriad_shards fs ON fs.id = fa.shard"
    " WHERE fa.path = %s AND fa.shard = %s AND fa.token = %s"
    " AND fs.expires_at > clock_timestamp() FOR SHARE OF fa)"
)

_ACQUIRE = """
WITH taken AS (
    INSERT INTO myriad_activations AS a (path, shard, token)
    SELECT %(path)s, %(shard)s, nextval('myriad_fence_seq')
    WHERE EXISTS (SELECT 1 FROM myriad_shards me WHERE me.id = %(shard)s
                  AND me.expires_at > clock_timestamp() AND NOT me.draining)
    ON CONFLICT (path) DO UPDATE SET shard = EXCLUDED.shard, token = EXCLUDED.token, since = clock_timestamp()
    WHERE a.shard <> EXCLUDED.shard AND NOT EXISTS (
        SELECT 1 FROM myriad_shards s WHERE s.id = a.shard AND s.expires_at > clock_timestamp())
    RETURNING shard, token
)
SELECT shard, token FROM taken
UNION ALL
SELECT a.shard, a.token FROM myriad_activations a
WHERE a.path = %(path)s AND NOT EXISTS (SELECT 1 FROM taken)
"""


_HEARTBEAT = (
    "UPDATE myriad_shards SET expires_at = clock_timestamp() + make_interval(secs => %s), load = %s,"
    " draining = draining OR EXISTS (SELECT 1 FROM myriad_drains d WHERE d.node = myriad_shards.node)"
    " WHERE id = %s AND expires_at > clock_timestamp() RETURNING draining")


def root_path(path: str) -> str:
    """A sub-agent lives with its root: ``t/c/n/sub/c2/n2`` -> ``t/c/n``."""
    return path.split("/sub/", 1)[0]


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard incarnation as the directory sees it."""

    id: str
    node: str
    address: str
    pid: int
    live: bool
    draining: bool
    load: dict[str, Any]
    expires_in: float


class Directory:
    """Shard leases and agent activations, over one psycopg async connection.

    ``connect`` opens it (and creates the tables); every method is one round trip.
    """

    def __init__(self, url: str, *, ttl: float = 2.0) -> None:
        self.url = url
        self.ttl = ttl
        self._conn: Any = None

    async def connect(self, *, migrate: bool = True) -> "Directory":
        """Open the connection; with ``migrate``, create the tables first if needed."""
        if migrate:
            import asyncio

            await asyncio.to_thread(migrate_cluster, self.url)
        try:
            import psycopg
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("cluster mode needs psycopg: pip install 'myriad[cluster]'") from e
        try:
            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            # A takeover waits for a fenced write in flight; never for long.
            await self._conn.execute("SET lock_timeout = '2s'")
        except psycopg.Error as e:
            raise StorageError(f"cannot open the cluster directory at {_redact(self.url)}: {e}") from None
        return self

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            cur = await self._conn.execute(query, params)
            return list(await cur.fetchall()) if cur.description else []
        except psycopg.Error as e:
            raise StorageError(f"cluster directory: {e}") from None

    # -- shard leases ------------------------------------------------------------
    async def register(self, shard: str, node: str, address: str, pid: int) -> float:
        """Insert a new incarnation with a fresh lease; returns the local monotonic
        deadline of the lease (conservative: measured from before the call)."""
        sent = time.monotonic()
        await self._rows(
            "INSERT INTO myriad_shards (id, node, address, pid, expires_at, draining) VALUES "
            "(%s, %s, %s, %s, clock_timestamp() + make_interval(secs => %s),"
            " EXISTS (SELECT 1 FROM myriad_drains WHERE node = %s))",
            (shard, node, address, pid, self.ttl, node))
        return sent + self.ttl

    async def heartbeat(self, shard: str, load: dict[str, Any]) -> tuple[float, bool] | None:
        """Renew the lease. Returns (local deadline, draining), or None when the lease
        had already expired (the incarnation is dead and must drop everything)."""
        sent = time.monotonic()
        rows = await self._rows(_HEARTBEAT, (self.ttl, json.dumps(load), shard))
        if not rows:
            return None
        return sent + self.ttl, bool(rows[0][0])

    def connect_sync(self) -> Any:
        """A synchronous connection (for the lease renewer's own thread)."""
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.ttl)))
        except psycopg.Error as e:
            raise StorageError(f"cluster directory: {e}") from None

    def heartbeat_sync(self, conn: Any, shard: str, load: dict[str, Any]) -> tuple[float, bool] | None:
        """``heartbeat`` on a synchronous connection."""
        sent = time.monotonic()
        rows = conn.execute(_HEARTBEAT, (self.ttl, json.dumps(load), shard)).fetchall()
        if not rows:
            return None
        return sent + self.ttl, bool(rows[0][0])

    async def retire(self, shard: str) -> None:
        """End a lease now (clean shutdown, or a supervisor that saw the process die):
        its activations may be taken over at once."""
        await self._rows("DELETE FROM myriad_activations WHERE shard = %s", (shard,))
        await self._rows("UPDATE myriad_shards SET expires_at = clock_timestamp() WHERE id = %s", (shard,))

    async def shards(self, *, include_dead: bool = False) -> list[ShardInfo]:
        where = "" if include_dead else " WHERE expires_at > clock_timestamp()"
        rows = await self._rows(
            "SELECT id, node, address, pid, expires_at > clock_timestamp(), draining, load,"
            " extract(epoch FROM expires_at - clock_timestamp()) FROM myriad_shards" + where + " ORDER BY id")
        return [ShardInfo(r[0], r[1], r[2], int(r[3]), bool(r[4]), bool(r[5]), dict(r[6] or {}), float(r[7]))
                for r in rows]

    async def forget_dead(self, older_than: float = 3600.0) -> None:
        """Remove incarnations dead for ``older_than`` seconds (their activations are
        already takeable; this keeps the table small)."""
        await self._rows("DELETE FROM myriad_shards WHERE expires_at < clock_timestamp() - make_interval(secs => %s)",
                         (older_than,))

    # -- activations ---------------------------------------------------------------
    async def acquire(self, path: str, shard: str) -> tuple[str, int]:
        """Activate ``path`` on ``shard`` unless a live shard holds it. Returns the
        holder and its token: ``holder == shard`` means this shard may activate."""
        for _ in range(3):
            rows = await self._rows(_ACQUIRE, {"path": path, "shard": shard})
            if rows:
                return str(rows[0][0]), int(rows[0][1])
            # No row: either this shard may not activate (lease gone, draining) or a
            # concurrent insert committed after our snapshot; look once more.
            rows = await self._rows("SELECT shard, token FROM myriad_activations WHERE path = %s", (path,))
            if rows:
                return str(rows[0][0]), int(rows[0][1])
            if not await self._rows("SELECT 1 FROM myriad_shards WHERE id = %s AND expires_at > clock_timestamp()"
                                    " AND NOT draining", (shard,)):
                return "", 0
        return "", 0

    async def release(self, shard: str, paths: list[str] | None = None) -> int:
        """Give up activations (all of the shard's, or some) so others may take them at once."""
        if paths is None:
            rows = await self._rows("DELETE FROM myriad_activations WHERE shard = %s RETURNING 1", (shard,))
        else:
            rows = await self._rows("DELETE FROM myriad_activations WHERE shard = %s AND path = ANY(%s) RETURNING 1",
                                    (shard, paths))
        return len(rows)

    async def holder(self, path: str) -> tuple[str, int] | None:
        """The live holder of ``path`` (shard, token), or None."""
        rows = await self._rows(
            "SELECT a.shard, a.token FROM myriad_activations a JOIN myriad_shards s ON s.id = a.shard"
            " WHERE a.path = %s AND s.expires_at > clock_timestamp()", (path,))
        return (str(rows[0][0]), int(rows[0][1])) if rows else None

    async def counts(self) -> dict[str, int]:
        """Activations per shard."""
        rows = await self._rows("SELECT shard, count(*) FROM myriad_activations GROUP BY shard")
        return {str(r[0]): int(r[1]) for r in rows}

    # -- drains --------------------------------------------------------------------
    async def drain(self, node: str) -> int:
        """Mark a node as draining: its shards take no new activations and give back
        theirs. Returns how many live shards the node has."""
        await self._rows("INSERT INTO myriad_drains (node) VALUES (%s) ON CONFLICT DO NOTHING", (node,))
        rows = await self._rows("UPDATE myriad_shards SET draining = true WHERE node = %s"
                                " AND expires_at > clock_timestamp() RETURNING id", (node,))
        return len(rows)

    async def undrain(self, node: str) -> None:
        await self._rows("DELETE FROM myriad_drains WHERE node = %s", (node,))
        await self._rows("UPDATE myriad_shards SET draining = false WHERE node = %s", (node,))


def _redact(url: str) -> str:
    """A database URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return url


__all__ = ["Directory", "ShardInfo", "FENCE_SQL", "SCHEMA", "root_path", "cluster_migrations", "migrate_cluster"]
