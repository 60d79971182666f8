"""``PostgresStorage``: the runtime's ``Storage`` protocol on PostgreSQL.

Agent rows, schedules and every agent's SQL pages live in one PostgreSQL database
that any number of processes (and machines) share. Connections come from one bounded
asyncio pool per process. Each write is one autocommit statement, or, when a
``Fence`` is set, one transaction that also runs ``myriad_fence(<condition>)``, sent
in one round trip (pipeline mode).

Failures: a connection that the server cut (a restart) is retried once on a fresh
connection; when the database stays unreachable the call fails within
``timeout`` seconds with ``DatabaseUnavailable`` (HTTP 503), never hangs, and the
pool reconnects by itself when the server is back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from myriad.errors import DatabaseUnavailable, StorageError
from myriad.storage.interface import AgentRecord, Fence, ScheduleRecord
from myriad.storage.postgres._connect import _driver, async_pool, check_url, translate
from myriad.storage.postgres._migrations import migrate
from myriad.storage.postgres._sqlfile import ShippedSQL, local_file
from myriad.storage.postgres.schema import RUNTIME_MIGRATIONS

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

T = TypeVar("T")
_COLS = "id, path, tenant, agent_class, name, method, payload, kind, cron, next_run, attempts, created, key"


def _like_children(path: str) -> str:
    return path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/sub/%"


class PostgresStorage:
    """The ``Storage`` protocol on a PostgreSQL database (``url``).

    ``data_dir`` holds only caches (agents' SQLite files, rebuilt from the database
    whenever they are missing or not known to be current). ``fence``: see
    ``storage.interface.Fence``.
    """

    def __init__(self, url: str, data_dir: Path, *, pool_size: int = 10, timeout: float = 5.0,
                 fence: Fence | None = None, run_migrations: bool = True, synchronous_commit: str = "on") -> None:
        self.url = check_url(url)
        self.data_dir = Path(data_dir)
        self.pool_size = pool_size
        self.timeout = timeout
        self.fence = fence
        self._run_migrations = run_migrations
        self.synchronous_commit = synchronous_commit
        self._pool: Any = None
        self._sql_heads: dict[str, tuple[int, int, int]] = {}  # from load_agent, used once by open_agent_sql

    # -- lifecycle -----------------------------------------------------------------
    async def open(self) -> None:
        psycopg = _driver()
        try:  # one direct connection first: its error says what is wrong (the pool's would not)
            conn = await psycopg.AsyncConnection.connect(self.url, connect_timeout=max(1, int(self.timeout)))
            await conn.close()
        except psycopg.Error as e:
            translate(e, self.url)
        if self._run_migrations:
            await asyncio.to_thread(migrate, self.url, [RUNTIME_MIGRATIONS], timeout=self.timeout)
        self._pool = async_pool(self.url, max_size=self.pool_size, timeout=self.timeout, name="myriad-storage",
                                synchronous_commit=self.synchronous_commit)
        await self._pool.open()
        (self.data_dir / "sqlcache").mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise StorageError("storage is not open")
        return self._pool

    async def _with_conn(self, work: Callable[["psycopg.AsyncConnection[Any]"], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection; retry once if the connection was dead."""
        psycopg = _driver()
        import psycopg_pool

        for attempt in (0, 1):
            try:
                async with self.pool.connection() as conn:
                    return await work(conn)
            except psycopg_pool.PoolTimeout as e:
                translate(e, self.url)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                if attempt == 0 and getattr(e, "sqlstate", None) in (None, "57P01", "57P02", "57P03", "08006"):
                    continue  # a connection the server closed (restart): once more on a fresh one
                translate(e, self.url)
            except psycopg.Error as e:
                translate(e, self.url)
        raise DatabaseUnavailable("database connection lost twice in a row; retry shortly")  # pragma: no cover

    async def _write(self, path: str, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        """Run write statements for the agent at ``path`` atomically, fenced when a fence
        is set; returns each statement's row count.

        One statement, one round trip: several writes (and the fence) become
        data-modifying CTEs of a single statement, which PostgreSQL runs atomically
        (an explicit transaction would cost a round trip each for BEGIN and COMMIT).
        """
        if self.fence is None and len(statements) == 1:
            sql, params = statements[0]

            async def one(conn: "psycopg.AsyncConnection[Any]") -> list[int]:
                return [(await conn.execute(sql, params)).rowcount]

            return await self._with_conn(one)
        parts: list[str] = []
        values: list[Any] = []
        if self.fence is not None:
            cond, cparams = self.fence.condition(path)
            parts.append(f"_fence AS (SELECT myriad_fence({cond}))")
            values.extend(cparams)
        for i, (sql, params) in enumerate(statements):
            parts.append(f"_w{i} AS ({sql} RETURNING 1)")
            values.extend(params)
        counts = ", ".join(f"(SELECT count(*) FROM _w{i})" for i in range(len(statements)))
        query = f"WITH {', '.join(parts)} SELECT {counts}" + (" FROM _fence" if self.fence is not None else "")

        async def work(conn: "psycopg.AsyncConnection[Any]") -> list[int]:
            row = await (await conn.execute(query, values)).fetchone()
            assert row is not None  # a SELECT without FROM (or FROM the one-row fence) has one row
            return [int(c) for c in row]

        return await self._with_conn(work)

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async def work(conn: "psycopg.AsyncConnection[Any]") -> list[tuple[Any, ...]]:
            return await (await conn.execute(sql, params)).fetchall()

        return await self._with_conn(work)

    # -- agents --------------------------------------------------------------------
    async def load_agent(self, path: str) -> AgentRecord | None:
        rows = await self._read(
            "SELECT a.path, a.tenant, a.agent_class, a.name, a.state, a.created, a.updated, "
            "f.version, f.page_size, f.n_pages "
            "FROM agents a LEFT JOIN agent_sql_files f ON f.path = a.path WHERE a.path = %s", (path,))
        if not rows:
            return None
        r = rows[0]
        if r[7] is not None:  # the wake opens the SQL next: spare it a round trip
            if len(self._sql_heads) > 1024:  # reads that were not wakes leave entries: bound them
                self._sql_heads.clear()
            self._sql_heads[path] = (int(r[7]), int(r[8]), int(r[9]))
        return AgentRecord(r[0], r[1], r[2], r[3], None if r[4] is None else bytes(r[4]), r[5], r[6], r[7] is not None)

    async def create_agent(self, record: AgentRecord) -> None:
        await self._write(record.path, [(
            "INSERT INTO agents VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (path) DO NOTHING",
            (record.path, record.tenant, record.agent_class, record.name, record.state, record.created,
             record.updated))])

    async def save_state(self, path: str, state: bytes | None, sql: Any = None) -> None:
        statements = [("UPDATE agents SET state=%s, updated=%s WHERE path=%s", (state, time.time(), path))]
        ship = sql.shipment() if isinstance(sql, ShippedSQL) else None
        if ship is not None:  # the turn's SQL writes and its state: durable together or not at all
            statements = ship[0] + statements
        await self._write(path, statements)
        if ship is not None:
            ship[1]()

    async def delete_agent(self, path: str) -> None:
        like = _like_children(path)
        match = "(path = %s OR path LIKE %s)"
        rows = await self._read(f"SELECT path FROM agents WHERE {match}", (path, like))
        await self._write(path, [
            (f"DELETE FROM agents WHERE {match}", (path, like)),
            (f"DELETE FROM schedules WHERE {match}", (path, like)),
            (f"DELETE FROM agent_sql_pages WHERE {match}", (path, like)),
            (f"DELETE FROM agent_sql_files WHERE {match}", (path, like)),
        ])
        for (p,) in rows or [(path,)]:
            local_file(self.data_dir, p, remove=True)

    async def count_agents(self, tenant: str | None = None) -> dict[str, int]:
        if tenant is None:
            rows = await self._read("SELECT agent_class, count(*) FROM agents GROUP BY agent_class", ())
        else:
            rows = await self._read("SELECT agent_class, count(*) FROM agents WHERE tenant=%s GROUP BY agent_class",
                                    (tenant,))
        return {c: int(n) for c, n in rows}

    # -- schedules -----------------------------------------------------------------
    async def add_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        (added,) = await self._write(record.path, [(
            f"INSERT INTO schedules ({_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            (record.id, record.path, record.tenant, record.agent_class, record.name, record.method, record.payload,
             record.kind, record.cron, record.next_run, record.attempts, record.created, record.key))])
        if added or record.key is None:
            return record
        rows = await self._read(f"SELECT {_COLS} FROM schedules WHERE path=%s AND key=%s", (record.path, record.key))
        return ScheduleRecord(*rows[0]) if rows else record

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        rows = await self._read(f"SELECT {_COLS} FROM schedules WHERE id=%s", (schedule_id,))
        return ScheduleRecord(*rows[0]) if rows else None

    async def delete_schedule(self, schedule_id: str, *, owner: str | None = None) -> bool:
        async def work(conn: "psycopg.AsyncConnection[Any]") -> bool:
            if owner is None:
                return (await conn.execute("DELETE FROM schedules WHERE id=%s", (schedule_id,))).rowcount > 0
            return (await conn.execute("DELETE FROM schedules WHERE id=%s AND claimed_by=%s",
                                       (schedule_id, owner))).rowcount > 0

        return await self._with_conn(work)

    async def list_schedules(self, path: str) -> list[ScheduleRecord]:
        rows = await self._read(f"SELECT {_COLS} FROM schedules WHERE path=%s ORDER BY next_run", (path,))
        return [ScheduleRecord(*r) for r in rows]

    async def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        rows = await self._read(f"SELECT {_COLS} FROM schedules WHERE next_run <= %s ORDER BY next_run LIMIT %s",
                                (now, limit))
        return [ScheduleRecord(*r) for r in rows]

    async def claim_due(self, now: float, limit: int, owner: str, lease: float) -> list[ScheduleRecord]:
        # SKIP LOCKED: concurrent claimants pass over each other's rows instead of
        # waiting; a row another claimant just took no longer matches when re-checked.
        cols = ", ".join(f"s.{c.strip()}" for c in _COLS.split(","))
        rows = await self._read(
            f"UPDATE schedules s SET claimed_by=%s, claim_until=%s FROM ("
            f" SELECT id FROM schedules WHERE next_run <= %s AND (claimed_by IS NULL OR claim_until < %s)"
            f" ORDER BY next_run LIMIT %s FOR UPDATE SKIP LOCKED) d WHERE s.id = d.id RETURNING {cols}",
            (owner, now + lease, now, now, limit))
        return sorted((ScheduleRecord(*r) for r in rows), key=lambda r: r.next_run)

    async def renew_claims(self, owner: str, ids: list[str], until: float) -> None:
        if ids:
            await self._read("UPDATE schedules SET claim_until=%s WHERE claimed_by=%s AND id = ANY(%s) RETURNING 1",
                             (until, owner, ids))

    async def next_due(self) -> float | None:
        rows = await self._read("SELECT min(greatest(next_run, coalesce(claim_until, next_run))) FROM schedules", ())
        return rows[0][0] if rows else None

    async def update_schedule(self, schedule_id: str, next_run: float, attempts: int, *,
                              owner: str | None = None) -> bool:
        q = "UPDATE schedules SET next_run=%s, attempts=%s, claimed_by=NULL, claim_until=NULL WHERE id=%s"
        args: tuple[Any, ...] = (next_run, attempts, schedule_id)
        if owner is not None:
            q, args = q + " AND claimed_by=%s", args + (owner,)

        async def work(conn: "psycopg.AsyncConnection[Any]") -> bool:
            return (await conn.execute(q, args)).rowcount > 0

        return await self._with_conn(work)

    # -- per-agent SQL -------------------------------------------------------------
    def agent_sql(self, path: str) -> ShippedSQL:
        return ShippedSQL.create(self, path)

    async def open_agent_sql(self, path: str) -> ShippedSQL:
        return await ShippedSQL.restore(self, path)


__all__ = ["PostgresStorage"]
