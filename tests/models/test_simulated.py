"""The simulated upstream, driven over real HTTP with the official openai client."""

from __future__ import annotations

import base64
import struct
import time

import httpx
import openai
import pytest

from myriad.models.simulated import FINGERPRINT, Fault, Profile, start_simulated_upstream
from myriad.models.simulated._engine import embed_text, parse_model_name

pytestmark = pytest.mark.integration

MSG = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def up():
    handle = start_simulated_upstream(tokens=12)
    yield handle
    handle.close()


@pytest.fixture
def client(up):
    up.reset()
    return openai.OpenAI(base_url=up.base_url, api_key="test", max_retries=0)


def test_chat_is_deterministic_and_labelled(client):
    a = client.chat.completions.create(model="sim-small", messages=MSG)
    b = client.chat.completions.create(model="sim-small", messages=MSG)
    other = client.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "Something else"}])
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].message.content != other.choices[0].message.content
    assert "simulated" in a.choices[0].message.content
    assert a.system_fingerprint == FINGERPRINT
    assert a.usage.completion_tokens == 12
    assert a.usage.prompt_tokens > 0


def test_stream_matches_plain_reply_and_reports_usage(client):
    plain = client.chat.completions.create(model="sim-small", messages=MSG).choices[0].message.content
    text, usage, finish = "", None, None
    stream = client.chat.completions.create(model="sim-small@tps=400", messages=MSG, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        elif chunk.usage:
            usage = chunk.usage
    assert text == plain  # model-name options change timing, not words
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 12


def test_timing_follows_the_profile(client):
    t0 = time.perf_counter()
    stream = client.chat.completions.create(model="sim-small", messages=MSG, stream=True,
                                            extra_headers={"x-simulated-ttft": "0.2", "x-simulated-tps": "50"})
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    assert 0.18 <= first < 0.5
    # 11 more tokens at 50/s is ~0.22 s after the first
    assert total - first >= 0.15


def test_max_tokens_caps_with_length(client):
    r = client.chat.completions.create(model="sim-small", messages=MSG, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_tool_call_when_named_and_answer_after_tool_result(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"]}}}]
    r = client.chat.completions.create(model="sim-small", tools=tools,
                                       messages=[{"role": "user", "content": "call get_weather please"}])
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "simulated", "days": 1}'
    follow = client.chat.completions.create(model="sim-small", tools=tools, messages=[
        {"role": "user", "content": "call get_weather please"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ])
    assert follow.choices[0].message.tool_calls is None
    assert "sunny" in follow.choices[0].message.content


def test_embeddings_are_unit_vectors_and_similar_texts_are_close(client):
    r = client.embeddings.create(model="sim-embed", input=["the cat sat on the mat", "the cat sat on a mat",
                                                           "quarterly revenue report"])
    v = [d.embedding for d in r.data]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert len(v[0]) == 384
    assert abs(dot(v[0], v[0]) - 1) < 1e-5
    assert dot(v[0], v[1]) > 0.5 > dot(v[0], v[2])
    raw = httpx.post(f"{client.base_url}embeddings", json={"model": "m", "input": "x", "encoding_format": "base64",
                                                           "dimensions": 8}).json()
    vec = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert vec == pytest.approx(embed_text("x", 8), abs=1e-6)


def test_models_list(client):
    assert {m.id for m in client.models.list()} >= {"sim-small", "sim-large"}


def test_fail_and_rate_limit_on_demand(up, client):
    up.fail_next(1, status=503)
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="sim-small", messages=MSG)
    assert e.value.status_code == 503
    up.rate_limit_next(1, retry_after=0.25)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="sim-small", messages=MSG)
    assert e.value.response.headers["retry-after"] == "0.25"
    assert e.value.response.headers["retry-after-ms"] == "250"
    client.chat.completions.create(model="sim-small", messages=MSG)  # faults were used up
    stats = up.stats()
    assert stats["by_status"] == {"503": 1, "429": 1, "200": 1}


def test_fault_only_for_its_model(up, client):
    up.fail_next(1, status=500, model="sim-large")
    client.chat.completions.create(model="sim-small", messages=MSG)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="sim-large", messages=MSG)


def test_stall_until_client_gives_up(up, client):
    up.stall_next(1)
    t0 = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(model="sim-small", messages=MSG)
    assert time.perf_counter() - t0 < 2


def test_stall_after_first_token(client):
    stream = client.with_options(timeout=httpx.Timeout(5, read=0.3)).chat.completions.create(
        model="sim-small", messages=MSG, stream=True, extra_headers={"x-simulated-fault": "stall_after_first"})
    got = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert len(got) == 1 and got[0]


def test_context_window_exceeded_is_openai_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="sim-small@ctx=10", messages=[{"role": "user", "content": "x " * 100}])
    assert e.value.code == "context_length_exceeded"


def test_bad_requests_get_400_not_500(up):
    r = httpx.post(f"{up.base_url}/chat/completions", content=b"{nope")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(f"{up.base_url}/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_messages"
    r = httpx.post(f"{up.base_url}/chat/completions", json={"model": "m@ttft=fast", "messages": MSG})
    assert r.status_code == 400 and "ttft" in r.json()["error"]["message"]
    r = httpx.post(f"{up.base_url}/chat/completions", json={"model": "m", "messages": MSG},
                   headers={"x-simulated-fault": "explode"})
    assert r.status_code == 400


def test_api_key_enforced():
    from myriad.models.simulated import SimulatedConfig

    with start_simulated_upstream(SimulatedConfig(api_key="sekret")) as up:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=up.base_url, api_key="wrong", max_retries=0).models.list()
        assert openai.OpenAI(base_url=up.base_url, api_key="sekret", max_retries=0).models.list().data


def test_process_mode():
    with start_simulated_upstream(mode="process", ttft=0.0) as up:
        c = openai.OpenAI(base_url=up.base_url, api_key="x", max_retries=0)
        up.fail_next(1)
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="sim-small", messages=MSG)
        assert "simulated" in c.chat.completions.create(model="sim-small", messages=MSG).choices[0].message.content


def test_engine_parsing():
    assert parse_model_name("a@ttft=0.2,tps=5") == ("a", (("ttft", "0.2"), ("tps", "5")))
    assert Profile().with_options({"ttft": "0.5", "ctx": "10"}) == Profile(ttft=0.5, context_window=10)
    assert Fault.parse("rate_limit:2").retry_after == 2.0
    with pytest.raises(ValueError):
        Profile().with_options({"bogus": "1"})
