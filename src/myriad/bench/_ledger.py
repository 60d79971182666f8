"""Budget reserve+commit latency on one ledger (a row of ``myriad bench storage``).

What a metered model call costs the ledger when the ledger is shared (every process
admits through the database: PostgreSQL, or SQLite with ``shared=True``): a
``Meter.reserve`` against a tenant budget (the atomic check-and-hold), then the
settle of the actual usage (event, rollups, spend, hold released), through the
``Meter`` as the gateway uses it.
"""

from __future__ import annotations

import time
from typing import Any


async def reserve_commit(url: str, n: int, *, synchronous: str = "NORMAL") -> dict[str, Any]:
    """p50/p99 ms and this process's CPU ms of ``n`` reserve+commit pairs on the ledger at ``url``."""
    from myriad.bench.report import summary_ms
    from myriad.metering import Budget, Meter, Scope, Subject, Usage

    meter = Meter.open(url, synchronous=synchronous)
    try:
        meter.add_prices({"currency": "USD", "prices": [
            {"resource": "model.input_tokens", "unit_price": "0.15", "per": 1_000_000},
            {"resource": "model.output_tokens", "unit_price": "0.60", "per": 1_000_000}]})
        meter.set_budget(Budget(Scope("bench"), "month", hard="1000000", id="bench-month"))
        subject = Subject("bench", "u", "agents/bench/1")
        estimate = Usage.tokens_of("gpt", input=1000, output=500)
        actual = Usage.tokens_of("gpt", input=1000, output=120)
        samples: list[float] = []
        for i in range(n // 10):  # warm up (prepared plans, pool)
            async with meter.reserve(subject, estimate) as r:
                r.commit(actual)
        cpu0 = time.process_time()
        for i in range(n):
            t = time.perf_counter()
            async with meter.reserve(subject, estimate) as r:
                r.commit(actual)
            samples.append(time.perf_counter() - t)
        cpu = (time.process_time() - cpu0) / n * 1000
        s = summary_ms(samples)
        return {"p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "cpu_ms": round(cpu, 4)}
    finally:
        await meter.aclose()


__all__ = ["reserve_commit"]
