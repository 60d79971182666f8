"""Metering: ledger write throughput, admission latency, aggregation speed at scale, and the budget race.

Measures, on one temporary SQLite ledger:

1. *append*: events/s written in batches and one per transaction.
2. *admission*: reserve + settle latency per call, against the baseline of a bare
   ``append`` of the same event (what metering without budgets would cost).
3. *aggregation*: a month's totals by user and model over N events from the
   rollups, against the baseline of scanning the raw events (same answer, checked).
4. *race*: C concurrent callers (threads, own connections) against a budget that
   covers 5 calls, with atomic reservations and with the naive baseline
   (check spent, call, then add spend) that LiteLLM-style budget checks use.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from myriad.bench.report import print_table, progress, summary_ms

DESCRIPTION = __doc__ or ""

PRICES = {"currency": "USD", "prices": [
    {"resource": "model.input_tokens", "unit_price": "0.15", "per": 1_000_000},
    {"resource": "model.output_tokens", "unit_price": "0.60", "per": 1_000_000},
]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=200_000, help="events in the aggregation ledger (default 200k)")
    parser.add_argument("--batch", type=int, default=500, help="events per transaction when filling")
    parser.add_argument("--calls", type=int, default=2000, help="reserve+settle calls to time")
    parser.add_argument("--concurrency", type=int, default=100, help="racing callers against a budget of 5 calls")
    parser.add_argument("--dir", help="where to put the ledgers (default: a temp dir)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from myriad.metering import Subject, Usage, UsageEvent
    from myriad.metering._sqlite import SQLiteLedger
    from myriad.metering._store import ReservationRequest, UsageQuery

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        result: dict[str, Any] = {"bench": "metering", "events": args.events}

        # 1+3: fill a ledger spread over 30 days, 1000 users, 3 models
        store = SQLiteLedger(base / "agg.db")
        start = store.add_price_version(dict(PRICES)).effective_at
        rng = random.Random(1)
        t_fill = time.perf_counter()
        models = ["small", "mid", "big"]
        done = 0
        pending: list[Any] = []
        # sessions: a user's agent makes ~20 calls in ~10 minutes with one model
        while done < args.events:
            user = rng.randrange(1000)
            subject = Subject("acme", f"u{user}", f"assistant/u{user}-{rng.randrange(3)}")
            model = rng.choice(models)
            t0 = start + timedelta(seconds=rng.randrange(30 * 86400))
            for k in range(min(20, args.events - done)):
                pending.append(UsageEvent(subject, Usage.tokens_of(model, input=rng.randrange(2000), output=rng.randrange(500)),
                                          id=f"e{done}", time=t0 + timedelta(seconds=30 * k)))
                done += 1
            if len(pending) >= args.batch or done == args.events:
                store.append(pending)
                pending = []
            if done % (args.batch * 40) < 20 or done == args.events:
                progress("filling ledger", done, args.events)
        fill_s = time.perf_counter() - t_fill
        result["append_batched_events_per_s"] = round(args.events / fill_s)

        single = SQLiteLedger(base / "single.db")
        single.add_price_version(dict(PRICES))
        n1 = min(args.calls, 5000)
        lat_append = []
        for i in range(n1):
            ev = UsageEvent(Subject("acme", "ann"), Usage.tokens_of("small", input=100, output=10), id=f"s{i}")
            t = time.perf_counter()
            single.append([ev])
            lat_append.append(time.perf_counter() - t)

        # 2: reserve + settle
        lat_admit = []
        est = Usage.tokens_of("small", input=1000, output=500)
        for i in range(n1):
            t = time.perf_counter()
            g = single.reserve(ReservationRequest(Subject("acme", "ann"), est, "model"))
            single.settle(g.id, [UsageEvent(Subject("acme", "ann"), Usage.tokens_of("small", input=100, output=10), id=g.id)])
            lat_admit.append(time.perf_counter() - t)
        # 2b: the same through the async Meter facade (what the gateway pays per call, one at a time)
        import asyncio

        from myriad.metering import Meter

        meter = Meter(single)
        lat_meter: list[float] = []

        async def admit_loop() -> None:
            for _ in range(n1):
                t = time.perf_counter()
                async with meter.reserve(Subject("acme", "ann"), est) as res:
                    res.commit(Usage.tokens_of("small", input=100, output=10))
                lat_meter.append(time.perf_counter() - t)

        asyncio.run(admit_loop())
        meter.close()

        # 3: aggregation, rollups vs raw scan, same questions
        lo_us, hi_us = int(start.timestamp() * 1e6), int((start + timedelta(days=31)).timestamp() * 1e6)
        end = start + timedelta(days=31)
        questions = {
            "by model (tenant rollup)": (UsageQuery("acme", start=start, end=end, group_by=("model",)), "e.model"),
            "by user x model (subject rollup)": (UsageQuery("acme", start=start, end=end, group_by=("user", "model")),
                                                 "e.user, e.model"),
        }
        agg: dict[str, tuple[float, float, bool]] = {}
        for label, (q, cols) in questions.items():
            fast_t, raw_t = [], []
            for _ in range(3):
                t = time.perf_counter()
                fast = store.totals(q)
                fast_t.append(time.perf_counter() - t)
                t = time.perf_counter()
                with store._read() as db:  # the baseline: the same grouping straight from the raw events
                    raw_rows = db.execute(
                        f"SELECT {cols}, SUM(json_extract(j.value, '$[0]')), SUM(json_extract(j.value, '$[1]'))"
                        " FROM events e, json_each(e.lines) j WHERE e.tenant = ? AND e.time_us >= ? AND e.time_us < ?"
                        f" GROUP BY {cols}", ("acme", lo_us, hi_us)).fetchall()
                raw_t.append(time.perf_counter() - t)
            got = {tuple(r.keys.values()): (r.quantity_micro, r.cost_nanos) for r in fast}
            want = {tuple(r[:-2]): (r[-2], r[-1]) for r in raw_rows}
            agg[label] = (sorted(fast_t)[1], sorted(raw_t)[1], got == want)
        # a ragged window (edges from raw events, middle from rollups)
        q2 = UsageQuery("acme", start=start + timedelta(minutes=17), end=start + timedelta(days=29, minutes=41),
                        group_by=("model",))
        t = time.perf_counter()
        store.totals(q2)
        ragged_s = time.perf_counter() - t
        db_mb = (base / "agg.db").stat().st_size / 1e6
        wal = base / "agg.db-wal"
        wal_mb = wal.stat().st_size / 1e6 if wal.exists() else 0.0
        store.close()

        # 4: the race
        race = {mode: _race(base / f"race-{mode}.db", args.concurrency, mode) for mode in ("reserve", "naive")}

    a, r, mt = summary_ms(lat_append), summary_ms(lat_admit), summary_ms(lat_meter)
    print_table("ledger writes", ["what", "p50 ms", "p99 ms", "rate"], [
        ["append, batched", "-", "-", f"{result['append_batched_events_per_s']:,} events/s"],
        ["append, 1 event/txn (baseline)", a["p50_ms"], a["p99_ms"], f"{round(1000 / a['mean_ms']):,}/s"],
        ["reserve + settle", r["p50_ms"], r["p99_ms"], f"{round(1000 / r['mean_ms']):,}/s"],
        ["async Meter reserve/commit", mt["p50_ms"], mt["p99_ms"], f"{round(1000 / mt['mean_ms']):,}/s"],
    ])
    rows = []
    for label, (fast_s, raw_s, same) in agg.items():
        rows.append([label, round(fast_s * 1000, 2), round(raw_s * 1000, 1), round(raw_s / max(fast_s, 1e-9), 1), "yes" if same else "NO"])
    rows.append(["ragged window by model", round(ragged_s * 1000, 2), "-", "-", "-"])
    print_table(f"aggregation over {args.events:,} events (ledger {db_mb:.0f} MB + WAL {wal_mb:.0f} MB), a month",
                ["question", "rollups ms", "raw scan ms (baseline)", "speedup", "same answer"], rows)
    print_table(f"budget race: {args.concurrency} concurrent callers, budget covers 5 calls", ["method", "admitted", "spent / budget"], [
        [m, race[m]["admitted"], f"{race[m]['spent_over_budget']:.2f}x"] for m in race
    ])
    result.update({
        "append_single_p50_ms": a["p50_ms"], "append_single_p99_ms": a["p99_ms"],
        "reserve_settle_p50_ms": r["p50_ms"], "reserve_settle_p99_ms": r["p99_ms"],
        "meter_async_p50_ms": mt["p50_ms"], "meter_async_p99_ms": mt["p99_ms"],
        "aggregate": {label: {"rollup_ms": round(f_ * 1000, 3), "raw_ms": round(r_ * 1000, 3), "same_answer": ok}
                      for label, (f_, r_, ok) in agg.items()},
        "aggregate_ragged_ms": round(ragged_s * 1000, 3), "ledger_mb": round(db_mb, 1), "wal_mb": round(wal_mb, 1),
        "bytes_per_event": round(db_mb * 1e6 / max(args.events, 1)),
        "race": race,
    })
    return result  # the CLI prints it as the one JSON line


def _race(path: Path, callers: int, mode: str) -> dict[str, Any]:
    """``callers`` threads each try one call costing C against a budget of 5C."""
    from myriad.errors import BudgetExceeded
    from myriad.metering import Budget, Scope, Subject, Usage, UsageEvent
    from myriad.metering._sqlite import SQLiteLedger
    from myriad.metering._store import ReservationRequest

    setup = SQLiteLedger(path)
    setup.add_price_version(dict(PRICES))
    est = Usage.tokens_of("small", input=1000, output=1000)
    cost = setup.price_book().estimate_nanos(est, int(time.time() * 1e6) + 10**6)
    setup.put_budget(Budget(Scope("acme"), "total", hard=str(5 * cost / 1e9), id="b"))
    setup.close()
    barrier = threading.Barrier(callers)
    admitted = []

    def one(i: int) -> None:
        store = SQLiteLedger(path)
        subject = Subject("acme", f"u{i}")
        barrier.wait()
        try:
            if mode == "reserve":
                g = store.reserve(ReservationRequest(subject, est, "model"))
                admitted.append(i)
                time.sleep(0.02)  # the upstream call
                store.settle(g.id, [UsageEvent(subject, est, id=g.id)])
            else:  # naive: look at spend, call, then record
                (st,) = store.budget_status("acme")
                if st.spent_nanos + cost > st.budget.hard_nanos:  # type: ignore[operator]
                    return
                admitted.append(i)
                time.sleep(0.02)
                store.append([UsageEvent(subject, est, id=f"n{i}")])
        except BudgetExceeded:
            pass
        finally:
            store.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = SQLiteLedger(path)
    (st,) = check.budget_status("acme")
    check.close()
    return {"admitted": len(admitted), "spent_over_budget": round(st.spent_nanos / (5 * cost), 2)}


__all__ = ["DESCRIPTION", "add_arguments", "run"]
