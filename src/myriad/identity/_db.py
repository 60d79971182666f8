"""The identity database: one small interface, SQLite (embedded default) or PostgreSQL.

Every identity store (keys, signing keys, revoked tokens, the vault, the audit log)
talks to an ``IdentityDB``: ``execute(sql, params)`` with ``?`` placeholders and SQL
both engines accept (``ON CONFLICT`` upserts, ``"user"`` quoted), returning rows
with ``fetchone``/``fetchall``/iteration and ``rowcount``. Each call is its own
autocommitted statement, as it always was on SQLite.

- ``SQLiteDB``: ``identity.db`` in the data directory (WAL); ``schema(ddl)`` creates
  a store's tables on first use.
- ``PostgresDB``: schema ``myriad_identity`` in the ``--database``, every table
  made by the versioned migrations in ``_pg_schema.py``; ``schema`` is a no-op.
  Shared by every process and machine; connections from a bounded pool. Its
  ``change_token`` comes from one ``LISTEN`` connection: a trigger on ``api_keys``
  notifies every process of every change at commit, each notification (and each
  reconnect) moves the token on, as does every write through this object (seen at
  once, before its own notification arrives), and while that connection is down the
  token is None (callers then cache nothing).

A duplicate key raises ``Duplicate`` (a ``Conflict``) on both engines.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

from myriad.errors import Conflict, MyriadError


class Duplicate(Conflict):
    """An INSERT met an existing primary or unique key."""


class Rows(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


@runtime_checkable
class IdentityDB(Protocol):
    """Where the identity stores keep their rows."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def schema(self, ddl: str) -> None:
        """Create a store's tables if missing (SQLite; PostgreSQL's come from migrations)."""
        ...

    def change_token(self) -> object:
        """Something that changes whenever anyone (any process) writes, read without I/O;
        None when the engine cannot tell (then callers must not cache rows)."""
        ...

    def close(self) -> None: ...


class SQLiteDB:
    """``IdentityDB`` on one SQLite file (autocommit, WAL)."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        from myriad.storage import connect

        self.path = Path(path)
        self._conn = connect(self.path)

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.IntegrityError as e:
            raise Duplicate(str(e)) from None

    def schema(self, ddl: str) -> None:
        self._conn.executescript(ddl)

    def change_token(self) -> object:
        # data_version: another connection committed; total_changes: this one wrote
        return (self._conn.execute("PRAGMA data_version").fetchone()[0], self._conn.total_changes)

    def close(self) -> None:
        self._conn.close()


class _Result:
    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows, self.rowcount = rows, rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


_PLACEHOLDER = re.compile(r"\?")


class PostgresDB:
    """``IdentityDB`` on PostgreSQL (schema ``myriad_identity``), thread-safe."""

    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 4, connect_timeout: float = 5.0, migrate: bool = True) -> None:
        from myriad.identity._pg_schema import MIGRATIONS, SCHEMA_NAME
        from myriad.storage.postgres import Migrations, migrate as run_migrations, probe, sync_pool

        self.url = url
        self._sql: dict[str, str] = {}
        probe(url, connect_timeout)  # a bad URL or a refused connection: one clear line, now
        if migrate:
            run_migrations(url, [Migrations("identity", MIGRATIONS)], timeout=connect_timeout)
        self._pool = sync_pool(url, max_size=pool_size, timeout=connect_timeout, name="myriad-identity",
                               search_path=SCHEMA_NAME)
        self._pool.open(wait=False)
        self._timeout = connect_timeout
        self._changes: _Changes | None = None
        self._writes = 0  # this process's own writes: seen at once, before their notification arrives

    def _guard(self, fn: Any) -> Any:
        import psycopg
        from psycopg_pool import PoolTimeout

        from myriad.storage.postgres import translate

        try:
            return fn()
        except MyriadError:
            raise
        except psycopg.errors.UniqueViolation as e:
            raise Duplicate(str(e).splitlines()[0]) from None
        except (psycopg.Error, PoolTimeout) as e:
            translate(e, self.url)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        q = self._sql.get(sql)
        if q is None:
            q = self._sql[sql] = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))

        from myriad.storage.postgres import live_connection

        def run() -> _Result:
            with live_connection(self._pool) as conn:
                cur = conn.execute(q, tuple(params))
                rows = cur.fetchall() if cur.description is not None else []
                return _Result(rows, cur.rowcount)

        try:
            result: _Result = self._guard(run)
            return result
        finally:
            if q.lstrip()[:6].upper() != "SELECT":  # after the commit: a verify that read its
                self._writes += 1                    # token before it cannot cache the old row

    def schema(self, ddl: str) -> None:
        return None

    def change_token(self) -> object:
        if self._changes is None:  # the first caller that wants to cache starts listening
            self._changes = _Changes(self.url, self._timeout)
        token = self._changes.token()
        return None if token is None else (token, self._writes)

    def close(self) -> None:
        if self._changes is not None:
            self._changes.stop()
        self._pool.close()


CHANGES_CHANNEL = "myriad_identity_changes"
"""Where the ``api_keys`` trigger (``_pg_schema.py`` v3) notifies every change."""


class _Changes:
    """A daemon thread holding ``LISTEN myriad_identity_changes``; ``token()`` is an
    epoch that moves on at every notification and every reconnect, None while not
    listening (a change missed while disconnected is covered by the new epoch)."""

    _PING = 5.0
    """Seconds between liveness checks of a quiet connection (a silent network loss is
    noticed within about this long)."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url, self._timeout = url, timeout
        self._epoch = 0
        self._listening = False
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="myriad-identity-listen", daemon=True)
        self._thread.start()
        self._ready.wait(min(timeout, 1.0))  # usually listening before the first verify returns

    def token(self) -> object:
        return self._epoch if self._listening else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        import time

        from myriad.storage.postgres import connect

        while not self._stop.is_set():
            try:
                with connect(self._url, timeout=self._timeout) as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._epoch += 1
                    self._listening = True
                    self._ready.set()
                    quiet_since = time.monotonic()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._epoch += 1
                            quiet_since = time.monotonic()
                        if time.monotonic() - quiet_since > self._PING:
                            conn.execute("SELECT 1")
                            quiet_since = time.monotonic()
            except Exception:  # noqa: BLE001 - any failure: stop trusting the cache, reconnect
                pass
            self._listening = False
            self._epoch += 1
            self._ready.set()
            self._stop.wait(0.5)


def open_identity_db(data_dir: Path, database: str | None = None, **options: Any) -> IdentityDB:
    """PostgreSQL when ``database`` is a URL, else ``<data_dir>/identity.db``."""
    if database:
        return PostgresDB(database, **options)
    return SQLiteDB(Path(data_dir) / "identity.db")


__all__ = ["Duplicate", "IdentityDB", "PostgresDB", "Rows", "SQLiteDB", "open_identity_db"]
