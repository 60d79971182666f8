"""The gateway's OpenAI-compatible HTTP doors on a real ``myriad serve``, driven by
the official ``openai`` client; routed to a real local upstream that fails on demand."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from myriad.models.simulated import start_simulated_upstream
from tests.integration.live import LiveServer

MSG = [{"role": "user", "content": "Hello from the openai client"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather for a city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def upstream():
    up = start_simulated_upstream(tokens=10)
    yield up
    up.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream):
    tmp: Path = tmp_path_factory.mktemp("gw")
    cfg = tmp / "models.toml"
    cfg.write_text(f"""
[router]
retries = 1
backoff = 0.01
attempt_timeout = 0.5
cooldown_failures = 1000  # circuits are tested in test_models_failures; here tests share one server
default_model = "fast"

[[deployment]]
name = "primary"
model = "fast"
provider = "openai"
base_url = "{upstream.base_url}"
upstream_model = "up-primary"
api_key = "env:UPSTREAM_KEY"
price = {{ input = 0.15, output = 0.6 }}

[[deployment]]
name = "backup"
model = "smart"
provider = "openai"
base_url = "{upstream.base_url}"
upstream_model = "up-backup"

[[deployment]]
name = "limited"
model = "limited"
provider = "openai"
base_url = "{upstream.base_url}"
upstream_model = "up-limited"

[[deployment]]
model = "embed"
provider = "openai"
base_url = "{upstream.base_url}"
upstream_model = "up-embed"
kind = "embedding"

[groups.fast]
fallbacks = ["smart"]

