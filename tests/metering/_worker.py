"""Subprocess worker for the race and kill -9 tests (run as a script, not collected)."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from myriad.errors import BudgetExceeded, RateLimited
from myriad.metering import Meter, Subject, Usage, UsageEvent
from myriad.metering._store import ReservationRequest, open_store

EST = Usage.tokens_of("gpt", input=1000, output=1000)


async def race(db: str, n: int, start_at: float, actual_fraction: float) -> dict:
    meters = [Meter(open_store(db)) for _ in range(n)]
    actual = Usage.tokens_of("gpt", input=1000, output=int(1000 * actual_fraction))
    admitted = refused = 0

    async def one(m: Meter, i: int) -> None:
        nonlocal admitted, refused
        try:
            async with m.reserve(Subject("acme", f"u{i % 3}"), EST) as r:
                admitted += 1
                await asyncio.sleep(0.005)
                r.commit(actual)
        except BudgetExceeded:
            refused += 1

    while time.time() < start_at:
        await asyncio.sleep(0.001)
    await asyncio.gather(*(one(m, i) for i, m in enumerate(meters)))
    for m in meters:
        m.close()
    return {"admitted": admitted, "refused": refused}


async def limits(db: str, n: int, start_at: float, hold_s: float) -> dict:
    """n callers, each with its own connection, ask for a 'sandbox' slot at once and hold it hold_s."""
    meters = [Meter(open_store(db)) for _ in range(n)]
    admitted = refused = 0

    async def one(m: Meter, i: int) -> None:
        nonlocal admitted, refused
        try:
            async with m.reserve(Subject("acme", f"u{i % 3}"), None, operation="sandbox"):
                admitted += 1
                await asyncio.sleep(hold_s)
        except RateLimited:  # ConcurrencyLimited is one too
            refused += 1

    while time.time() < start_at:
        await asyncio.sleep(0.001)
    await asyncio.gather(*(one(m, i) for i, m in enumerate(meters)))
    for m in meters:
        m.close()
    return {"admitted": admitted, "refused": refused}


def write(db: str, first: int, last: int) -> None:
    """Write events first..last-1; print each id only after its transaction committed."""
    store = open_store(db)
    subject = Subject("acme", "ann", "agents/a/1")
    for i in range(first, last):
        ev = UsageEvent(subject, Usage.tokens_of("gpt", input=100 + i % 7, output=10 + i % 5), id=f"ev-{i}")
        if i % 2:
            g = store.reserve(ReservationRequest(subject, EST, "model", id=f"res-{i}-{time.time_ns()}"))
            store.settle(g.id, [ev])
        else:
            store.append([ev])
        sys.stdout.write(ev.id + "\n")
        sys.stdout.flush()


async def owned(db: str, flush_interval: float) -> None:
    """A process that owns its ledger (admission in memory, group commits): settle events
    forever; print "<id> <time>" after each settle returned (in memory, not yet durable)."""
    meter = Meter.open(f"sqlite:///{db}", shared=False, flush_interval=flush_interval)
    subject = Subject("acme", "ann", "agents/a/1")
    i = 0
    while True:
        async with meter.reserve(subject, EST, operation="model") as r:
            r.commit(Usage.tokens_of("gpt", input=100 + i % 7, output=10 + i % 5), id=f"ev-{i}")
        sys.stdout.write(f"ev-{i} {time.time():.6f}\n")
        sys.stdout.flush()
        i += 1
        if i % 20 == 0:
            await asyncio.sleep(0.001)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "race":
        print(json.dumps(asyncio.run(race(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])))))
    elif mode == "limits":
        print(json.dumps(asyncio.run(limits(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])))))
    elif mode == "owned":
        asyncio.run(owned(sys.argv[2], float(sys.argv[3])))
    elif mode == "write":
        write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
