"""A real, throwaway PostgreSQL server for tests and benches (no mocks, no shared instance).

Tests reach it as ``tests.pg.PostgresServer``; ``myriad bench storage`` starts one when
no ``--database`` is given.

``PostgresServer`` runs Debian's ``postgresql`` binaries: ``initdb`` into a fresh
temporary directory, ``pg_ctl start`` on a free loopback port, ``stop`` removes it all.
As root (CI), the server runs as the ``postgres`` system user (initdb refuses root).

    with PostgresServer() as pg:
        url = pg.create_database()      # postgresql://myriad@127.0.0.1:PORT/t_ab12cd34
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found: install Debian's `postgresql` "
                       "package (bash scripts/setup.sh --test does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1."""

    user = "myriad"

    def __init__(self, *, fsync: bool = True) -> None:
        self.fsync = fsync  # off for test sessions (a throwaway server); benches keep it on
        self.bindir = _bindir()
        self.port = _free_port()
        self.base = Path(tempfile.mkdtemp(prefix="myriad-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.base, "postgres", "postgres")
        self.sockets.mkdir()
        if self._as:
            shutil.chown(self.sockets, "postgres", "postgres")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as, *args], capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> "PostgresServer":
        if not (self.data / "PG_VERSION").exists():
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                      "--auth=trust", "-E", "UTF8", "--no-instructions", "--locale=C.UTF-8")
        opts = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                f"-c max_connections=300 -c shared_buffers=64MB" + ("" if self.fsync else " -c fsync=off"))
        r = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                      str(self.base / "server.log"), "-w", "start", check=False)
        if r.returncode != 0:
            log = (self.base / "server.log").read_text() if (self.base / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr}\n{log[-2000:]}")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        """``pg_ctl restart`` (what an operator does; connections in flight are cut)."""
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
