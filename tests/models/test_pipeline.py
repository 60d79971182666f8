"""The gateway's one pipeline: every public model operation enters it, in process and
through the HTTP door, with metering and telemetry registered as middleware.

The door test drives the real server app with the official ``openai`` client; it is
the test that caught streamed HTTP chat (``chat_stream_batches``) going untraced
when tracing was a wrapper class that copied the gateway's surface.
"""

from __future__ import annotations

import inspect

import httpx
import openai
import pytest

from myriad.errors import BudgetExceeded
from myriad.models import Gateway
from myriad.models.pipeline import Call, Pipeline


class Recorder:
    name, order = "recorder", 50

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.exited: list[Call] = []

    async def enter(self, call: Call) -> None:
        self.calls.append(call)

    async def exit(self, call: Call) -> None:
        self.exited.append(call)


def public_model_operations() -> set[str]:
    """Every public method of the gateway that makes a model call for a tenant."""
    return {name for name, fn in inspect.getmembers(Gateway, inspect.isfunction)
            if not name.startswith("_") and "tenant" in inspect.signature(fn).parameters} - {"record_outcome"}


MSGS = [{"role": "user", "content": "hello"}]


async def drive(gw: Gateway, name: str) -> None:
    fn = getattr(gw, name)
    if name == "embed":
        await fn(["a", "b"], tenant="acme")
    elif inspect.isasyncgenfunction(getattr(Gateway, name)):
        async for _ in fn({"messages": MSGS}, tenant="acme"):
            pass
    else:
        await fn({"messages": MSGS, "input": "hello"}, tenant="acme")


async def test_every_public_operation_enters_the_pipeline():
    gw = Gateway.simulated()
    rec = gw.pipeline.use(Recorder())
    ops = public_model_operations()
    assert {"chat", "chat_stream", "chat_stream_batches", "embed"} <= ops
    for name in sorted(ops):
        before = len(rec.calls)
        await drive(gw, name)
        assert len(rec.calls) == before + 1, f"Gateway.{name} bypassed the pipeline"
        call = rec.exited[-1]
        assert call.tenant == "acme" and call.deployment and call.usage is not None, (name, call)
        assert call.error is None and call.cost_usd is not None
    await gw.aclose()


async def test_middleware_order_refusal_and_early_stop():
    order: list[str] = []

    class M:
        def __init__(self, name: str, n: int, refuse: bool = False) -> None:
            self.name, self.order, self.refuse = name, n, refuse

        async def enter(self, call: Call) -> None:
            order.append("in " + self.name)
            if self.refuse:
                raise BudgetExceeded("no")

        async def exit(self, call: Call) -> None:
            order.append(f"out {self.name} {type(call.error).__name__ if call.error else ''}".strip())

    p = Pipeline()
    p.use(M("b", 20))
    p.use(M("a", 10))

    async def core(call: Call) -> str:
        order.append("core")
        return "ok"

    assert await p.unary(Call("chat", "m"), core) == "ok"
    assert order == ["in a", "in b", "core", "out b", "out a"]
    order.clear()
    p.use(M("c", 30, refuse=True))
    with pytest.raises(BudgetExceeded):
        await p.unary(Call("chat", "m"), core)
    assert order == ["in a", "in b", "in c", "out b BudgetExceeded", "out a BudgetExceeded"]  # core never ran

    async def chunks(call: Call):
        for i in range(10):
            yield i

    p2 = Pipeline()
    p2.use(M("s", 1))
    order.clear()
    agen = p2.stream(Call("chat", "m", stream=True), chunks)
    assert await agen.__anext__() == 0
    await agen.aclose()  # the consumer stopped early: exit runs now and it is no error
    assert order == ["in s", "out s"]


@pytest.fixture
async def door(tmp_path):
    from myriad.server import build_services, create_app
    from myriad.settings import Settings

    services = build_services(Settings(data_dir=tmp_path / "data"))
    await services.start()
    services.keys.create_tenant("acme")
    _, key = services.keys.create_key("acme")
    app = create_app(services, manage_services=False)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://myriad.test")
    client = openai.AsyncOpenAI(base_url="http://myriad.test/v1", api_key=key, http_client=http, max_retries=0)
    try:
        yield services, client
    finally:
        await http.aclose()
        await services.close()


async def test_every_door_call_is_traced_and_metered(door):
    services, client = door
    gw = services.models
    assert [m.name for m in gw.pipeline.middleware][:3] == ["identity", "telemetry", "metering"]
    rec = gw.pipeline.use(Recorder())
    await client.chat.completions.create(model="sim-small", messages=MSGS)
    stream = await client.chat.completions.create(model="sim-small", messages=MSGS, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await client.embeddings.create(model="sim-embed", input=["a", "b"])
    await client.responses.create(model="sim-small", input="hello")
    async with client.responses.stream(model="sim-small", input="hello") as rs:
        assert "simulated" in (await rs.get_final_response()).output_text
    assert "simulated" in text
    kinds = [(c.kind, c.stream) for c in rec.exited]
    assert kinds == [("chat", False), ("chat", True), ("embeddings", False), ("responses", False), ("responses", True)]
    spans = [s for s in services.telemetry.store._snapshot() if s.name.startswith(("chat ", "embeddings "))]
    assert len(spans) == 5, [s.name for s in spans]  # streamed HTTP chat and responses included
    assert all(s.attributes["myriad.tenant"] == "acme" for s in spans)
    assert [s.attributes.get("myriad.api") for s in spans].count("responses") == 2
    await services.meter.drain()
    events = services.meter.store.count_events("acme")
    assert events == 5
    # cost computed once: the span's cost is the ledger's
    from myriad.metering import UsageQuery

    ledger = sum(r.cost_nanos for r in services.meter.store.totals(UsageQuery("acme", group_by=("resource",))))
    traced = sum(s.attributes.get("myriad.cost.usd", 0) for s in spans)
    assert ledger > 0 and traced == pytest.approx(ledger / 1e9)
