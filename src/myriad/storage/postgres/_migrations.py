"""Versioned schema migrations, one list per component, in one table.

Each room that keeps tables in PostgreSQL declares a ``Migrations(component, steps)``
where ``steps`` is a list of ``(version, sql)`` in increasing version order; a
released step is never edited, a change is a new step. The composition root
(``myriad.server.database``) hands every component's list to ``migrate``, which
applies the steps a database has not seen yet, each in its own transaction together
with its row in ``schema_migrations(component, version)``. A transaction-scoped
advisory lock serialises processes that start at the same moment, so a database
from an older Myriad upgrades in place, once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

from myriad.errors import ConfigError, StorageError
from myriad.storage.postgres._connect import connect, translate

_LOCK_KEY = 0x6D79726961640001  # "myriad" + 1: the advisory lock every migrating process takes

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component text NOT NULL,
    version integer NOT NULL,
    applied double precision NOT NULL,
    PRIMARY KEY (component, version)
)
"""


@dataclass(frozen=True)
class Migrations:
    """The schema history of one component (``runtime``, ``identity``, ``metering``, ...)."""

    component: str
    steps: tuple[tuple[int, str], ...]

    def __post_init__(self) -> None:
        versions = [v for v, _ in self.steps]
        if versions != sorted(set(versions)) or any(v < 1 for v in versions):
            raise ConfigError(f"migrations of {self.component!r} must have increasing versions >= 1")

    @property
    def latest(self) -> int:
        return self.steps[-1][0] if self.steps else 0


def applied_versions(conn: Any) -> dict[str, int]:
    """The highest applied version of every component in the database."""
    with conn.transaction():  # under the migrations' lock: two processes creating the table race otherwise
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(_BOOTSTRAP)
    rows = conn.execute("SELECT component, max(version) FROM schema_migrations GROUP BY component").fetchall()
    return {c: int(v) for c, v in rows}


def migrate(url: str, components: Iterable[Migrations], *, timeout: float = 5.0) -> dict[str, list[int]]:
    """Apply every step not yet applied; returns ``{component: [versions applied now]}``."""
    import psycopg

    done: dict[str, list[int]] = {}
    with connect(url, timeout=timeout) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                conn.execute(_BOOTSTRAP)
            for m in components:
                done[m.component] = []
                for version, sql in m.steps:
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                        seen = conn.execute("SELECT 1 FROM schema_migrations WHERE component=%s AND version=%s",
                                            (m.component, version)).fetchone()
                        if seen:
                            continue
                        conn.execute(sql.encode())  # bytes: several statements in one simple query
                        conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                                     (m.component, version, time.time()))
                        done[m.component].append(version)
        except psycopg.Error as e:
            if getattr(e, "sqlstate", None) and not str(getattr(e, "sqlstate", "")).startswith(("08", "57")):
                raise StorageError(f"migration failed: {str(e).strip().splitlines()[0]}") from None
            translate(e, url)
    return done


def check_current(url: str, components: Iterable[Migrations], *, timeout: float = 5.0) -> None:
    """Raise ``ConfigError`` if the database is newer than this Myriad (a downgrade)."""
    with connect(url, timeout=timeout) as conn:
        have = applied_versions(conn)
    for m in components:
        if have.get(m.component, 0) > m.latest:
            raise ConfigError(f"the database's {m.component} schema is version {have[m.component]}, newer than "
                              f"this Myriad knows ({m.latest}): upgrade Myriad")


__all__ = ["Migrations", "migrate", "applied_versions", "check_current"]
