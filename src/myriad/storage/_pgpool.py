"""A bounded psycopg 3 connection pool for the synchronous stores (identity, metering ledger).

``open_pool(url, ...)`` connects once first, so a bad URL, a refused connection or a
missing database is one clear ``StorageError`` line (what, where, what to do), then
opens a ``psycopg_pool.ConnectionPool`` of autocommit connections whose
``search_path`` is the store's own schema. ``unavailable(e)`` turns a psycopg error
met later (the server restarted, the pool is exhausted) into the same kind of line.

psycopg is imported here, lazily: ``pip install 'myriad[postgres]'``.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from myriad.errors import ConfigError, StorageError


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"PostgreSQL needs psycopg 3: pip install 'myriad[postgres]' ({e})") from None
    return psycopg


def where(url: str) -> str:
    """``host:port/db`` of a URL, never its password."""
    try:
        u = urlsplit(url)
        host = u.hostname or "localhost (unix socket)"
        return f"{host}:{u.port or 5432}{u.path or '/'}"
    except ValueError:
        return "<unparsable URL>"


def check_url(url: str) -> None:
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"database URL must start with postgresql:// (got {str(url)[:40]!r})")
    try:
        urlsplit(url).port
    except ValueError as e:
        raise ConfigError(f"database URL {where(url)} is malformed: {e}") from None


def explain(e: BaseException, url: str) -> str:
    """One line saying what went wrong reaching the database and what to do."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    low = msg.lower()
    if "does not exist" in low and "database" in low:
        hint = "create it (createdb) or fix the database name in the URL"
    elif "refused" in low or "no such file" in low or "could not connect" in low or "timeout" in low:
        hint = "is PostgreSQL running and reachable there?"
    elif "authentication" in low or "password" in low or "role" in low:
        hint = "check the user and password in the URL"
    else:
        hint = "check the database URL and that the server is up"
    return f"cannot reach PostgreSQL at {where(url)}: {msg} ({hint})"


def open_pool(url: str, *, schema: str, min_size: int = 1, max_size: int = 8, timeout: float = 5.0,
              name: str = "myriad", session: dict[str, str] | None = None) -> Any:
    """A bounded ``psycopg_pool.ConnectionPool`` (autocommit, ``search_path`` = ``schema``,
    plus the ``session`` settings, e.g. ``{"synchronous_commit": "off"}``)."""
    psycopg = _psycopg()
    from psycopg_pool import ConnectionPool

    check_url(url)
    try:
        psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
    except psycopg.Error as e:
        raise StorageError(explain(e, url)) from None

    def configure(conn: Any) -> None:
        conn.execute(f"SET search_path TO {schema}, public")
        for name_, value in (session or {}).items():
            conn.execute("SELECT set_config(%s, %s, false)", (name_, value))

    pool = ConnectionPool(url, min_size=min_size, max_size=max_size, timeout=timeout, open=False, name=name,
                          configure=configure, kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))})
    pool.open(wait=False)
    return pool


def unavailable(e: BaseException, url: str, what: str) -> StorageError:
    """The error a store raises when the database fails under it."""
    return StorageError(f"{what}: {explain(e, url)}")


def is_connection_error(e: BaseException) -> bool:
    psycopg = _psycopg()
    from psycopg_pool import PoolTimeout

    return isinstance(e, (psycopg.OperationalError, PoolTimeout))


ErrorMapper = Callable[[BaseException], BaseException]

__all__ = ["apply_migrations", "check_url", "explain", "is_connection_error", "open_pool", "unavailable", "where"]


def apply_migrations(pool: Any, component: str, migrations: list[tuple[int, str]]) -> int:
    """Apply ``component``'s migrations not yet applied (each once, in order, under a lock).

    Interim runner until the storage room's registry is wired; same table shape.
    Returns the component's version afterwards."""
    import zlib

    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(b"myriad.migrations"),))
        conn.execute("CREATE TABLE IF NOT EXISTS public.myriad_migrations(component TEXT NOT NULL, version INTEGER NOT NULL,"
                     " applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY(component, version))")
        done = {r[0] for r in conn.execute("SELECT version FROM public.myriad_migrations WHERE component = %s", (component,))}
        for version, sql in sorted(migrations):
            if version in done:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO public.myriad_migrations(component, version) VALUES (%s, %s)", (component, version))
            done.add(version)
    return max(done, default=0)
