"""Rate limits (GCRA, requests and tokens per minute) and concurrency limits."""

import pytest

from myriad.errors import ConcurrencyLimited, RateLimited
from myriad.metering import Limit, Scope, Subject, Usage, UsageEvent
from myriad.metering._store import ReservationRequest

ANN = Subject("acme", "ann")


def req(estimate=None, op="model", subject=ANN):
    return ReservationRequest(subject, estimate, op)


def test_requests_per_minute_allows_a_minute_in_a_burst_then_paces(ledger, clock):
    ledger.put_limit(Limit(Scope("acme"), "requests_per_minute", 6, operation="model", id="rpm"))
    for _ in range(6):
        ledger.reserve(req())
    with pytest.raises(RateLimited) as e:
        ledger.reserve(req())
    d = e.value.to_json()["error"]
    assert e.value.status == 429 and d["limit"]["id"] == "rpm" and d["limit"]["limit"] == 6
    assert d["retry_after"] == pytest.approx(10.0)  # one request's worth at 6/min
    assert d["resets_at"] == "2026-03-15T12:00:10Z"
    ledger.reserve(req(op="sandbox"))  # another operation is not covered
    clock.advance(10)
    ledger.reserve(req())
    with pytest.raises(RateLimited):
        ledger.reserve(req())


def test_tokens_per_minute_reserves_the_estimate_and_refunds_the_unused(ledger, clock):
    ledger.put_limit(Limit(Scope("acme", user="ann"), "tokens_per_minute", 10_000, id="tpm"))
    est = Usage.tokens_of("gpt", input=1000, output=4000)
    g1 = ledger.reserve(req(est))
    ledger.reserve(req(est))
    with pytest.raises(RateLimited, match="tpm"):
        ledger.reserve(req(est))
    # the first call used only 1,100 of its 5,000 tokens: 3,900 come back
    ledger.settle(g1.id, [UsageEvent(ANN, Usage.tokens_of("gpt", input=1000, output=100), id=g1.id)])
    ledger.reserve(req(Usage.tokens_of("gpt", input=1000, output=2900)))
    with pytest.raises(RateLimited):
        ledger.reserve(req(Usage.tokens_of("gpt", input=1, output=0)))
    with pytest.raises(RateLimited, match="allows 10000 per minute"):
        ledger.reserve(req(Usage.tokens_of("gpt", input=20_000, output=0), subject=Subject("acme", "ann", "x")))
    ledger.reserve(req(est, subject=Subject("acme", "bob")))  # bob is not limited


def test_concurrency_limit_counts_open_reservations(ledger, clock):
    ledger.put_limit(Limit(Scope("acme"), "concurrent", 2, operation="sandbox", id="live"))
    a = ledger.reserve(req(op="sandbox.live"))
    ledger.reserve(req(op="sandbox.live", subject=Subject("acme", "bob")))
    with pytest.raises(ConcurrencyLimited) as e:
        ledger.reserve(req(op="sandbox.run"))
    assert e.value.code == "concurrency_limited" and e.value.details["limit"]["in_use"] == 2
    ledger.release(a.id)
    b = ledger.reserve(req(op="sandbox"))
    ledger.settle(b.id, [UsageEvent(ANN, Usage.sandbox_run("isolate", cpu_ms=1), id=b.id)])
    ledger.reserve(req(op="sandbox"))
    ledger.reserve(req(op="model"))  # not a sandbox operation


def test_a_refused_admission_holds_nothing(ledger):
    from myriad.errors import BudgetExceeded
    from myriad.metering import Budget

    ledger.put_limit(Limit(Scope("acme"), "requests_per_minute", 1, id="rpm1"))
    ledger.put_budget(Budget(Scope("acme"), "day", hard="0.000001"))
    with pytest.raises(BudgetExceeded):
        ledger.reserve(req(Usage.tokens_of("gpt", input=1000, output=0)))
    (st,) = ledger.budget_status("acme")
    assert st.reserved_nanos == 0
    ledger.reserve(req())  # the rate limit was not consumed by the refused call


def test_limit_validation():
    from myriad.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="kind"):
        Limit(Scope("a"), "per_fortnight", 1)
    with pytest.raises(InvalidRequest, match="positive"):
        Limit(Scope("a"), "concurrent", 0)


async def test_holds_for_live_things(meter, ledger):
    ledger.put_limit(Limit(Scope("acme"), "concurrent", 1, operation="sandbox.live"))
    h = await meter.hold(ANN, "sandbox.live", ttl_s=60).start()
    with pytest.raises(ConcurrencyLimited):
        await meter.hold(Subject("acme", "bob"), "sandbox.live").start()
    await h.renew(120)
    await h.finish()
    await h.finish()
    h2 = await meter.hold(Subject("acme", "bob"), "sandbox.live").start()
    await h2.finish()
    assert ledger.count_events() == 0  # holds record no usage