[knn]
strong = "smart"
weak = "fast"
min_outcomes = 4
""")
    live = LiveServer(tmp / "data", env={"MYRIAD_MODELS__CONFIG": str(cfg), "UPSTREAM_KEY": "k"}).start()
    yield live
    live.stop()


@pytest.fixture
def client(server, upstream):
    upstream.reset()
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)


def test_chat(client):
    r = client.chat.completions.create(model="fast", messages=MSG)
    assert r.model == "fast"
    assert r.choices[0].message.content.startswith("[simulated up-primary] You said: Hello from the openai client.")
    assert r.usage.completion_tokens == 10 and r.system_fingerprint == "fp_simulated"


def test_stream(client):
    plain = client.chat.completions.create(model="fast", messages=MSG).choices[0].message.content
    chunks = list(client.chat.completions.create(model="fast", messages=MSG, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain
    assert chunks[-1].usage.completion_tokens == 10
    no_usage = list(client.chat.completions.create(model="fast", messages=MSG, stream=True))
    assert all(c.choices for c in no_usage)


def test_tools_pass_through(client):
    r = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "get_weather in Paris"}],
                                       tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    follow = client.chat.completions.create(model="fast", tools=TOOLS, messages=[
        {"role": "user", "content": "get_weather in Paris"}, r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "22C and sunny"}])
    assert "22C" in follow.choices[0].message.content
    streamed = list(client.chat.completions.create(model="fast", stream=True, tools=TOOLS, tool_choice="required",
                                                   messages=[{"role": "user", "content": "x"}]))
    deltas = [c.choices[0].delta for c in streamed if c.choices]
    assert deltas[0].tool_calls[0].function.name == "get_weather"


def test_embeddings(client):
    r = client.embeddings.create(model="embed", input=["a red apple", "a red apple!", "tax law"])
    v = [d.embedding for d in r.data]
    assert len(v) == 3 and len(v[0]) == 384
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(v[0], v[1]) > 0.99 and dot(v[0], v[2]) < 0.5
    floats = client.embeddings.create(model="embed", input="a red apple", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(v[0], abs=1e-6)
    assert r.usage.prompt_tokens > 0


def test_models(client):
    assert {m.id for m in client.models.list()} == {"fast", "smart", "limited", "embed", "router-knn-0.2", "router-knn-0.5"}


def test_errors_in_openai_shape(server, client):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nope", messages=MSG)
    assert e.value.code == "model_not_found" and "fast" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fast", messages=[])
    assert e.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="fast", input="x")
    h = server.headers()
    for path, content in [("/v1/chat/completions", b"{nope"), ("/v1/chat/completions", b"[1]"),
                          ("/v1/embeddings", b'{"input": [[1, "x"]]}'), ("/v1/embeddings", b'{"input": "x", "dimensions": -1}')]:
        r = httpx.post(server.url + path, content=content, headers=h)
        assert r.status_code == 400, (path, content, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_fallback_when_upstream_fails(client, upstream):
    upstream.fail_next(-1, status=503, model="up-primary")
    r = client.chat.completions.create(model="fast", messages=MSG)
    assert r.choices[0].message.content.startswith("[simulated up-backup]")
    s = list(client.chat.completions.create(model="fast", messages=MSG, stream=True))
    assert "up-backup" in "".join(c.choices[0].delta.content or "" for c in s if c.choices)
    upstream.clear_faults()


def test_stall_falls_back_within_attempt_timeout(client, upstream):
    upstream.stall_next(1, model="up-primary")
    r = client.chat.completions.create(model="fast", messages=MSG)
    assert "up-backup" in r.choices[0].message.content


def test_rate_limit_reaches_client_as_429_with_retry_after(client, upstream):
    upstream.rate_limit_next(-1, retry_after=120)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="limited", messages=MSG)
    assert e.value.response.headers["retry-after"] == "120"
    upstream.clear_faults()


def test_mid_stream_failure_is_an_error_event(client, upstream):
    upstream.stall_after_first_token_next(1, model="up-primary")
    with pytest.raises(openai.APIError) as e:
        for _ in client.chat.completions.create(model="fast", messages=MSG, stream=True):
            pass
    assert "broke after it started" in str(e.value)


def test_semantic_cache_over_http(server, client):
    q = [{"role": "user", "content": "Cache me if you can"}]
    first = client.chat.completions.with_raw_response.create(model="fast", messages=q, extra_body={"cache": True})
    assert first.headers.get("x-myriad-cache") is None
    again = client.chat.completions.with_raw_response.create(model="fast", messages=q,
                                                             extra_headers={"x-myriad-cache": "on"})
    assert again.headers["x-myriad-cache"] == "hit"
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    other = openai.OpenAI(base_url=server.url + "/v1", api_key=_second_tenant_key(server), max_retries=0)
    r = other.chat.completions.with_raw_response.create(model="fast", messages=q, extra_body={"cache": True})
    assert r.headers.get("x-myriad-cache") is None  # never across tenants


def test_router_outcomes_over_http(server, client):
    url = server.url + "/v1/router/outcomes"
    h = server.headers()
    hard = [f"prove a deep theorem about number {i}" for i in range(4)]
    easy = [f"say hi to person {i}" for i in range(4)]
    r = httpx.post(url, json={"outcomes": [{"prompt": p, "weak_ok": False} for p in hard]
                              + [{"prompt": p, "preferred": "weak"} for p in easy]}, headers=h)
    assert r.status_code == 200 and r.json() == {"recorded": 8, "total": 8}
    r = client.chat.completions.create(model="router-knn-0.5", messages=[
        {"role": "user", "content": "prove a deep theorem about number 9"}])
    assert "up-backup" in r.choices[0].message.content  # strong
    r = client.chat.completions.create(model="router-knn-0.5", messages=[{"role": "user", "content": "say hi to person 9"}])
    assert "up-primary" in r.choices[0].message.content  # weak
    bad = httpx.post(url, json={"prompt": "x"}, headers=h)
    assert bad.status_code == 400 and "weak_ok" in bad.json()["error"]["message"]
    assert httpx.post(url, json={"prompt": "x", "weak_ok": True}).status_code == 401


def _second_tenant_key(server) -> str:
    from myriad.identity import KeyStore

    keys = KeyStore(server.data_dir)
    keys.open()
    try:
        keys.create_tenant("other")
        return keys.create_key("other")[1]
    finally:
        keys.close()
