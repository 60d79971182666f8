"""Per-agent SQL that survives the loss of its machine: WAL frames shipped to PostgreSQL.

An agent's ``self.sql`` stays a local SQLite file (reads and writes at local speed),
kept as a cache under ``<data_dir>/sqlcache/``. PostgreSQL holds the truth: every
page of the file, in ``agent_sql_pages(path, pgno, data)``, and its size and a
version in ``agent_sql_files``.

Writes: the file is in WAL mode with automatic checkpoints off, so each committed
transaction appends its changed pages to the ``-wal`` file as frames (a 24-byte
header that names the page number and, on the commit frame, the database size in
pages; then the page). ``flush()`` reads the frames appended since the last flush,
keeps the newest image of each page up to the last commit frame, and upserts them,
the new size and ``version + 1`` in one PostgreSQL transaction (fenced like state
writes). The host's output gate calls ``flush()`` before it releases any frame that
follows the writes, so an acknowledged SQL write is in PostgreSQL. When the WAL
passes ``WAL_LIMIT`` bytes after a flush, it is checkpointed into the file and
truncated locally (everything in it is already shipped), and shipping starts again
at its new header.

Activation: the file is rebuilt from the page table (pages written in order into a
fresh file) unless the local cache is known to be current: a clean close writes
``<file>.ver`` with the version it shipped last, and opening deletes that marker
first, so a process that dies while the agent is active leaves no marker and the
next activation (here or on any machine) rebuilds from PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from myriad.storage.sqlite import run_sql

if TYPE_CHECKING:  # pragma: no cover
    from myriad.storage.postgres.storage import PostgresStorage

PAGE_SIZE = 4096
WAL_LIMIT = 4 * 2**20
_WAL_HEADER = 32
_FRAME_HEADER = 24


def local_file(data_dir: Path, path: str, *, remove: bool = False) -> Path:
    """The cache file of the agent at ``path`` (and, with ``remove``, delete it)."""
    digest = hashlib.sha256(path.encode()).hexdigest()
    f = Path(data_dir) / "sqlcache" / digest[:2] / f"{digest[2:34]}.sqlite"
    if remove:
        for suffix in ("", "-wal", "-shm", ".ver"):
            Path(str(f) + suffix).unlink(missing_ok=True)
    return f


def _open_sqlite(file: Path) -> sqlite3.Connection:
    file.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # we checkpoint, after shipping
    conn.execute("PRAGMA synchronous=OFF")  # a cache: PostgreSQL holds the durable copy
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


_VALUES_MAX = 4096  # pages per VALUES list (3 parameters each; PostgreSQL allows 65,535)


def _upsert_pages(path: str, pages: dict[int, bytes]) -> tuple[str, tuple[Any, ...]]:
    """One upsert of the pages: a VALUES list (psycopg adapts plain parameters several
    times faster than a bytea[] array), arrays past ``_VALUES_MAX`` pages."""
    numbers = sorted(pages)
    tail = " ON CONFLICT (path, pgno) DO UPDATE SET data = excluded.data"
    if len(numbers) <= _VALUES_MAX:
        params: list[Any] = []
        for n in numbers:
            params += (path, n, pages[n])
        values = ",".join(["(%s,%s,%s)"] * len(numbers))
        return f"INSERT INTO agent_sql_pages (path, pgno, data) VALUES {values}{tail}", tuple(params)
    return (f"INSERT INTO agent_sql_pages (path, pgno, data) SELECT %s, n, d FROM unnest(%s::int[], %s::bytea[]) "
            f"AS u(n, d){tail}", (path, numbers, [pages[n] for n in numbers]))


class ShippedSQL:
    """One agent's SQL database: a local SQLite file whose pages are shipped to PostgreSQL."""

    def __init__(self, storage: "PostgresStorage", path: str, file: Path, version: int, *, full: bool) -> None:
        self._storage = storage
        self.path = path
        self._file = file
        self._wal = Path(str(file) + "-wal")
        self._conn = _open_sqlite(file)
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # start from an empty WAL
        self._offset = 0  # bytes of the WAL already shipped (0: none, not even its header)
        self._salts: bytes | None = None
        self._full = full  # ship every page of the file at the next flush (a new database)
        self._n_pages = 0
        self.version = version

    # -- opening -------------------------------------------------------------------
    @classmethod
    def create(cls, storage: "PostgresStorage", path: str) -> "ShippedSQL":
        """A new, empty database (PostgreSQL has none for ``path``): any local file is stale."""
        file = local_file(storage.data_dir, path, remove=True)
        return cls(storage, path, file, 0, full=True)

    @classmethod
    async def restore(cls, storage: "PostgresStorage", path: str) -> "ShippedSQL":
        """The database as PostgreSQL has it: the local cache if current, else rebuilt."""
        file = local_file(storage.data_dir, path)
        marker = Path(str(file) + ".ver")

        async def head(conn: Any) -> Any:
            return await (await conn.execute(
                "SELECT version, page_size, n_pages FROM agent_sql_files WHERE path=%s", (path,))).fetchone()

        row = storage._sql_heads.pop(path, None) or await storage._with_conn(head)
        if row is None:
            return cls.create(storage, path)
        version, page_size, n_pages = int(row[0]), int(row[1]), int(row[2])
        try:
            cached = int(marker.read_text()) if file.exists() else -1
        except (OSError, ValueError):
            cached = -1
        marker.unlink(missing_ok=True)  # from now on the cache is "in use": a crash leaves no marker
        if cached != version:
            await cls._rebuild(storage, path, file, page_size, n_pages)
        sql = cls(storage, path, file, version, full=False)
        sql._n_pages = n_pages
        return sql

    @staticmethod
    async def _rebuild(storage: "PostgresStorage", path: str, file: Path, page_size: int, n_pages: int) -> None:
        async def pages(conn: Any) -> list[tuple[int, bytes]]:
            cur = conn.cursor(binary=True)
            await cur.execute("SELECT pgno, data FROM agent_sql_pages WHERE path=%s AND pgno <= %s ORDER BY pgno",
                              (path, n_pages))
            rows: list[tuple[int, bytes]] = await cur.fetchall()
            return rows

        rows = await storage._with_conn(pages)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(file) + ".tmp")
        with open(tmp, "wb") as f:
            f.truncate(n_pages * page_size)  # a page never shipped reads as zeros (never happens in practice)
            for pgno, data in rows:
                f.seek((pgno - 1) * page_size)
                f.write(data)
        for suffix in ("-wal", "-shm"):
            Path(str(file) + suffix).unlink(missing_ok=True)
        os.replace(tmp, file)

    # -- the AgentSQL protocol -----------------------------------------------------
    def execute(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return run_sql(self._conn, query, params)

    @property
    def pending(self) -> bool:
        if self._full:
            return True
        try:
            return self._wal.stat().st_size > max(self._offset, _WAL_HEADER)
        except FileNotFoundError:
            return False

    async def flush(self) -> None:
        """Ship the committed frames appended since the last flush (one statement)."""
        ship = self.shipment()
        if ship is not None:
            statements, shipped = ship
            await self._storage._write(self.path, statements)
            shipped()

    def shipment(self) -> tuple[list[tuple[str, tuple[Any, ...]]], Callable[[], None]] | None:
        """The statements that ship what is pending, and what to call once they are
        committed; None when nothing is. ``PostgresStorage.save_state`` sends them in
        the same statement as the turn's state, so a turn's state and SQL are durable
        together or not at all."""
        if not self.pending:
            return None
        pages, n_pages, new_offset = self._collect()
        if not pages and n_pages == self._n_pages:
            self._offset = new_offset
            return None
        statements: list[tuple[str, tuple[Any, ...]]] = []
        if pages:
            statements.append(_upsert_pages(self.path, pages))
        if n_pages < self._n_pages:
            statements.append(("DELETE FROM agent_sql_pages WHERE path=%s AND pgno > %s", (self.path, n_pages)))
        statements.append((
            "INSERT INTO agent_sql_files VALUES (%s, %s, %s, 1, %s) ON CONFLICT (path) DO UPDATE SET "
            "n_pages = excluded.n_pages, version = agent_sql_files.version + 1, updated = excluded.updated",
            (self.path, PAGE_SIZE, n_pages, time.time())))

        def shipped() -> None:
            self.version += 1
            self._full = False
            self._offset = new_offset
            self._n_pages = n_pages
            if new_offset > WAL_LIMIT:
                self._checkpoint()

        return statements, shipped

    def _checkpoint(self) -> None:
        busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            self._offset = 0
            self._salts = None

    def _collect(self) -> tuple[dict[int, bytes], int, int]:
        """(newest committed image of each page since the last flush, database size in
        pages, WAL offset after the last commit frame)."""
        committed: dict[int, bytes] = {}
        n_pages = self._n_pages
        if self._full:  # a new database: every page of the main file first
            size = self._file.stat().st_size if self._file.exists() else 0
            with open(self._file, "rb") as f:
                for i in range(size // PAGE_SIZE):
                    committed[i + 1] = f.read(PAGE_SIZE)
            n_pages = size // PAGE_SIZE
        try:
            with open(self._wal, "rb") as f:
                header = f.read(_WAL_HEADER)
                if len(header) < _WAL_HEADER:
                    return committed, n_pages, self._offset
                page_size = struct.unpack(">I", header[8:12])[0]
                salts = header[16:24]
                if salts != self._salts:  # a new WAL (after a checkpoint): ship it from its start
                    self._salts, self._offset = salts, 0
                start = max(self._offset, _WAL_HEADER)
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return committed, n_pages, self._offset
        frame = _FRAME_HEADER + page_size
        txn: dict[int, bytes] = {}
        end = start
        pos = 0
        while pos + frame <= len(data):
            pgno, size_after = struct.unpack_from(">II", data, pos)
            if data[pos + 8:pos + 16] != salts:
                break  # left over from before the WAL restarted: not part of this WAL
            txn[pgno] = data[pos + _FRAME_HEADER:pos + frame]
            pos += frame
            if size_after:  # a commit frame: the transaction's pages are now the database's
                committed.update(txn)
                txn = {}
                n_pages = size_after
                end = start + pos
        return committed, n_pages, end

    def close(self) -> None:
        """Close the cache; when everything was shipped, mark it current for the next open."""
        clean = not self.pending
        try:
            self._conn.close()  # the last connection checkpoints and removes the WAL
        finally:
            if clean:
                Path(str(self._file) + ".ver").write_text(str(self.version))


__all__ = ["ShippedSQL", "local_file", "PAGE_SIZE", "WAL_LIMIT"]
