"""Budgets: reserve at admission, commit actual, release the rest; soft notices; periods."""

from datetime import datetime, timezone

import pytest

from myriad.errors import BudgetExceeded, Conflict
from myriad.metering import Budget, Scope, Subject, Usage
from myriad.metering._store import ReservationRequest

ANN = Subject("acme", "ann", "agents/helper/1")
# 1000 input + 1000 output tokens on "gpt" = 0.00015 + 0.0006 = 0.00075
EST = Usage.tokens_of("gpt", input=1000, output=1000)
EST_NANOS = 750_000


def test_reserve_commit_release_moves_money_between_reserved_and_spent(ledger):
    b = ledger.put_budget(Budget(Scope("acme"), "day", hard="0.01"))
    g = ledger.reserve(ReservationRequest(ANN, EST, "model"))
    assert g.amount_nanos == EST_NANOS
    (st,) = ledger.budget_status("acme")
    assert (st.spent_nanos, st.reserved_nanos) == (0, EST_NANOS)
    from myriad.metering import UsageEvent

    r = ledger.settle(g.id, [UsageEvent(ANN, Usage.tokens_of("gpt", input=1000, output=10), id=g.id)])
    assert r.cost_nanos == 150_000 + 6_000 and r.overrun_nanos == 0
    (st,) = ledger.budget_status("acme")
    assert (st.spent_nanos, st.reserved_nanos) == (156_000, 0)
    # settling again (a retry) changes nothing
    again = ledger.settle(g.id, [UsageEvent(ANN, Usage.tokens_of("gpt", input=1000, output=10), id=g.id)])
    assert (again.appended, again.duplicates) == (0, 1)
    g2 = ledger.reserve(ReservationRequest(ANN, EST, "model"))
    ledger.release(g2.id)
    ledger.release(g2.id)
    (st,) = ledger.budget_status("acme")
    assert (st.spent_nanos, st.reserved_nanos) == (156_000, 0)
    assert st.budget.id == b.id


def test_refusal_names_the_budget_its_numbers_and_reset(ledger):
    ledger.put_budget(Budget(Scope("acme", user="ann"), "month", hard="0.001", id="ann-month"))
    ledger.reserve(ReservationRequest(ANN, EST, "model"))
    with pytest.raises(BudgetExceeded) as e:
        ledger.reserve(ReservationRequest(ANN, EST, "model"))
    err = e.value
    assert err.status == 402 and err.code == "budget_exceeded"
    info = err.to_json()["error"]["budget"]
    assert info["id"] == "ann-month" and info["period"] == "month"
    assert info["hard"] == "0.001000000" and info["reserved"] == "0.000750000" and info["requested"] == "0.000750000"
    assert info["resets_at"] == "2026-04-01T00:00:00Z"
    assert "ann-month" in err.message
    # another user of the same tenant is not covered by ann's budget
    ledger.reserve(ReservationRequest(Subject("acme", "bob"), EST, "model"))


def test_every_covering_budget_must_allow_it(ledger):
    ledger.put_budget(Budget(Scope("acme"), "total", hard="1.00"))
    ledger.put_budget(Budget(Scope("acme", agent="agents/helper/1"), "day", hard="0.0010", id="agent-day"))
    ledger.reserve(ReservationRequest(ANN, EST, "model"))
    with pytest.raises(BudgetExceeded, match="agent-day"):
        ledger.reserve(ReservationRequest(ANN, EST, "model"))
    ledger.reserve(ReservationRequest(Subject("acme", "ann", "agents/other/2"), EST, "model"))


def test_day_budget_resets_at_midnight_utc(ledger, clock):
    ledger.put_budget(Budget(Scope("acme"), "day", hard="0.001"))
    from myriad.metering import UsageEvent

    g = ledger.reserve(ReservationRequest(ANN, EST, "model"))
    ledger.settle(g.id, [UsageEvent(ANN, EST, id=g.id, time=datetime.fromtimestamp(clock(), timezone.utc))])
    with pytest.raises(BudgetExceeded) as e:
        ledger.reserve(ReservationRequest(ANN, EST, "model"))
    assert e.value.details["budget"]["resets_at"] == "2026-03-16T00:00:00Z"
    clock.advance(12 * 3600)  # 2026-03-16 00:00
    ledger.reserve(ReservationRequest(ANN, EST, "model"))


def test_abandoned_reservations_expire(ledger, clock):
    ledger.put_budget(Budget(Scope("acme"), "day", hard="0.001"))
    ledger.reserve(ReservationRequest(ANN, EST, "model", ttl_s=30))  # the holder "dies"
    with pytest.raises(BudgetExceeded):
        ledger.reserve(ReservationRequest(ANN, EST, "model"))
    clock.advance(31)
    ledger.reserve(ReservationRequest(ANN, EST, "model"))
    assert ledger.open_reservations("acme") == 1


