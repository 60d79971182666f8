"""Metering the sandbox room as a hook on its events: runs charged (also when they time
out), CPU from the cgroup, live sandboxes counted and given back (even by the next process)."""

from dataclasses import dataclass

import pytest

from myriad.errors import BudgetExceeded, ConcurrencyLimited, SandboxTimeout
from myriad.metering import Budget, Limit, SandboxMetering, Scope, Subject, UsageQuery, egress_hook, subject_of_owner
from myriad.sandbox import Limits, SandboxEvent

OWNER = "acme/helper/1"


def ev(kind: str, **kw: object) -> SandboxEvent:
    kw.setdefault("limits", Limits(timeout=2.0, memory_mb=512, cpu=1.0))
    return SandboxEvent(kind, owner=OWNER, sandbox_id="sbx1", tier="container", **kw)  # type: ignore[arg-type]


def totals(ledger) -> dict[str, int]:
    return {r.keys["resource"]: r.quantity_micro for r in ledger.totals(UsageQuery("acme", group_by=("resource",)))}


async def test_an_exec_is_charged_its_cgroup_cpu_and_wall_time(meter, ledger):
    hook = SandboxMetering(meter)
    event = ev("exec")
    async with hook(event):
        event.wall_ms, event.cpu_ms = 250.0, 100.0
    assert totals(ledger) == {"sandbox.container.runs": 10**6, "sandbox.container.cpu_ms": 100 * 10**6,
                              "sandbox.container.wall_ms": 250 * 10**6, "sandbox.container.memory_gb_s": 125_000}
    (row,) = ledger.totals(UsageQuery("acme", resource="sandbox.container.memory_gb_s", group_by=()))
    assert row.cost_nanos == 2083  # 0.125 GB-s at 0.0000166667 per GB-s


async def test_an_exec_that_times_out_is_still_charged(meter, ledger):
    # before: the wrapper charged only returned results; a timeout was never charged
    hook = SandboxMetering(meter)
    event = ev("exec")
    with pytest.raises(SandboxTimeout):
        async with hook(event):
            event.wall_ms, event.cpu_ms = 2000.0, 1900.0
            raise SandboxTimeout("killed at the limit")
    assert totals(ledger)["sandbox.container.cpu_ms"] == 1900 * 10**6
    assert meter.store.open_reservations() == 0


async def test_admission_uses_the_limits_as_worst_case(meter, ledger):
    ledger.put_budget(Budget(Scope("acme"), "day", hard="0.00001"))  # 10,000 nanos
    hook = SandboxMetering(meter)
    with pytest.raises(BudgetExceeded):  # worst case: 1 GB-s = 16,667 nanos
        async with hook(ev("run", timeout=2.0)):
            raise AssertionError("must not run")
    event = ev("run", timeout=1.0)  # 0.5 GB-s = 8,334 nanos fits
    async with hook(event):
        event.wall_ms = 10.0


def test_owner_to_subject():
    assert subject_of_owner("acme/coder/x") == Subject("acme", agent="acme/coder/x")
    assert subject_of_owner("acme") == Subject("acme")


async def test_live_slots_are_taken_by_open_and_given_back_by_any_close(meter, ledger):
    ledger.put_limit(Limit(Scope("acme"), "concurrent", 2, operation="sandbox.live"))
    hook = SandboxMetering(meter)
    for i in (1, 2):
        async with hook(ev("open", instance=f"i{i}")):
            pass
    with pytest.raises(ConcurrencyLimited):
        async with hook(ev("open", instance="i3")):
            raise AssertionError("must not open")
    async with hook(ev("close", instance="i1", reason="evicted")):
        pass
    async with hook(ev("open", instance="i3")):  # i1's slot came back
        pass
    # a new process (a new hook) after a crash gives back the dead one's slots by id, and
    # charges the CPU the dead sandbox used after its last charge
    after_restart = SandboxMetering(meter)
    async with after_restart(ev("close", instance="i2", reason="crashed", cpu_ms=1500.0)):
        pass
    assert meter.store.open_reservations() == 1  # i3
    assert totals(ledger)["sandbox.container.cpu_ms"] == 1500 * 10**6


async def test_background_cpu_is_recorded(meter, ledger):
    hook = SandboxMetering(meter)
    async with hook(ev("usage", cpu_ms=42.0)):
        pass
    assert totals(ledger) == {"sandbox.container.cpu_ms": 42 * 10**6}


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
