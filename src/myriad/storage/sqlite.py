"""SQLite storage: the embedded default.

One WAL database (``myriad.db``) holds agent rows and schedules; each instance's
private SQL database is its own file under ``agents/``, created on first use, so an
agent that never calls ``self.sql`` costs one row and nothing else.

Durability: WAL with ``synchronous=NORMAL``. A committed transaction is in the OS
page cache before the call returns, so it survives ``kill -9`` of the host (the
guarantee the output gate needs); surviving power loss as well needs
``synchronous=FULL`` (``durable_fsync=True``), at roughly one fsync per write.

Checkpoints (copying the WAL into the database, which fsyncs) run on a background
thread with its own connection, never on the event loop: an fsync can take a
hundred milliseconds on a busy disk, and every agent on the host would wait for it.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from myriad.errors import InvalidRequest, StorageError
from myriad.storage.interface import AgentRecord, ScheduleRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    path TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    agent_class TEXT NOT NULL,
    name TEXT NOT NULL,
    state BLOB,
    created REAL NOT NULL,
    updated REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    tenant TEXT NOT NULL,
    agent_class TEXT NOT NULL,
    name TEXT NOT NULL,
    method TEXT NOT NULL,
    payload TEXT NOT NULL,
    kind TEXT NOT NULL,
    cron TEXT,
    next_run REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_due ON schedules(next_run);
CREATE INDEX IF NOT EXISTS schedules_path ON schedules(path);
"""

# Columns added after the first release: (table, column, declaration). A database from
# an older Myriad gets them at open (ALTER TABLE ADD COLUMN is instant in SQLite).
_ADDED_COLUMNS = (
    ("schedules", "key", "TEXT"),
    ("schedules", "claimed_by", "TEXT"),
    ("schedules", "claim_until", "REAL"),
)
_AFTER_COLUMNS = "CREATE UNIQUE INDEX IF NOT EXISTS schedules_key ON schedules(path, key) WHERE key IS NOT NULL"
_SCHEDULE_COLS = "id, path, tenant, agent_class, name, method, payload, kind, cron, next_run, attempts, created, key"


def connect(path: Path, *, durable_fsync: bool = False) -> sqlite3.Connection:
    """Open a SQLite database the way every Myriad store does (WAL, autocommit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durable_fsync else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def run_sql(conn: sqlite3.Connection, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """One statement of an agent's SQL on ``conn``: rows as dicts; a SQLite error is a 400."""
    try:
        cur = conn.execute(query, params)
    except sqlite3.Error as e:
        raise InvalidRequest(f"SQL error: {e}") from None
    if cur.description is None:
        return []
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