def test_soft_limit_leaves_a_notice_once_and_does_not_refuse(ledger):
    ledger.put_budget(Budget(Scope("acme"), "month", soft="0.001", id="soft"))
    from myriad.metering import UsageEvent

    for i in range(4):
        ledger.append([UsageEvent(ANN, EST, id=f"e{i}", time=datetime(2026, 3, 15, 12, tzinfo=timezone.utc))])
    ledger.reserve(ReservationRequest(ANN, EST, "model"))  # soft never refuses
    notices = ledger.notices("acme")
    assert [n.type for n in notices] == ["dev.myriad.budget.soft_limit_crossed"]
    assert notices[0].body["id"] == "soft" and notices[0].body["spent"] == "0.001500000"
    assert ledger.notices("other") == []


def test_unreserved_spend_past_a_hard_limit_is_flagged(ledger):
    from myriad.metering import UsageEvent

    ledger.put_budget(Budget(Scope("acme"), "month", hard="0.001"))
    ledger.append([UsageEvent(ANN, EST, id=f"e{i}", time=datetime(2026, 3, 15, 12, tzinfo=timezone.utc)) for i in range(2)])
    assert [n.type for n in ledger.notices("acme")] == ["dev.myriad.budget.hard_limit_overrun"]
    with pytest.raises(BudgetExceeded):
        ledger.reserve(ReservationRequest(ANN, None, "model"))  # even a zero-cost admission is refused now


def test_reservation_ids_are_single_use(ledger):
    ledger.reserve(ReservationRequest(ANN, EST, "model", id="r1"))
    with pytest.raises(Conflict):
        ledger.reserve(ReservationRequest(ANN, EST, "model", id="r1"))


async def test_meter_context_commits_or_releases(meter, ledger):
    ledger.put_budget(Budget(Scope("acme"), "month", hard="1"))
    async with meter.reserve(ANN, EST) as r:
        r.commit(Usage.tokens_of("gpt", input=1000, output=0))
    assert r.result.cost_nanos == 150_000
    with pytest.raises(RuntimeError):
        async with meter.reserve(ANN, EST):
            raise RuntimeError("upstream failed before producing anything")
    (st,) = await meter.spend(ANN)
    assert (st.spent_nanos, st.reserved_nanos) == (150_000, 0)
    # partial usage before a failure is still recorded
    with pytest.raises(RuntimeError):
        async with meter.reserve(ANN, EST) as r:
            r.commit(Usage.tokens_of("gpt", input=1000, output=500))
            raise RuntimeError("stream cut")
    (st,) = await meter.spend(ANN)
    assert st.spent_nanos == 150_000 + 450_000


def test_meter_context_works_from_threads(meter, ledger):
    with meter.reserve(ANN, EST, operation="sandbox") as r:
        r.commit(Usage.sandbox_run("isolate", cpu_ms=1500, wall_ms=2000))
    assert r.result.cost_nanos == 3_000_000  # 1500 ms * 0.000002
    (e,) = ledger.events("acme")
    assert e.cloudevent["type"] == "dev.myriad.usage.sandbox" and e.cloudevent["id"] == r.id


async def test_a_busy_ledger_never_blocks_the_event_loop(meter, ledger, hold_write_lock):
    import asyncio

    other = hold_write_lock()  # another process holds the write lock
    try:
        task = asyncio.ensure_future(meter.reserve(ANN, EST).__aenter__())
        ticks = 0
        for _ in range(20):  # the loop keeps running while the reservation waits in the worker thread
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not task.done()
    finally:
        other.release()
    r = await asyncio.wait_for(task, 10)
    assert r.grant.amount_nanos == EST_NANOS
    await r.__aexit__(None, None, None)
    assert ledger.open_reservations() == 0


async def test_a_cancelled_admission_leaves_no_hold(meter, ledger, hold_write_lock):
    import asyncio

    other = hold_write_lock()  # force the worker-thread path
    task = asyncio.ensure_future(meter.reserve(ANN, EST).__aenter__())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    other.release()
    await asyncio.sleep(0)
    meter._pool.submit(lambda: None).result()  # the worker drained: reserve, then release
    assert ledger.open_reservations() == 0
    assert task.cancelled()


async def test_background_settle_batches_and_keeps_budgets_exact(ledger, clock):
    import asyncio

    from myriad.metering import Meter

    ledger.put_budget(Budget(Scope("acme"), "day", hard=str(EST_NANOS * 5 / 1e9)))
    meter = Meter(ledger, clock=clock, settle_in_background=True)
    admitted, refused = [], []

    async def one(i):
        try:
            async with meter.reserve(ANN, EST) as r:
                admitted.append(i)
                await asyncio.sleep(0.01)
                r.commit(EST)
        except BudgetExceeded:
            refused.append(i)

    await asyncio.gather(*(one(i) for i in range(50)))
    await meter.drain()
    (st,) = ledger.budget_status("acme")
    assert len(admitted) == 5 and st.spent_nanos == 5 * EST_NANOS and st.reserved_nanos == 0
    assert ledger.count_events() == 5 and ledger.open_reservations() == 0
    await meter.aclose()
