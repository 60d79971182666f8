"""Metering sandboxes by wrapping: runs charged from results, live sandboxes counted, egress counted."""

from dataclasses import dataclass

import pytest

from myriad.errors import BudgetExceeded, ConcurrencyLimited
from myriad.metering import (
    Budget,
    Limit,
    MeteredSandbox,
    MeteredSandboxes,
    Scope,
    Subject,
    UsageQuery,
    egress_hook,
    subject_of_owner,
)

ANN = Subject("acme", "ann", "agents/helper/1")


@dataclass
class Limits:
    timeout: float = 2.0
    memory_mb: int = 512
    cpu: float = 1.0


@dataclass
class Result:
    duration_ms: float
    value: object = None


class FakeBox:
    tier = "container"
    id = "sbx1"
    limits = Limits()

    async def run(self, code, *, timeout=None):
        return Result(duration_ms=250.0, value=code)

    def info(self):
        return {"id": self.id}


async def test_sandbox_runs_are_charged_from_the_result(meter, ledger):
    box = MeteredSandbox(FakeBox(), meter, ANN)
    res = await box.run("echo hi")
    assert res.value == "echo hi" and box.info() == {"id": "sbx1"}  # other attributes pass through
    q = {r.keys["resource"]: r.quantity_micro for r in ledger.totals(UsageQuery("acme", group_by=("resource",)))}
    assert q == {"sandbox.container.runs": 10**6, "sandbox.container.cpu_ms": 250 * 10**6,
                 "sandbox.container.wall_ms": 250 * 10**6, "sandbox.container.memory_gb_s": 125_000}
    # 0.125 GB-s at 0.0000166667 per GB-s
    (row,) = ledger.totals(UsageQuery("acme", resource="sandbox.container.memory_gb_s", group_by=()))
    assert row.cost_nanos == 2083


async def test_sandbox_admission_uses_the_limits_as_worst_case(meter, ledger):
    ledger.put_budget(Budget(Scope("acme"), "day", hard="0.00001"))  # 10,000 nanos
    box = MeteredSandbox(FakeBox(), meter, ANN)  # worst case: 1 GB-s = 16,667 nanos
    with pytest.raises(BudgetExceeded):
        await box.run("x")
    await box.run("x", timeout=1.0)  # 0.5 GB-s = 8,334 nanos fits


class FakeSandboxes:
    """The duck shape of ``myriad.sandbox.Sandboxes`` (open / open_for / get / list / close)."""

    def __init__(self):
        self.live = {}

    async def open(self, *, owner="default", id=None, **kw):
        box = FakeBox()
        box.owner, box.id = owner, id or f"sb{len(self.live)}"
        self.live[(owner, box.id)] = box
        return box

    async def open_for(self, owner, request):
        return await self.open(owner=owner, id=request.get("id"))

    def get(self, owner, id):
        return self.live[(owner, id)]

    def list(self, owner):
        return [b for (o, _), b in self.live.items() if o == owner]

    async def close(self, owner, id):
        del self.live[(owner, id)]


def test_owner_to_subject():
    assert subject_of_owner("acme/coder/x") == Subject("acme", agent="acme/coder/x")
    assert subject_of_owner("acme") == Subject("acme")


async def test_sandboxes_hand_out_metered_sandboxes_and_count_live_ones(meter, ledger):
    ledger.put_limit(Limit(Scope("acme"), "concurrent", 2, operation="sandbox.live"))
    sbs = MeteredSandboxes(FakeSandboxes(), meter)
    a = await sbs.open(owner="acme/coder/a")
    b = await sbs.open_for("acme/coder/b", {"id": "b1"})
    assert isinstance(a, MeteredSandbox) and isinstance(sbs.get("acme/coder/b", "b1"), MeteredSandbox)
    with pytest.raises(ConcurrencyLimited):
        await sbs.open(owner="acme/coder/c")
    await a.run("x")
    await sbs.close("acme/coder/b", "b1")
    await sbs.open(owner="acme/coder/c")  # b's slot came back
    rows = ledger.totals(UsageQuery("acme", resource="sandbox.container.runs", group_by=("agent",)))
    assert [(r.keys["agent"], r.quantity_micro) for r in rows] == [("acme/coder/a", 10**6)]
    del sbs.inner.live[("acme/coder/a", a.id)]  # reaped behind our back
    assert await sbs.release_closed() == 1
    assert b is not None


async def test_egress_hook_counts_requests(meter, ledger):
    @dataclass
    class Req:
        sandbox_id: str = "sb1"
        owner: str = "acme/coder/a"
        host: str = "pypi.org"
        scheme: str = "https"

    hook = egress_hook(meter)
    await hook(Req())
    await hook(Req(host="github.com"))
    (row,) = ledger.totals(UsageQuery("acme", resource="egress.requests", group_by=("agent",)))
    assert row.quantity_micro == 2 * 10**6
    assert {e.cloudevent["data"]["attributes"]["host"] for e in ledger.events("acme")} == {"pypi.org", "github.com"}


async def test_the_wrapper_passes_isinstance_checks_of_the_tier_class(meter):
    box = MeteredSandbox(FakeBox(), meter, ANN)
    assert isinstance(box, FakeBox) and isinstance(box, MeteredSandbox)
