"""Connections to PostgreSQL: URL checks, pools, and errors a person can act on.

Every Myriad store that speaks PostgreSQL (the runtime's ``PostgresStorage``, the
identity stores, the metering ledger) opens its connections here, so a bad URL, a
refused connection or a missing database reads the same everywhere: one line that
says which, and what to do (``myriad.errors``), never a driver traceback.

psycopg 3 is the one driver: it has both an asyncio API (the agent runtime) and a
synchronous one (identity and metering stores, which are synchronous), with pools
for each (``psycopg_pool``), server-side prepared statements and pipeline mode.
It is imported lazily, inside these functions: ``import myriad`` never loads it.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, NoReturn
from urllib.parse import urlsplit

from myriad.errors import ConfigError, DatabaseUnavailable, FencedOut, StorageError

if TYPE_CHECKING:  # pragma: no cover
    import psycopg
    from psycopg import Connection
    import psycopg_pool

FENCE_SQLSTATE = "MYF01"
"""Raised by ``myriad_fence(ok)`` (runtime migration 1) when a write's fence does not hold."""


def _driver() -> Any:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as e:  # never swallowed: say which extra provides it
        raise ConfigError(f"PostgreSQL support needs psycopg 3: pip install 'myriad[postgres]' ({e})") from None
    return psycopg


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def check_url(url: str) -> str:
    """``url`` if it looks like a PostgreSQL URL; ``ConfigError`` saying what is wrong otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("database URL is empty: pass --database postgresql://user@host:5432/dbname")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ConfigError(f"database URL {redact(url)!r} is not a valid URL ({e})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"database URL {redact(url)!r} must start with postgresql:// "
                          "(e.g. postgresql://myriad@db.internal:5432/myriad)")
    if not parts.path.strip("/"):
        raise ConfigError(f"database URL {redact(url)!r} names no database: add /dbname at the end")
    return url


def _target(url: str) -> str:
    p = urlsplit(url)
    return f"{p.hostname or 'localhost'}:{p.port or 5432}/{p.path.strip('/')}"


def translate(error: BaseException, url: str) -> NoReturn:
    """Raise the ``myriad.errors`` form of a psycopg error (called inside ``except``)."""
    psycopg = _driver()
    where = _target(url)
    text = str(error).strip()
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate == FENCE_SQLSTATE:
        raise FencedOut("write refused: this process no longer holds the agent (another activation "
                        "took it over)") from None
    if isinstance(error, psycopg.ProgrammingError) and sqlstate is None:  # libpq's own URL parser
        raise ConfigError(f"database URL {redact(url)!r} is not valid: {text.splitlines()[0]}") from None
    if sqlstate == "3D000" or re.search(r'database "[^"]+" does not exist', text):
        raise ConfigError(f"database {where} does not exist: create it (createdb -h HOST -U USER "
                          f"{urlsplit(url).path.strip('/')}) or point --database at one that does") from None
    if sqlstate in ("28P01", "28000") or "password authentication failed" in text or "no pg_hba.conf" in text:
        raise ConfigError(f"database {where} refused the login: {text.splitlines()[-1].strip()} "
                          "(check the user and password in the URL, and pg_hba.conf)") from None
    if "Connection refused" in text or "could not connect" in text or "connection failed" in text:
        raise DatabaseUnavailable(f"cannot connect to the database at {where}: connection refused "
                                  "(is PostgreSQL running there and listening on that port?)") from None
    import psycopg_pool

    if isinstance(error, psycopg_pool.PoolTimeout):
        raise DatabaseUnavailable(f"database {where} did not give a connection in time "
                                  "(it is down, restarting, or the pool is exhausted); retry shortly") from None
    if isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)) or sqlstate in (
            "57P01", "57P02", "57P03", "08000", "08003", "08006"):
        raise DatabaseUnavailable(f"database {where} is unavailable: {text.splitlines()[0] if text else type(error).__name__}"
                                  "; retry shortly") from None
    raise StorageError(f"database error ({type(error).__name__}): {text.splitlines()[0] if text else ''}") from None


def connect(url: str, *, autocommit: bool = True, timeout: float = 5.0) -> "psycopg.Connection[Any]":
    """One synchronous connection (CLI verbs, migrations), errors translated."""
    psycopg = _driver()
    check_url(url)
    try:
        conn: Connection[Any] = psycopg.connect(url, autocommit=autocommit, connect_timeout=max(1, int(timeout)))
        return conn
    except psycopg.Error as e:
        translate(e, url)


def sync_pool(url: str, *, max_size: int = 10, timeout: float = 5.0, name: str = "myriad",
              search_path: str | None = None, session: dict[str, str] | None = None) -> "psycopg_pool.ConnectionPool[Any]":
    """A bounded pool of synchronous autocommit connections (not opened yet: call ``open()``).

    ``search_path``: the schema unqualified table names resolve to (a store's own, e.g.
    ``myriad_identity``); ``session``: settings every new connection gets
    (``{"synchronous_commit": "off"}``)."""
    _driver()
    import psycopg_pool

    check_url(url)
    gucs = dict(session or {})
    if search_path:
        gucs["search_path"] = f"{search_path}, public"

    def configure(conn: Any) -> None:
        for guc, value in gucs.items():
            conn.execute("SELECT set_config(%s, %s, false)", (guc, value))

    return psycopg_pool.ConnectionPool(url, min_size=1, max_size=max_size, timeout=timeout, open=False, name=name,
                                       kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
                                       reconnect_timeout=float("inf"), configure=configure if gucs else None)


def async_pool(url: str, *, max_size: int = 10, timeout: float = 5.0, name: str = "myriad",
               synchronous_commit: str = "on") -> "psycopg_pool.AsyncConnectionPool[Any]":
    """A bounded pool of asyncio autocommit connections (not opened yet: ``await pool.open()``)."""
    _driver()
    import psycopg_pool

    check_url(url)
    if synchronous_commit not in ("on", "off", "local", "remote_write", "remote_apply"):
        raise ConfigError(f"storage.synchronous_commit must be on or off, got {synchronous_commit!r}")
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, int(timeout))}
    if synchronous_commit != "on":
        kwargs["options"] = f"-c synchronous_commit={synchronous_commit}"
    return psycopg_pool.AsyncConnectionPool(url, min_size=1, max_size=max_size, timeout=timeout, open=False,
                                            name=name, reconnect_timeout=float("inf"), kwargs=kwargs)


def alive(conn: Any) -> bool:
    """False if an idle pooled connection is known dead without a round trip (the server
    restarted: its goodbye and the closed socket are already in the buffer)."""
    psycopg = _driver()
    from psycopg.pq import ConnStatus

    try:
        for _ in range(2):  # the first read may return the server's goodbye, the second its EOF
            conn.pgconn.consume_input()
            conn.pgconn.is_busy()  # parses what was read
    except psycopg.OperationalError:
        return False
    return bool(conn.pgconn.status == ConnStatus.OK and not conn.closed and not conn.broken)


@contextmanager
def live_connection(pool: Any, attempts: int = 3) -> Iterator[Any]:
    """A pooled connection that is not already dead (a dead one is closed, so the pool drops it)."""
    for _ in range(attempts - 1):
        with pool.connection() as conn:
            if not alive(conn):
                conn.close()
                continue
            yield conn
            return
    with pool.connection() as conn:
        yield conn


def probe(url: str, timeout: float = 5.0) -> None:
    """Connect once and run ``SELECT 1``: the clear error now rather than at the first request."""
    with connect(url, timeout=timeout) as conn:
        conn.execute("SELECT 1")


__all__ = ["FENCE_SQLSTATE", "alive", "check_url", "redact", "translate", "connect", "live_connection", "sync_pool",
           "async_pool", "probe"]
