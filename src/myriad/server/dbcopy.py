"""``myriad db copy``: move an embedded deployment (SQLite files) into PostgreSQL.

What moves, from a data directory (``.myriad``) into a database that has every
component's tables (``myriad db migrate`` first; ``copy_database`` runs it):

- runtime: ``myriad.db``'s agents (state included) and schedules, then each agent's
  own SQL database, shipped through ``PostgresStorage.open_agent_sql`` exactly as a
  running agent's writes are (so an agent woken on any machine finds its rows);
- identity: ``identity.db`` (tenants, API keys, signing keys, revoked tokens, the
  vault's sealed credentials, the audit log, the MCP server registry, spent OAuth codes
  and refresh tokens) into schema ``myriad_identity``, and ``owners.db``'s agent owners
  (whose each user's agent instance is; sandbox and snapshot owners stay in the file:
  those objects stay on their host);
- metering: ``metering.db`` (events, rollups, prices, budgets and their spend,
  limits, open holds, notices) into schema ``myriad_metering``;
- responses: ``responses.db`` (stored ``/v1/responses``, for ``previous_response_id``)
  into schema ``myriad_responses``.

Rows keep their ids, timestamps and sequence numbers; sequences continue after the
copied ones. The agents, identity and ledger rows go in one transaction (all or
nothing); agent SQL files follow one by one. The destination must be empty: the
copy refuses a database that already holds any of these rows, naming the table.

Not copied: ``identity.key`` (the key that opens the vault and the signing keys).
It must reach every machine some other way: copy the file into each data directory,
or set ``identity.secret_key`` everywhere (``copy_database`` says so).
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from myriad.errors import Conflict, InvalidRequest

_RUNTIME = [("myriad.db", "agents", "public.agents"), ("myriad.db", "schedules", "public.schedules")]
_IDENTITY = [("identity.db", t, f"myriad_identity.{t}")
             for t in ("tenants", "api_keys", "signing_keys", "revoked_tokens", "credentials", "audit", "mcp_servers",
                       "oauth_spent")] + [("owners.db", "owners", "myriad_identity.owners")]
_ONLY = {"myriad_identity.owners": "WHERE kind = 'agent'"}
"""Rows a table takes from its source: agents' owners move to the shared database; those of
sandboxes and snapshots stay in ``owners.db`` (those objects live on the host's disk)."""
_LEDGER = [("metering.db", t, f"myriad_metering.{t}")
           for t in ("events", "rollups", "rollups_tenant", "price_versions", "budgets", "budget_usage", "limits",
                     "limit_state", "reservations", "notices")]
_RESPONSES = [("responses.db", t, f"myriad_responses.{t}") for t in ("responses", "response_items")]
_SEQUENCES = [("myriad_identity.audit", "id"), ("myriad_metering.events", "seq"), ("myriad_metering.notices", "seq"),
              ("myriad_responses.responses", "seq")]


@dataclass
class CopyReport:
    """How many rows went where (``table -> rows``), and agent SQL files shipped."""

    rows: dict[str, int] = field(default_factory=dict)
    agent_sql_files: int = 0
    missing: list[str] = field(default_factory=list)
    """Source files that did not exist (that component had nothing to copy)."""

    def lines(self) -> list[str]:
        out = [f"{table}: {n} row(s)" for table, n in self.rows.items()]
        out.append(f"agent SQL databases: {self.agent_sql_files}")
        out += [f"(no {name} in the source: nothing to copy for it)" for name in self.missing]
        return out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(pg: Any, qualified: str) -> list[str]:
    schema, table = qualified.split(".")
    rows = pg.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
                      " ORDER BY ordinal_position", (schema, table)).fetchall()
    return [r[0] for r in rows]


def _mapped(qualified: str) -> dict[str, Any]:
    """Columns whose values change on the way (``column -> function``)."""
    if qualified.startswith("myriad_responses."):
        from myriad.models.responses import pg_owner

        return {"tenant": pg_owner}  # the owner key holds a NUL, which PostgreSQL's text refuses
    return {}


def _copy_table(src: sqlite3.Connection, pg: Any, table: str, qualified: str, where: str = "") -> int:
    have = {r[1] for r in src.execute(f"PRAGMA table_info({_quote(table)})")}
    if not have:
        return 0
    cols = [c for c in _columns(pg, qualified) if c in have]
    if not cols:
        raise InvalidRequest(f"cannot copy {table}: no column in common with {qualified} (run myriad db migrate)")
    (existing,) = pg.execute(f"SELECT count(*) FROM {qualified}").fetchone()
    if existing:
        raise Conflict(f"the destination already has {existing} row(s) in {qualified}: myriad db copy only fills "
                       "an empty database (point --to at a new one)")
    names = ", ".join(_quote(c) for c in cols)
    n = 0
    with pg.cursor().copy(f"COPY {qualified} ({names}) FROM STDIN") as cp:
        mapped = [(i, f) for i, c in enumerate(cols) for name, f in _mapped(qualified).items() if c == name]
        for row in src.execute(f"SELECT {names} FROM {_quote(table)} {where}"):
            if mapped:
                row = list(row)
                for i, f in mapped:
                    row[i] = f(row[i])
            cp.write_row(row)
            n += 1
    return n


