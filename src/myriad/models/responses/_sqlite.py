"""Stored responses in a SQLite file: they survive a restart. Same contract as
``MemoryResponseStore`` (per tenant, ``ttl`` seconds each, at most
``max_per_tenant``, oldest dropped first).

``put`` only buffers (readable at once from this process, ``_buffer.py``); ``flush``
writes what is buffered in one transaction. ``Responses`` calls ``flush`` in a worker
thread a few milliseconds after a put, so the event loop never waits on the disk and a
burst of responses costs one commit (a write to the WAL, ``synchronous=NORMAL``):
a host killed in that window loses those few milliseconds of stored responses,
never the answers already given.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

import orjson

from myriad.models.responses._buffer import BufferedResponseStore, Key
from myriad.models.responses._store import StoredResponse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    tenant TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, expires_at REAL NOT NULL,
    response BLOB NOT NULL, input_items BLOB NOT NULL, conversation BLOB NOT NULL,
    PRIMARY KEY (tenant, id));
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (tenant, seq);
CREATE INDEX IF NOT EXISTS responses_by_expiry ON responses (expires_at);
CREATE TABLE IF NOT EXISTS response_items (
    tenant TEXT NOT NULL, item_id TEXT NOT NULL, response_id TEXT NOT NULL,
    PRIMARY KEY (tenant, item_id));
CREATE INDEX IF NOT EXISTS response_items_by_response ON response_items (tenant, response_id);
"""


class SQLiteResponseStore(BufferedResponseStore):
    """Stored responses in one SQLite file (WAL, ``synchronous=NORMAL``)."""

    def __init__(self, path: str | Path, ttl: float = 24 * 3600, max_per_tenant: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(ttl, max_per_tenant, clock)
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()  # one statement sequence on the connection at a time

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:  # opened on first use: building the store touches no file
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _read(self, tenant: str, response_id: str) -> StoredResponse | None:
        with self._db_lock:
            row = self._conn().execute(
                "SELECT response, input_items, conversation, expires_at FROM responses WHERE tenant = ? AND id = ?",
                (tenant, response_id)).fetchone()
        if row is None:
            return None
        return StoredResponse(response=orjson.loads(row[0]), input_items=orjson.loads(row[1]),
                              conversation=orjson.loads(row[2]), expires_at=row[3])

    def _find_item(self, tenant: str, item_id: str) -> str | None:
        with self._db_lock:
            row = self._conn().execute("SELECT response_id FROM response_items WHERE tenant = ? AND item_id = ?",
                                       (tenant, item_id)).fetchone()
        return row[0] if row else None

    def _remove(self, tenant: str, response_id: str) -> bool:
        with self._db_lock:
            db = self._conn()
            db.execute("BEGIN")
            found = self._delete(db, tenant, response_id)
            db.execute("COMMIT")
        return found

    def _write(self, batch: dict[Key, StoredResponse], now: float, housekeeping: bool) -> None:
        with self._db_lock:
            db = self._conn()
            db.execute("BEGIN")
            try:
                for (t, rid), stored in batch.items():
                    self._insert(db, t, rid, stored)
                if housekeeping:  # now and then, drop what expired (any tenant)
                    for et, eid in db.execute("SELECT tenant, id FROM responses WHERE expires_at <= ? LIMIT 1000",
                                              (now,)).fetchall():
                        self._delete(db, et, eid)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _close(self) -> None:
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _insert(self, db: sqlite3.Connection, t: str, rid: str, stored: StoredResponse) -> None:
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM responses WHERE tenant = ?", (t,)).fetchone()[0]
        db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (t, rid, seq, stored.expires_at, orjson.dumps(stored.response),
                    orjson.dumps(stored.input_items), orjson.dumps(stored.conversation)))
        db.executemany("INSERT OR REPLACE INTO response_items VALUES (?, ?, ?)",
                       [(t, item_id, rid) for item_id in stored.items])
        # seq grows by one per response: what is max_per_tenant responses old goes (an
        # index range, usually one row; deletions only make the tenant hold fewer)
        for (old_id,) in db.execute("SELECT id FROM responses WHERE tenant = ? AND seq <= ?",
                                    (t, seq - self.max_per_tenant)).fetchall():
            self._delete(db, t, old_id)

    @staticmethod
    def _delete(db: sqlite3.Connection, tenant: str, response_id: str) -> bool:
        gone = db.execute("DELETE FROM responses WHERE tenant = ? AND id = ?", (tenant, response_id)).rowcount
        db.execute("DELETE FROM response_items WHERE tenant = ? AND response_id = ?", (tenant, response_id))
        return gone > 0


__all__ = ["SQLiteResponseStore"]
