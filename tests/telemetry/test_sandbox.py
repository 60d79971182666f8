"""Telemetry as a hook on the sandbox room's events: lifecycle, exec and tool spans on real sandboxes."""

from __future__ import annotations

import shutil

import pytest

from myriad.sandbox import Sandboxes, tool
from myriad.telemetry import current_tenant, semconv as sc
from tests.sandbox.conftest import make_settings


@pytest.fixture
async def traced(tmp_path, tel):
    sbs = Sandboxes(make_settings(tmp_path))
    sbs.add_hook(tel.sandbox_hook())
    tel.observe_sandboxes(sbs.live_by_tier)
    try:
        yield sbs
    finally:
        await sbs.aclose()


def _by_name(tel):
    out = {}
    for s in tel.store._snapshot():
        out.setdefault(s.name, []).append(s)
    return out


async def test_isolate_run_and_tool_calls_are_spans(traced, tel):
    @tool
    async def weather(city: str) -> dict:
        return {"city": city, "temp": 21}

    token = current_tenant.set("acme")
    try:
        with tel.tracer.start_as_current_span("invoke_agent bot"):
            box = await traced.open(tools=[weather], owner="acme")
            res = await box.run("return await tools.weather({city: 'Oslo'})")
            assert traced.live_by_tier() == {"isolate": 1}
            await box.close()
    finally:
        current_tenant.reset(token)
    assert res.value == {"city": "Oslo", "temp": 21}
    spans = _by_name(tel)
    (opened,) = spans["sandbox.open"]
    (ex,) = spans["sandbox.exec"]
    (call,) = spans["execute_tool weather"]
    assert opened.attributes[sc.MYRIAD_SANDBOX_TIER] == "isolate" == ex.attributes[sc.MYRIAD_SANDBOX_TIER]
    assert call.parent_id == ex.span_id and call.attributes[sc.MYRIAD_TENANT] == "acme"
    assert call.attributes[sc.GEN_AI_TOOL_NAME] == "weather"
    assert spans["sandbox.close"][0].attributes[sc.MYRIAD_SANDBOX_ID] == box.id
    assert traced.live_by_tier() == {}
    assert tel.store.sandboxes("acme")["isolate"]["runs"] >= 2
    assert spans["sandbox.close"][0].attributes["myriad.sandbox.close_reason"] == "deleted"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is installed by scripts/setup.sh")
async def test_container_exec_carries_traceparent(traced, tel):
    with tel.tracer.start_as_current_span("turn"):
        box = await traced.open(needs={"filesystem", "binaries"}, owner="acme")
        res = await box.exec("echo $TRACEPARENT")
    await box.close()
    (ex,) = _by_name(tel)["sandbox.exec"]
    assert res.stdout.strip().split("-")[1:3] == [f"{ex.trace_id:032x}", f"{ex.span_id:016x}"]
    assert ex.attributes[sc.MYRIAD_SANDBOX_TIER] == "container"
