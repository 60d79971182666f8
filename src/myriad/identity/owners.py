"""Who owns each object of a tenant: the user whose token made it or reached it first.

``OwnerStore`` keeps rows ``(tenant, kind, id) -> user`` (``user`` None: the tenant
itself) in an ``IdentityDB``. The server keeps two (``myriad.server.ownership``):

- a per-host one, ``<data_dir>/owners.db``, for objects that live on one host
  (sandboxes and snapshots: their ids name things on that machine's disk);
- for agents, which any machine may activate, the identity database: on PostgreSQL
  that is table ``myriad_identity.owners`` (migration v4), shared by every process and
  machine, so what one machine recorded every other one knows; on SQLite it is the same
  ``owners.db`` (one host).

``claim`` is atomic on both engines (an insert that does nothing when a row exists,
then a read), so two machines reached by two users at the same moment agree on one
owner. Every method is one blocking query: callers on an event loop send them to a
thread when the database is PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from myriad.identity._db import IdentityDB, SQLiteDB

_SCHEMA = """CREATE TABLE IF NOT EXISTS owners (tenant TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
    user TEXT, PRIMARY KEY (tenant, kind, id));"""


class OwnerStore:
    """``(tenant, kind, id) -> user`` rows in one ``IdentityDB`` (see the module docstring)."""

    def __init__(self, db: IdentityDB) -> None:
        db.schema(_SCHEMA)
        self.db = db

    @classmethod
    def local(cls, path: Path | None) -> "OwnerStore":
        """The per-host store: a SQLite file (``None``: in memory, for tests)."""
        return cls(SQLiteDB(Path(path) if path is not None else Path(":memory:")))

    def owner(self, kind: str, tenant: str, id: str) -> tuple[bool, str | None]:
        """(recorded?, user)."""
        row = self.db.execute('SELECT "user" FROM owners WHERE tenant=? AND kind=? AND id=?',
                              (tenant, kind, id)).fetchone()
        return (row is not None, row[0] if row is not None else None)

    def record(self, kind: str, tenant: str, id: str, user: str | None) -> None:
        """``user`` (None: the tenant) owns the object, whoever did before."""
        self.db.execute('INSERT INTO owners (tenant, kind, id, "user") VALUES (?, ?, ?, ?) '
                        'ON CONFLICT (tenant, kind, id) DO UPDATE SET "user" = excluded."user"',
                        (tenant, kind, id, user))

    def claim(self, kind: str, tenant: str, id: str, user: str) -> str | None:
        """Record ``user`` as owner unless someone is already; the owner after."""
        self.db.execute('INSERT INTO owners (tenant, kind, id, "user") VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING',
                        (tenant, kind, id, user))
        return self.owner(kind, tenant, id)[1]

    def forget(self, kind: str, tenant: str, id: str) -> None:
        self.db.execute("DELETE FROM owners WHERE tenant=? AND kind=? AND id=?", (tenant, kind, id))

    def close(self) -> None:
        self.db.close()


__all__ = ["OwnerStore"]
