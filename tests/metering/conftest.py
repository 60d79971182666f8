"""Fixtures for the metering room: a ledger on a temp file, a clock the test moves."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from myriad.metering import Meter
from myriad.metering._sqlite import SQLiteLedger

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


@pytest.fixture
def ledger(db_path, clock):
    store = SQLiteLedger(db_path, clock=clock)
    store.add_price_version(dict(PRICES))  # effective from the clock's "now"
    yield store
    store.close()


@pytest.fixture
def meter(ledger, clock):
    m = Meter(ledger, clock=clock)
    yield m
    if m._pool is not None:
        m._pool.shutdown(wait=True)
