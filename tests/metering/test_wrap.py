"""Metering by wrapping: providers and sandboxes, with the subject taken from context."""

import pytest

from myriad.errors import BudgetExceeded, ConfigError
from myriad.metering import (
    Budget,
    MeteredProvider,
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
