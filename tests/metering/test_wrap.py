"""Metering by wrapping: providers and sandboxes, with the subject taken from context."""

from dataclasses import dataclass

import pytest

from myriad.errors import BudgetExceeded, ConfigError
from myriad.metering import (
    Budget,
    MeteredProvider,
    MeteredSandbox,
    Resources,
    Scope,
    Subject,
    UsageQuery,
    charging,
    estimate_chat,
)

ANN = Subject("acme", "ann", "agents/helper/1")


class ScriptedProvider:
    """An OpenAI-shaped provider that answers from a script and reports usage like OpenAI does."""

    def __init__(self, completion_tokens=7, cached=0, report_usage=True):
        self.calls = 0
        self.completion_tokens = completion_tokens
        self.cached = cached
        self.report_usage = report_usage

    def _usage(self, body):
        prompt = sum(len(m["content"].split()) for m in body["messages"])
        u = {"prompt_tokens": prompt, "completion_tokens": self.completion_tokens,
             "total_tokens": prompt + self.completion_tokens}
        if self.cached:
            u["prompt_tokens_details"] = {"cached_tokens": self.cached}
        return u

    async def chat(self, body):
        self.calls += 1
        return {"id": f"chatcmpl-{self.calls}", "choices": [{"message": {"role": "assistant", "content": "hi"}}],
                "usage": self._usage(body)}

    async def stream(self, body):
        self.calls += 1
        for word in ["a", "b", "c"]:
            yield {"id": "s1", "choices": [{"delta": {"content": word}}]}
        if self.report_usage and (body.get("stream_options") or {}).get("include_usage"):
            yield {"id": "s1", "choices": [], "usage": self._usage(body)}

    async def embed(self, model, texts, dimensions=None):
        self.calls += 1
        return [[0.0] * 3 for _ in texts], {"prompt_tokens": sum(len(t.split()) for t in texts)}


BODY = {"model": "gpt", "messages": [{"role": "user", "content": "one two three four five"}], "max_tokens": 50}


def quantities(ledger):
    rows = ledger.totals(UsageQuery("acme", group_by=("resource",)))
    return {r.keys["resource"]: r.quantity_micro // 10**6 for r in rows}


def test_estimate_is_an_upper_bound():
    u = estimate_chat(BODY)
    assert u.micro()[Resources.OUTPUT_TOKENS] == 50 * 10**6
    assert u.micro()[Resources.INPUT_TOKENS] >= len("one two three four five") * 10**6
    assert estimate_chat({**BODY, "max_tokens": None}, default_max_output=99).micro()[Resources.OUTPUT_TOKENS] == 99 * 10**6


async def test_chat_commits_exactly_what_the_upstream_reported(meter, ledger):
    p = MeteredProvider(ScriptedProvider(cached=2), meter, model="gpt", deployment="east")
    with charging(ANN):
        for _ in range(3):
            await p.chat(BODY)
    assert quantities(ledger) == {"model.requests": 3, "model.input_tokens": 9, "model.cached_tokens": 6,
                                  "model.output_tokens": 21}
    (row,) = ledger.totals(UsageQuery("acme", group_by=("model", "deployment", "agent")))
    assert row.keys == {"model": "gpt", "deployment": "east", "agent": "agents/helper/1"}


async def test_refused_before_the_upstream_is_called(meter, ledger):
    inner = ScriptedProvider()
    p = MeteredProvider(inner, meter, model="gpt")
    ledger.put_budget(Budget(Scope("acme", user="ann"), "day", hard="0.00001"))
    with charging(ANN), pytest.raises(BudgetExceeded):
        await p.chat(BODY)
    assert inner.calls == 0


async def test_a_call_outside_any_subject_is_refused(meter):
    with pytest.raises(ConfigError, match="charging"):
        await MeteredProvider(ScriptedProvider(), meter, model="gpt").chat(BODY)


async def test_stream_commits_the_usage_chunk(meter, ledger):
    p = MeteredProvider(ScriptedProvider(completion_tokens=3), meter, model="gpt")
    with charging(ANN):
        chunks = [c async for c in p.stream(BODY)]
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert quantities(ledger) == {"model.requests": 1, "model.input_tokens": 5, "model.output_tokens": 3}
    assert ledger.open_reservations() == 0


async def test_stream_without_usage_is_charged_an_estimate_and_marked(meter, ledger):
    p = MeteredProvider(ScriptedProvider(report_usage=False), meter, model="gpt")
    with charging(ANN):
        agen = p.stream(BODY)
        first = await agen.__anext__()
        await agen.aclose()  # the client went away after one chunk
    assert first["choices"][0]["delta"]["content"] == "a"
    (e,) = ledger.events("acme")
    assert e.cloudevent["data"]["attributes"]["estimated"] is True
    assert ledger.open_reservations() == 0


async def test_embed(meter, ledger):
    p = MeteredProvider(ScriptedProvider(), meter, model="emb")
    with charging(ANN):
        vectors, usage = await p.embed("emb", ["a b", "c"])
    assert len(vectors) == 2
    assert quantities(ledger) == {"model.requests": 1, "model.embedding_tokens": 3}


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