class _AgentSQL:
    """One instance's private database file."""

    __slots__ = ("_conn",)

    def __init__(self, path: Path) -> None:
        self._conn = connect(path)

    def execute(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return run_sql(self._conn, query, params)

    @property
    def pending(self) -> bool:
        return False  # a local file: durable (against kill -9) when execute returns

    async def flush(self) -> None:
        return None

    def close(self) -> None:
        self._conn.close()


class SQLiteStorage:
    """The ``Storage`` protocol on SQLite files under ``data_dir``."""

    def __init__(self, data_dir: Path, *, durable_fsync: bool = False, checkpoint_every: float = 1.0) -> None:
        self.data_dir = Path(data_dir)
        self._durable_fsync = durable_fsync
        self._db: sqlite3.Connection | None = None
        self._checkpoint_every = checkpoint_every
        self.wal_limit_bytes = 32 * 2**20
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()

    # lifecycle
    async def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "myriad.db"
        try:
            self._db = connect(path, durable_fsync=self._durable_fsync)
            self._db.executescript(_SCHEMA)
            have = {r[1] for r in self._db.execute("PRAGMA table_info(schedules)")}
            for table, column, decl in _ADDED_COLUMNS:
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            self._db.execute(_AFTER_COLUMNS)
            # One process owns an embedded data directory, so claims left by a previous
            # run (killed mid-fire) are void: those schedules fire again now.
            self._db.execute("UPDATE schedules SET claimed_by=NULL, claim_until=NULL WHERE claimed_by IS NOT NULL")
            self._db.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error as e:
            raise StorageError(f"cannot open {path}: {e}") from None
        self._stop.clear()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(path,),
                                              name="myriad-sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoint_loop(self, path: Path) -> None:
        # PASSIVE never blocks the writer, but under steady writes it never catches the
        # WAL's end either, so the WAL would grow forever; past a size, TRUNCATE (the
        # writer waits, briefly, in its busy handler) resets it.
        conn = connect(path, durable_fsync=self._durable_fsync)
        wal = Path(str(path) + "-wal")
        try:
            while not self._stop.wait(self._checkpoint_every):
                try:
                    big = wal.exists() and wal.stat().st_size > self.wal_limit_bytes
                    conn.execute(f"PRAGMA wal_checkpoint({'TRUNCATE' if big else 'PASSIVE'})")
                except (sqlite3.Error, OSError):
                    pass  # busy: the next round catches up
        finally:
            conn.close()

    async def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(10)
            self._checkpointer = None
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("storage is not open")
        return self._db

    # agents
    async def load_agent(self, path: str) -> AgentRecord | None:
        row = self.db.execute(
            "SELECT path, tenant, agent_class, name, state, created, updated FROM agents WHERE path=?",
            (path,),
        ).fetchone()
        return AgentRecord(*row) if row else None

    async def create_agent(self, record: AgentRecord) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO agents VALUES (?,?,?,?,?,?,?)",
            (record.path, record.tenant, record.agent_class, record.name, record.state,
             record.created, record.updated),
        )

    async def save_state(self, path: str, state: bytes | None, sql: Any = None) -> None:
        # ``sql``: a local file is durable as it is written; nothing to send along
        self.db.execute("UPDATE agents SET state=?, updated=? WHERE path=?", (state, time.time(), path))

    async def delete_agent(self, path: str) -> None:
        db = self.db
        like = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/sub/%"
        db.execute("BEGIN")
        try:
            subs = [r[0] for r in db.execute("SELECT path FROM agents WHERE path LIKE ? ESCAPE '\\'", (like,))]
            for p in [path, *subs]:
                db.execute("DELETE FROM agents WHERE path=?", (p,))
                db.execute("DELETE FROM schedules WHERE path=?", (p,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for p in [path, *subs]:
            f = self._sql_path(p)
            for suffix in ("", "-wal", "-shm"):
                Path(str(f) + suffix).unlink(missing_ok=True)

    async def count_agents(self, tenant: str | None = None) -> dict[str, int]:
        if tenant is None:
            rows = self.db.execute("SELECT agent_class, count(*) FROM agents GROUP BY agent_class")
        else:
            rows = self.db.execute(
                "SELECT agent_class, count(*) FROM agents WHERE tenant=? GROUP BY agent_class", (tenant,)
            )
        return {c: n for c, n in rows}

    # schedules
    async def add_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        added = self.db.execute(
            f"INSERT OR IGNORE INTO schedules ({_SCHEDULE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (record.id, record.path, record.tenant, record.agent_class, record.name, record.method,
             record.payload, record.kind, record.cron, record.next_run, record.attempts, record.created,
             record.key),
        ).rowcount
        if added or record.key is None:
            return record
        row = self.db.execute(f"SELECT {_SCHEDULE_COLS} FROM schedules WHERE path=? AND key=?",
                              (record.path, record.key)).fetchone()
        return ScheduleRecord(*row) if row else record

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        row = self.db.execute(f"SELECT {_SCHEDULE_COLS} FROM schedules WHERE id=?", (schedule_id,)).fetchone()
        return ScheduleRecord(*row) if row else None

    async def delete_schedule(self, schedule_id: str, *, owner: str | None = None) -> bool:
        if owner is None:
            return self.db.execute("DELETE FROM schedules WHERE id=?", (schedule_id,)).rowcount > 0
        return self.db.execute("DELETE FROM schedules WHERE id=? AND claimed_by=?", (schedule_id, owner)).rowcount > 0

    async def list_schedules(self, path: str) -> list[ScheduleRecord]:
        rows = self.db.execute(f"SELECT {_SCHEDULE_COLS} FROM schedules WHERE path=? ORDER BY next_run", (path,))
        return [ScheduleRecord(*r) for r in rows]

    async def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        rows = self.db.execute(
            f"SELECT {_SCHEDULE_COLS} FROM schedules WHERE next_run <= ? ORDER BY next_run LIMIT ?", (now, limit)
        )
        return [ScheduleRecord(*r) for r in rows]

    async def claim_due(self, now: float, limit: int, owner: str, lease: float) -> list[ScheduleRecord]:
        # One statement is one transaction, and SQLite has one writer at a time, so two
        # processes sharing the file never claim the same row.
        rows = self.db.execute(
            f"UPDATE schedules SET claimed_by=?, claim_until=? WHERE id IN ("
            f" SELECT id FROM schedules WHERE next_run <= ? AND (claimed_by IS NULL OR claim_until < ?)"
            f" ORDER BY next_run LIMIT ?) RETURNING {_SCHEDULE_COLS}",
            (owner, now + lease, now, now, limit),
        ).fetchall()
        return sorted((ScheduleRecord(*r) for r in rows), key=lambda r: r.next_run)

    async def renew_claims(self, owner: str, ids: list[str], until: float) -> None:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            self.db.execute(f"UPDATE schedules SET claim_until=? WHERE claimed_by=? AND id IN "
                            f"({','.join('?' * len(chunk))})", (until, owner, *chunk))

    async def next_due(self) -> float | None:
        # a claimed row comes due again only when its claim expires (its claimant died)
        row = self.db.execute("SELECT min(max(next_run, coalesce(claim_until, next_run))) FROM schedules").fetchone()
        return row[0] if row else None

    async def update_schedule(self, schedule_id: str, next_run: float, attempts: int, *,
                              owner: str | None = None) -> bool:
        q = "UPDATE schedules SET next_run=?, attempts=?, claimed_by=NULL, claim_until=NULL WHERE id=?"
        args: tuple[Any, ...] = (next_run, attempts, schedule_id)
        if owner is not None:
            q, args = q + " AND claimed_by=?", args + (owner,)
        return self.db.execute(q, args).rowcount > 0

    # per-agent SQL
    def agent_sql(self, path: str) -> _AgentSQL:
        return _AgentSQL(self._sql_path(path))

    async def open_agent_sql(self, path: str) -> _AgentSQL:
        return self.agent_sql(path)

    def sql_file(self, path: str) -> Path:
        """Where the SQL database of the agent at ``path`` lives (it may not exist yet)."""
        return self._sql_path(path)

    def _sql_path(self, path: str) -> Path:
        # Names are validated to a filename-safe alphabet; the hash shards the directory
        # and keeps sub-agent paths (which contain "/") flat.
        digest = hashlib.sha256(path.encode()).hexdigest()
        return self.data_dir / "agents" / digest[:2] / f"{digest[2:34]}.sqlite"

    def disk_bytes(self) -> int:
        """Bytes used on disk by the database and the per-agent SQL files."""
        total = 0
        for p in [self.data_dir / "myriad.db", self.data_dir / "myriad.db-wal"]:
            if p.exists():
                total += p.stat().st_size
        agents_dir = self.data_dir / "agents"
        if agents_dir.exists():
            total += sum(f.stat().st_size for f in agents_dir.rglob("*") if f.is_file())
        return total

    def wipe(self) -> None:
        """Delete everything under the data directory (tests and benchmarks only)."""
        shutil.rmtree(self.data_dir, ignore_errors=True)


__all__ = ["SQLiteStorage", "connect"]
