"""Real sandboxes, metered by a hook on their events: isolate runs (and a container exec when this
machine can run containers) are charged exactly what their results report, to the
agent that owns them; live sandboxes count against a concurrency limit."""

from __future__ import annotations

from decimal import Decimal

import pytest

from myriad import Agent, callable
from myriad.agents import AgentHost, AgentRef
from myriad.errors import ConcurrencyLimited
from myriad.metering import Limit, Meter, SandboxMetering, Scope, UsageQuery
from myriad.sandbox import Sandboxes
from myriad.settings import AgentSettings
from tests.sandbox.conftest import make_settings

PRICES = {"currency": "USD", "prices": [
    {"resource": "sandbox.isolate.wall_ms", "unit_price": "0.000001"},
    {"resource": "sandbox.container.wall_ms", "unit_price": "0.00001"},
]}


@pytest.fixture
async def metered(tmp_path):
    meter = Meter.open(f"sqlite:///{tmp_path}/metering.db")
    meter.add_prices(PRICES)
    sbs = Sandboxes(make_settings(tmp_path))
    sbs.add_hook(SandboxMetering(meter))
    yield sbs, meter
    await sbs.aclose()
    meter.close()


def expected(tier: str, wall_ms: float, cpu: float, memory_mb: int) -> dict[str, int]:
    wall = Decimal(str(wall_ms))
    q = {"runs": Decimal(1), "wall_ms": wall, "cpu_ms": Decimal(str(float(wall_ms) * cpu)),
         "memory_gb_s": Decimal(memory_mb) / 1024 * wall / 1000}
    from myriad.metering._events import to_micro

    return {f"sandbox.{tier}.{k}": to_micro(v) for k, v in q.items()}


async def test_isolate_runs_reconcile_with_their_results(metered):
    sbs, meter = metered
    box = await sbs.open(owner="acme/coder/x", id="x1")
    results = [await box.run(f"let s = 0; for (let i = 0; i < {n}; i++) s += i; return s") for n in (10, 10_000, 200_000)]
    assert [r.value for r in results] == [45, 49995000, 19999900000]
    want: dict[str, int] = {}
    for r in results:
        for k, v in expected("isolate", r.duration_ms, 1.0, box.limits.memory_mb).items():
            want[k] = want.get(k, 0) + v
    rows = meter.store.totals(UsageQuery("acme", agent="acme/coder/x", group_by=("resource",)))
    assert {r.keys["resource"]: r.quantity_micro for r in rows} == want
    (cost,) = meter.store.totals(UsageQuery("acme", resource="sandbox.isolate.wall_ms", group_by=()))
    assert cost.cost_nanos == sum(round(Decimal(str(r.duration_ms)) * 1000) for r in results)  # 0.000001/ms = 1000 nanos/ms
    assert meter.store.open_reservations() == 1  # the live-sandbox slot, until closed
    await sbs.close("acme/coder/x", box.id)
    assert meter.store.open_reservations() == 0


async def test_live_sandboxes_are_capped(metered):
    sbs, meter = metered
    meter.set_limit(Limit(Scope("acme"), "concurrent", 2, operation="sandbox.live"))
    a = await sbs.open(owner="acme/a/1", id="s1")
    await sbs.open(owner="acme/a/2", id="s2")
    again = await sbs.open(owner="acme/a/2", id="s2")  # the same live sandbox: no second slot
    assert again.id == "s2"
    with pytest.raises(ConcurrencyLimited):
        await sbs.open(owner="acme/a/3", id="s3")
    await sbs.open(owner="other/a/1", id="s1")  # another tenant is not affected
    await sbs.close("acme/a/1", a.id)
    await sbs.open(owner="acme/a/3", id="s3")


class Coder(Agent):
    @callable()
    async def compute(self, n: int) -> dict:
        box = await self.sandbox()
        r = await box.run(f"return {n} * 2")
        return {"value": r.value, "ms": r.duration_ms, "mem": box.limits.memory_mb}


async def test_an_agent_is_charged_for_its_sandbox(metered, storage):
    sbs, meter = metered
    host = AgentHost(storage, AgentSettings(hibernate_after=3600), sandboxes=sbs)
    host.register(Coder)
    await host.start()
    try:
        out = await host.call(AgentRef("acme", "coder", "bob"), "compute", [21])
    finally:
        await host.stop()
    assert out["value"] == 42
    rows = meter.store.totals(UsageQuery("acme", group_by=("agent", "resource")))
    got = {r.keys["resource"]: r.quantity_micro for r in rows if r.keys["agent"] == "acme/coder/bob"}
    assert got == expected("isolate", out["ms"], 1.0, out["mem"])