def _ship_agent_sql(src_dir: Path, url: str, paths: list[str], timeout: float) -> int:
    """Each agent's SQL file into PostgreSQL, through the runtime's own shipping path."""
    import asyncio

    from myriad.storage import PostgresStorage, SQLiteStorage

    local = SQLiteStorage(src_dir)
    files = [(p, local.sql_file(p)) for p in paths]
    files = [(p, f) for p, f in files if f.exists()]
    if not files:
        return 0

    async def ship() -> int:
        with tempfile.TemporaryDirectory(prefix="myriad-db-copy-") as cache:
            dst = PostgresStorage(url, Path(cache), pool_size=2, timeout=timeout, run_migrations=False)
            await dst.open()
            try:
                for path, file in files:
                    sql = await dst.open_agent_sql(path)
                    try:
                        _fill_from(sql, file)
                        await sql.flush()
                    finally:
                        sql.close()
            finally:
                await dst.close()
        return len(files)

    return asyncio.run(ship())


def _fill_from(sql: Any, file: Path) -> None:
    """Recreate every table, row, index, view and trigger of ``file`` in the (empty) ``sql``."""
    sql.execute("ATTACH DATABASE ? AS src", (str(file),))
    try:
        sql.execute("BEGIN")
        objects = sql.execute("SELECT type, name, sql FROM src.sqlite_master WHERE sql IS NOT NULL"
                              " AND name NOT LIKE 'sqlite_%' ORDER BY CASE type WHEN 'table' THEN 0 ELSE 1 END, rowid")
        for o in objects:
            if o["type"] == "table":
                sql.execute(o["sql"])
                sql.execute(f"INSERT INTO main.{_quote(o['name'])} SELECT * FROM src.{_quote(o['name'])}")
        if sql.execute("SELECT 1 FROM src.sqlite_master WHERE name = 'sqlite_sequence'"):
            sql.execute("DELETE FROM main.sqlite_sequence")
            sql.execute("INSERT INTO main.sqlite_sequence SELECT * FROM src.sqlite_sequence")
        for o in objects:
            if o["type"] != "table":
                sql.execute(o["sql"])
        sql.execute("COMMIT")
    except BaseException:
        sql.execute("ROLLBACK")
        raise
    finally:
        sql.execute("DETACH DATABASE src")


def copy_database(src_dir: Path, url: str, *, timeout: float = 5.0) -> CopyReport:
    """Copy the embedded deployment in ``src_dir`` into the PostgreSQL database at ``url``."""
    from myriad.server.database import migrate_database
    from myriad.storage.postgres import connect, translate

    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise InvalidRequest(f"{src_dir} is not a directory: pass --from the data directory (e.g. .myriad)")
    migrate_database(url, timeout)
    report = CopyReport()
    paths: list[str] = []
    import psycopg

    with connect(url, timeout=timeout) as pg:
        try:
            with pg.transaction():
                for filename, table, qualified in _RUNTIME + _IDENTITY + _LEDGER + _RESPONSES:
                    file = src_dir / filename
                    if not file.exists():
                        if filename not in report.missing:
                            report.missing.append(filename)
                        continue
                    src = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
                    try:
                        report.rows[qualified] = _copy_table(src, pg, table, qualified, _ONLY.get(qualified, ""))
                        if table == "agents":
                            paths = [r[0] for r in src.execute("SELECT path FROM agents ORDER BY path")]
                    finally:
                        src.close()
                for qualified, column in _SEQUENCES:
                    pg.execute(f"SELECT setval(pg_get_serial_sequence(%s, %s), COALESCE(MAX({column}), 1),"
                               f" MAX({column}) IS NOT NULL) FROM {qualified}", (qualified, column))
        except psycopg.Error as e:
            translate(e, url)
    report.agent_sql_files = _ship_agent_sql(src_dir, url, paths, timeout)
    return report


COPIED = frozenset(q for _, _, q in _RUNTIME + _IDENTITY + _LEDGER + _RESPONSES)
"""Every table ``copy_database`` fills (a test checks it is every table the schemas have)."""

__all__ = ["COPIED", "CopyReport", "copy_database"]
