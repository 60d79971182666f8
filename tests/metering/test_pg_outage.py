"""The PostgreSQL ledger and key store when the database goes away and comes back: calls
fail fast with ``DatabaseUnavailable`` (503, one line naming the database), never hang,
and work again by themselves once the server is back (same objects, no restart)."""

from __future__ import annotations

import time

import pytest

from myriad.errors import DatabaseUnavailable
from myriad.identity import KeyStore
from myriad.metering import Budget, Scope, Subject, Usage, UsageEvent, open_store
from myriad.metering._store import ReservationRequest

from .conftest import PRICES


@pytest.mark.integration
def test_ledger_and_keys_fail_fast_while_postgresql_is_down_and_recover(tmp_path) -> None:
    from tests.pg import PostgresServer

    server = PostgresServer().start()  # our own: this test stops it
    try:
        url = server.create_database()
        ledger = open_store(url, connect_timeout=2.0)
        ledger.add_price_version(dict(PRICES))
        ledger.put_budget(Budget(Scope("acme"), "month", hard="10", id="m"))
        keys = KeyStore(tmp_path, url, connect_timeout=2.0)
        keys.create_tenant("acme")
        _, key = keys.create_key("acme")
        s = Subject("acme", "ann")
        est = Usage.tokens_of("gpt", input=100, output=100)
        g = ledger.reserve(ReservationRequest(s, est, "model"))
        ledger.settle(g.id, [UsageEvent(s, est, id="before")])

        server.stop()
        for call in (lambda: ledger.reserve(ReservationRequest(s, est, "model")), lambda: keys.verify(key),
                     lambda: ledger.append([UsageEvent(s, est, id="during")])):
            t = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as e:
                call()
            assert time.monotonic() - t < 10  # fails within the connect timeout, no hang
            assert e.value.status == 503 and "database" in e.value.message and "\n" not in e.value.message

        server.start()
        deadline = time.monotonic() + 30
        while True:  # the pools reconnect by themselves
            try:
                g = ledger.reserve(ReservationRequest(s, est, "model"))
                break
            except DatabaseUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        ledger.settle(g.id, [UsageEvent(s, est, id="after")])
        while True:  # the key store's own pool reconnects on its own schedule
            try:
                assert keys.verify(key).tenant == "acme"
                break
            except DatabaseUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert [e.cloudevent["id"] for e in ledger.events("acme")] == ["before", "after"]
        [st] = ledger.budget_status("acme")
        assert st.reserved_nanos == 0 and ledger.open_reservations("acme") == 0
        ledger.close()
        keys.close()
    finally:
        server.destroy()
