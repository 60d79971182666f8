"""Shared fixtures: a fresh data directory, storage, and an in-process agent host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from myriad.agents import AgentHost, Connection
from myriad.settings import AgentSettings
from myriad.storage import SQLiteStorage


class RecordingTransport:
    """A transport that keeps what the host sends (the project's own test double)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def frames(self) -> list[Any]:
        out = []
        for t in self.sent:
            try:
                out.append(json.loads(t))
            except ValueError:
                out.append(t)
        return out


def make_conn(cid: str = "c1") -> tuple[Connection, RecordingTransport]:
    t = RecordingTransport()
    return Connection(cid, t), t


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    s = SQLiteStorage(tmp_path / "data")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def host(storage: SQLiteStorage) -> AsyncIterator[AgentHost]:
    h = AgentHost(storage, AgentSettings(hibernate_after=3600, schedule_backoff=0.05))
    await h.start()
    yield h
    await h.stop()


@pytest.fixture(scope="session")
def postgres() -> Any:
    """One real PostgreSQL server for the test session (tests/pg.py); stopped at the end."""
    from tests.pg import PostgresServer

    server = PostgresServer(fsync=False).start()  # throwaway: no need to survive power loss
    yield server
    server.destroy()


@pytest.fixture
def pg_url(postgres: Any) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return str(postgres.create_database())


@pytest.fixture(params=["sqlite", "postgres"])
async def any_storage(request: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """The runtime's ``Storage`` on each backend in turn (a fresh database each time)."""
    if request.param == "sqlite":
        s: Any = SQLiteStorage(tmp_path / "data")
    else:
        from myriad.storage import PostgresStorage

        s = PostgresStorage(request.getfixturevalue("pg_url"), tmp_path / "data", pool_size=4)
    await s.open()
    yield s
    await s.close()
