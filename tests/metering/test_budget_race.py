"""100 concurrent requests against a budget that covers 5 must never spend more than the budget.

Exercised three ways against one ledger, on both backends (one SQLite file; one
PostgreSQL database on a real server): asyncio tasks (each with its own connection),
OS threads, and separate processes (4 x 25 callers).
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from myriad.errors import BudgetExceeded
from myriad.metering import Budget, Meter, Scope, Subject, Usage
from myriad.metering._store import open_store

from .conftest import PRICES

EST = Usage.tokens_of("gpt", input=1000, output=1000)  # 0.00075 USD at the test prices
EST_NANOS = 750_000
HARD_NANOS = 5 * EST_NANOS
WORKER = Path(__file__).with_name("_worker.py")


def setup_db(path) -> None:
    store = open_store(path)
    store.add_price_version(dict(PRICES))
    store.put_budget(Budget(Scope("acme"), "month", hard="0.00375", id="tenant-month"))
    store.close()


def final_state(path):
    store = open_store(path)
    try:
        (st,) = store.budget_status("acme")
        return st, store.count_events("acme"), store.open_reservations("acme")
    finally:
        store.close()


@pytest.mark.parametrize("actual_fraction", [1.0, 0.4])
async def test_asyncio_tasks_with_separate_connections(ledger_url, actual_fraction):
    setup_db(ledger_url)
    meters = [Meter(open_store(ledger_url)) for _ in range(100)]
    actual = Usage.tokens_of("gpt", input=1000, output=int(1000 * actual_fraction))
    admitted, refused = [], []

    async def one(i, m):
        try:
            async with m.reserve(Subject("acme", f"u{i % 7}"), EST) as r:
                admitted.append(i)
                await asyncio.sleep(0.01)  # the "upstream call"
                r.commit(actual)
        except BudgetExceeded as e:
            refused.append(e)

    await asyncio.gather(*(one(i, m) for i, m in enumerate(meters)))
    for m in meters:
        m.close()
    st, n_events, open_res = final_state(ledger_url)
    assert len(admitted) + len(refused) == 100
    assert st.spent_nanos <= HARD_NANOS and st.reserved_nanos == 0 and open_res == 0
    assert n_events == len(admitted)
    assert st.spent_nanos == len(admitted) * (150_000 + int(1000 * actual_fraction) * 600)
    if actual_fraction == 1.0:
        assert len(admitted) == 5 and st.spent_nanos == HARD_NANOS
    else:
        assert len(admitted) >= 5  # released remainders let later requests in, never past the budget
    assert all(e.details["budget"]["id"] == "tenant-month" for e in refused)


def test_threads_each_with_their_own_connection(ledger_url):
    setup_db(ledger_url)
    barrier = threading.Barrier(100)
    admitted, refused, errors = [], [], []

    def one(i):
        try:
            m = Meter(open_store(ledger_url))
            barrier.wait()
            try:
                with m.reserve(Subject("acme", f"u{i}"), EST) as r:
                    admitted.append(i)
                    time.sleep(0.005)
                    r.commit(EST)
            except BudgetExceeded:
                refused.append(i)
            m.close()
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    st, n_events, _ = final_state(ledger_url)
    assert (len(admitted), len(refused)) == (5, 95)
    assert st.spent_nanos == HARD_NANOS and n_events == 5


@pytest.mark.parametrize("actual_fraction", [1.0, 0.4])
def test_processes_sharing_the_ledger(ledger_url, actual_fraction):
    setup_db(ledger_url)
    start_at = time.time() + 1.5  # let all four interpreters start before anyone reserves
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["src", "."] + sys.path))
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), "race", str(ledger_url), "25", str(start_at), str(actual_fraction)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(4)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    admitted = sum(r["admitted"] for r in results)
    assert admitted + sum(r["refused"] for r in results) == 100
    st, n_events, open_res = final_state(ledger_url)
    assert st.spent_nanos <= HARD_NANOS and st.reserved_nanos == 0 and open_res == 0 and n_events == admitted
    if actual_fraction == 1.0:
        assert admitted == 5 and st.spent_nanos == HARD_NANOS


@pytest.mark.parametrize("kind,limit,hold_s", [("concurrent", 3, 2.0), ("requests_per_minute", 5, 0.0)])
def test_rate_and_concurrency_limits_hold_across_processes(ledger_url, kind, limit, hold_s):
    """100 callers in 4 processes against a concurrency limit of 3 (each holds its slot a
    two seconds) or 5 requests a minute: exactly that many are admitted, the rest refused."""
    from myriad.metering import Limit

    store = open_store(ledger_url)
    store.add_price_version(dict(PRICES))
    store.put_limit(Limit(Scope("acme"), kind, limit, "sandbox", id="lim"))
    store.close()
    start_at = time.time() + 3.0  # every process has opened its 25 connections by then
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["src", "."] + sys.path))
    procs = [subprocess.Popen([sys.executable, str(WORKER), "limits", str(ledger_url), "25", str(start_at), str(hold_s)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["admitted"] for r in results) == limit
    assert sum(r["refused"] for r in results) == 100 - limit
    store = open_store(ledger_url)
    try:
        assert store.open_reservations("acme") == 0  # every slot given back
    finally:
        store.close()
