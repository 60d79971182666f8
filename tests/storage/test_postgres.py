"""PostgreSQL only: clear connection errors, migrations, fences, and per-agent SQL
that an empty machine rebuilds from the database."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from myriad.errors import ConfigError, DatabaseUnavailable, FencedOut
from myriad.storage import AgentRecord, PostgresStorage
from myriad.storage.postgres import RUNTIME_MIGRATIONS, Migrations, applied_versions, migrate
from myriad.storage.postgres._sqlfile import WAL_LIMIT


async def _open(url: str, tmp: Path, **kw: Any) -> PostgresStorage:
    s = PostgresStorage(url, tmp, pool_size=4, timeout=2, **kw)
    await s.open()
    return s


def test_bad_url_refused_and_missing_database_are_one_clear_line(postgres: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must start with postgresql://"):
        PostgresStorage("mysql://x/y", tmp_path)
    with pytest.raises(ConfigError, match="names no database"):
        PostgresStorage("postgresql://myriad@127.0.0.1:1", tmp_path)
    with pytest.raises(DatabaseUnavailable, match="connection refused"):
        asyncio.run(_open("postgresql://myriad@127.0.0.1:1/x", tmp_path))
    with pytest.raises(ConfigError, match=r"does not exist: create it"):
        asyncio.run(_open(postgres.url("no_such_db"), tmp_path))
    with pytest.raises(ConfigError, match="not valid"):
        asyncio.run(_open(postgres.url("x") + "?bogus=1", tmp_path))


def test_migrations_are_versioned_and_upgrade_in_place(pg_url: str) -> None:
    assert migrate(pg_url, [RUNTIME_MIGRATIONS]) == {"runtime": [1]}
    assert migrate(pg_url, [RUNTIME_MIGRATIONS]) == {"runtime": []}
    v2 = Migrations("demo", ((1, "CREATE TABLE demo (a int)"), (2, "ALTER TABLE demo ADD COLUMN b text")))
    assert migrate(pg_url, [Migrations("demo", v2.steps[:1])]) == {"demo": [1]}  # an older Myriad
    assert migrate(pg_url, [v2]) == {"demo": [2]}  # upgrades in place
    with psycopg.connect(pg_url) as conn:
        assert applied_versions(conn) == {"runtime": 1, "demo": 2}
        conn.execute("INSERT INTO demo VALUES (1, 'x')")
    with pytest.raises(ConfigError):
        Migrations("bad", ((2, ""), (1, "")))


class _Flag:
    """A trivial fence: the write holds while the flag row says ``token``."""

    def __init__(self, token: int) -> None:
        self.token = token

    def condition(self, path: str) -> tuple[str, tuple[Any, ...]]:
        return "EXISTS (SELECT 1 FROM fence_owner WHERE path = %s AND token = %s)", (path, self.token)


async def test_fenced_writes_fail_once_the_fence_moves(pg_url: str, tmp_path: Path) -> None:
    s = await _open(pg_url, tmp_path, fence=_Flag(1))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE fence_owner (path text PRIMARY KEY, token int)")
        conn.execute("INSERT INTO fence_owner VALUES ('t/c/a', 1)")
        now = time.time()
        await s.create_agent(AgentRecord("t/c/a", "t", "c", "a", b"{}", now, now))
        await s.save_state("t/c/a", b'{"n":1}')
        sql = s.agent_sql("t/c/a")
        sql.execute("CREATE TABLE t (x)")
        await sql.flush()
        conn.execute("UPDATE fence_owner SET token = 2")  # another process took the agent over
        with pytest.raises(FencedOut):
            await s.save_state("t/c/a", b'{"n":2}')
        sql.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(FencedOut):
            await sql.flush()
        assert sql.pending  # nothing was shipped
        with pytest.raises(FencedOut):  # state and SQL in one statement: neither is written
            await s.save_state("t/c/a", b'{"n":3}', sql)
        assert sql.pending
        assert (await s.load_agent("t/c/a")).state == b'{"n":1}'
        conn.execute("UPDATE fence_owner SET token = 1")  # (the fence holds again)
        await s.save_state("t/c/a", b'{"n":4}', sql)
        assert not sql.pending
        assert conn.execute("SELECT version FROM agent_sql_files").fetchone() == (2,)
    await s.close()


async def test_sql_rebuilt_on_an_empty_machine_and_cache_reused(pg_url: str, tmp_path: Path) -> None:
    a = await _open(pg_url, tmp_path / "a")
    now = time.time()
    await a.create_agent(AgentRecord("t/c/a", "t", "c", "a", b"{}", now, now))
    sql = a.agent_sql("t/c/a")
    sql.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    for i in range(2000):  # past WAL_LIMIT: a local checkpoint and a new WAL in between
        sql.execute("INSERT INTO notes (text) VALUES (?)", ("x" * 3000,))
        if i % 50 == 0:
            await sql.flush()
    await sql.flush()
    sql.execute("DELETE FROM notes WHERE id > 10")
    sql.execute("VACUUM")  # the file shrinks: pages past the end leave the table
    await sql.flush()
    assert 2000 * 3000 > WAL_LIMIT
    b = await _open(pg_url, tmp_path / "b")  # another machine: nothing local
    assert (await b.load_agent("t/c/a")).has_sql
    other = await b.open_agent_sql("t/c/a")
    assert other.execute("SELECT count(*) AS n, max(id) AS m FROM notes") == [{"n": 10, "m": 10}]
    assert other.execute("PRAGMA integrity_check") == [{"integrity_check": "ok"}]
    other.execute("INSERT INTO notes (text) VALUES ('from b')")
    await other.flush()
    other.close()
    sql.close()
    # back on the first machine: its cache is stale (b wrote since), so it is rebuilt
    again = await a.open_agent_sql("t/c/a")
    assert again.execute("SELECT text FROM notes WHERE id = 11") == [{"text": "from b"}]
    again.close()
    # closed cleanly: the next open reuses the local file without fetching pages
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM agent_sql_pages")
    cached = await a.open_agent_sql("t/c/a")
    assert cached.execute("SELECT count(*) AS n FROM notes") == [{"n": 11}]
    cached.close()
    await a.close()
    await b.close()
