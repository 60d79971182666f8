"""The SQLite ledger: idempotency, pricing by event time, rollups that agree with raw events."""

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from myriad.errors import InvalidRequest
from myriad.metering import Subject, Usage, UsageEvent, UsageQuery
from myriad.metering._events import from_us, to_us

T0 = datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc)


def ev(id, tenant="acme", user="ann", agent=None, t=T0, model="gpt", input=1000, output=100):
    return UsageEvent(Subject(tenant, user, agent), Usage.tokens_of(model, input=input, output=output), id=id, time=t)


def test_replayed_event_counts_once(ledger):
    r1 = ledger.append([ev("a"), ev("b")])
    r2 = ledger.append([ev("a"), ev("b"), ev("c")])
    assert (r1.appended, r1.duplicates) == (2, 0)
    assert (r2.appended, r2.duplicates) == (1, 2)
    assert ledger.count_events("acme") == 3
    rows = ledger.totals(UsageQuery("acme", group_by=("resource",)))
    got = {r.keys["resource"]: r.quantity_micro // 10**6 for r in rows}
    assert got == {"model.requests": 3, "model.input_tokens": 3000, "model.output_tokens": 300}


def test_cost_uses_most_specific_price_and_is_exact(ledger):
    ledger.append([ev("small", model="gpt", input=1000, output=100), ev("big", model="big", input=1000, output=100)])
    rows = {r.keys["model"]: r.cost_nanos for r in ledger.totals(UsageQuery("acme", group_by=("model",)))}
    # gpt: 1000 * 0.15/1M + 100 * 0.60/1M = 0.00021 ; big: 1000 * 2.5/1M + 100 * 10/1M = 0.0035
    assert rows == {"gpt": 210_000, "big": 3_500_000}


def test_price_changes_apply_from_their_effective_time_never_back(ledger, clock):
    ledger.append([ev("before", t=T0 + timedelta(minutes=1))])
    with pytest.raises(InvalidRequest, match="retroactive"):
        ledger.add_price_version({"effective_at": "2026-03-15T11:00:00Z", "prices": []})
    v2 = ledger.add_price_version({
        "effective_at": "2026-03-15T14:00:00Z",
        "prices": [{"resource": "model.input_tokens", "unit_price": "0.30", "per": 1_000_000}],
    })
    assert v2.version == 2
    with pytest.raises(InvalidRequest, match="latest"):
        ledger.add_price_version({"effective_at": "2026-03-15T13:00:00Z", "prices": []})
    with pytest.raises(InvalidRequest, match="currency"):
        ledger.add_price_version({"effective_at": "2026-03-16T00:00:00Z", "currency": "EUR", "prices": []})
    # an event at 13:59 is priced by v1 even when recorded after v2 exists; one at 14:00 by v2
    ledger.append([ev("late", t=datetime(2026, 3, 15, 13, 59, tzinfo=timezone.utc), output=0),
                   ev("new", t=datetime(2026, 3, 15, 14, 0, tzinfo=timezone.utc), output=0)])
    by_version = {r.keys["price_version"]: r.cost_nanos for r in ledger.totals(UsageQuery("acme", group_by=("price_version",)))}
    assert by_version == {1: 210_000 + 150_000, 2: 300_000}
    # the first event's cost did not change
    first = ledger.events("acme", after_seq=0, limit=1)[0]
    assert first.cloudevent["id"] == "before" and first.cost_nanos == 210_000 and first.price_version == 1


def test_unpriced_resources_are_counted_at_zero_cost(ledger):
    ledger.append([UsageEvent(Subject("acme"), Usage({"agent.turns": 3}), id="t")])
    (row,) = ledger.totals(UsageQuery("acme", group_by=("resource",)))
    assert row.keys == {"resource": "agent.turns"} and row.quantity_micro == 3 * 10**6 and row.cost_nanos == 0


def test_tenants_do_not_see_each_other(ledger):
    ledger.append([ev("a1", tenant="a"), ev("b1", tenant="b"), ev("b2", tenant="b")])
    assert ledger.count_events("a") == 1
    assert [e.cloudevent["id"] for e in ledger.events("b")] == ["b1", "b2"]
    assert sum(r.lines for r in ledger.totals(UsageQuery("a", group_by=()))) == 3


def test_rollups_agree_with_raw_events_for_ragged_windows(ledger):
    rng = random.Random(7)
    users, agents, models = ["u1", "u2", "u3"], ["ag1", "ag2", None], ["gpt", "big"]
    base = to_us(T0)
    events = []
    for i in range(600):
        t = from_us(base + rng.randrange(0, 3 * 86_400_000_000))
        events.append(ev(f"e{i}", user=rng.choice(users), agent=rng.choice(agents), t=t, model=rng.choice(models),
                         input=rng.randrange(0, 5000), output=rng.randrange(0, 900)))
    ledger.append(events)

    def brute(lo, hi, user=None, group=("user", "model")):
        acc = {}
        for e in events:
            if not (lo <= e.time < hi) or (user and e.subject.user != user):
                continue
            k = tuple({"user": e.subject.user, "model": e.usage.model, "agent": e.subject.agent}[g] for g in group)
            acc[k] = acc.get(k, 0) + sum(e.usage.micro().values())
        return acc

    for _ in range(25):
        lo = from_us(base + rng.randrange(-3_600_000_000, 2 * 86_400_000_000))
        hi = lo + timedelta(microseconds=rng.randrange(1, 2 * 86_400_000_000))
        user = rng.choice([None, "u2"])
        rows = ledger.totals(UsageQuery("acme", user=user, start=lo, end=hi, group_by=("user", "model")))
        got = {tuple(r.keys.values()): r.quantity_micro for r in rows}
        assert got == {k: v for k, v in brute(lo, hi, user).items() if v}
        # tenant-level grouping is served by the smaller tenant rollup; same answer
        rows = ledger.totals(UsageQuery("acme", start=lo, end=hi, group_by=("model",)))
        got = {tuple(r.keys.values()): r.quantity_micro for r in rows}
        assert got == {k: v for k, v in brute(lo, hi, None, group=("model",)).items() if v}


def test_time_series_buckets(ledger):
    t = datetime(2026, 3, 31, 23, 30, tzinfo=timezone.utc)
    ledger.append([ev("x", t=t), ev("y", t=t + timedelta(hours=1)), ev("z", t=t + timedelta(hours=1, minutes=5))])
    q = UsageQuery("acme", resource="model.requests", group_by=(), bucket="month")
    assert [(r.keys["bucket"], r.quantity_micro // 10**6) for r in ledger.totals(q)] == [
        ("2026-03-01T00:00:00Z", 1), ("2026-04-01T00:00:00Z", 2)]
    q = UsageQuery("acme", resource="model.requests", group_by=(), bucket="hour",
                   start=t, end=t + timedelta(hours=1, minutes=2))
    assert [(r.keys["bucket"], r.quantity_micro // 10**6) for r in ledger.totals(q)] == [
        ("2026-03-31T23:00:00Z", 1), ("2026-04-01T00:00:00Z", 1)]


def test_bad_queries_are_refused(ledger):
    with pytest.raises(InvalidRequest, match="group by"):
        ledger.totals(UsageQuery("acme", group_by=("colour",)))
    with pytest.raises(InvalidRequest, match="bucket"):
        ledger.totals(UsageQuery("acme", bucket="week"))
    with pytest.raises(InvalidRequest, match="after start"):
        ledger.totals(UsageQuery("acme", start=T0, end=T0))


def test_decimal_quantities_sum_exactly(ledger):
    ledger.append([UsageEvent(Subject("acme"), Usage({"sandbox.container.memory_gb_s": Decimal("0.1")}), id=f"m{i}")
                   for i in range(10)])
    (row,) = ledger.totals(UsageQuery("acme", group_by=("resource",)))
    assert row.quantity_micro == 1_000_000
    # 1 GB-s at 0.0000166667 per GB-s, each 0.1 GB-s event rounded half-even to nanos (1667 nanos)
    assert row.cost_nanos == 10 * 1667


def test_a_ledger_from_the_previous_schema_is_migrated(tmp_path):
    import sqlite3

    from myriad.metering._sqlite import SQLiteLedger

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE budgets(id TEXT PRIMARY KEY, tenant TEXT NOT NULL, user TEXT, agent TEXT,"
               " period TEXT NOT NULL, hard_nanos INTEGER, soft_nanos INTEGER, created_us INTEGER NOT NULL)")
    db.execute("INSERT INTO budgets VALUES ('b1', 'acme', NULL, NULL, 'month', 5000000000, NULL, 0)")
    db.commit()
    db.close()
    store = SQLiteLedger(path)
    try:
        (b,) = store.budgets("acme")
        assert b.id == "b1" and b.managed_by == "operator" and b.hard_nanos == 5_000_000_000
    finally:
        store.close()
