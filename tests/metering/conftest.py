"""Fixtures for the metering room: a ledger on a temp file, a clock the test moves."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from myriad.metering import Meter
from myriad.metering._store import open_store

PRICES = {
    "currency": "USD",
    "prices": [
        {"resource": "model.input_tokens", "unit_price": "0.15", "per": 1_000_000},
        {"resource": "model.cached_tokens", "unit_price": "0.075", "per": 1_000_000},
        {"resource": "model.output_tokens", "unit_price": "0.60", "per": 1_000_000},
        {"resource": "model.input_tokens", "model": "big", "unit_price": "2.50", "per": 1_000_000},
        {"resource": "model.output_tokens", "model": "big", "unit_price": "10.00", "per": 1_000_000},
        {"resource": "sandbox.isolate.cpu_ms", "unit_price": "0.000002"},
        {"resource": "sandbox.container.memory_gb_s", "unit_price": "0.0000166667"},
    ],
}


class Clock:
    """A settable clock (seconds since the epoch)."""

    def __init__(self, t: datetime) -> None:
        self.t = t.timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc))


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "metering.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    """Each ledger test runs on both backends (PostgreSQL: a real throwaway server)."""
    return str(request.param)


@pytest.fixture
def ledger_url(backend, db_path, request) -> str:
    """The ledger's URL on this test's backend (a fresh database for PostgreSQL)."""
    if backend == "sqlite":
        return f"sqlite:///{db_path}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def ledger(ledger_url, clock):
    store = open_store(ledger_url, clock=clock)
    store.add_price_version(dict(PRICES))  # effective from the clock's "now"
    yield store
    store.close()


@pytest.fixture
def meter(ledger, clock):
    m = Meter(ledger, clock=clock)
    yield m
    if m._pool is not None:
        m._pool.shutdown(wait=True)


class _Busy:
    """Another process holding the ledger's write lock (SQLite: the file's; PostgreSQL: tenant acme's)."""

    def __init__(self, backend: str, url: str, db_path) -> None:
        self._sqlite = backend == "sqlite"
        if backend == "sqlite":
            import sqlite3

            self._conn = sqlite3.connect(db_path, isolation_level=None)
            self._conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            from myriad.metering._postgres import _LOCK_TENANTS

            self._conn = psycopg.connect(url)  # not autocommit: the lock lives until commit
            self._conn.execute(_LOCK_TENANTS, (["acme"],))

    def release(self) -> None:
        if self._sqlite:
            self._conn.execute("COMMIT")
        else:
            self._conn.commit()
        self._conn.close()


@pytest.fixture
def hold_write_lock(backend, ledger_url, db_path):
    """``hold_write_lock()`` makes another connection hold the lock a reservation for tenant acme needs."""
    return lambda: _Busy(backend, ledger_url, db_path)
