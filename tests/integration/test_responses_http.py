"""``/v1/responses`` and the rest of the OpenAI surface on a real ``myriad serve``,
driven by the official ``openai`` client; the models behind are a real local
upstream that speaks only Chat Completions (so every call is translated)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from pydantic import BaseModel

from myriad.models.simulated import start_simulated_upstream
from tests.integration import openai_server

WEATHER = {"type": "function", "name": "get_weather", "description": "weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}


class City(BaseModel):
    name: str
    population: int
    landmarks: list[str]


@pytest.fixture(scope="module")
def upstream():
    up = start_simulated_upstream(tokens=10)
    yield up
    up.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream):
    live = openai_server.start(tmp_path_factory.mktemp("responses"), upstream.base_url)
    yield live
    live.stop()


@pytest.fixture
def client(server, upstream):
    upstream.reset()
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)


def test_create_retrieve_delete(client):
    r = client.responses.create(model="fast", input="Hello from responses", instructions="Be brief.")
    assert r.object == "response" and r.status == "completed" and r.model == "fast"
    assert r.output_text.startswith("[simulated up-primary] You said: Hello from responses.")
    assert r.instructions == "Be brief."
    assert r.usage.output_tokens == 10 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    again = client.responses.retrieve(r.id)
    assert again.output_text == r.output_text and again.id == r.id
    items = client.responses.input_items.list(r.id)
    assert [i.content[0].text for i in items.data] == ["Hello from responses"]
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_input_items_and_previous_response_id_carry_the_conversation(client, server):
    first = client.responses.create(model="fast", tools=[WEATHER], input=[
        {"role": "user", "content": [{"type": "input_text", "text": "call get_weather for Paris"}]}])
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city": "simulated"}' and call.call_id
    second = client.responses.create(model="fast", tools=[WEATHER], previous_response_id=first.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "22C and sunny"}])
    assert "tool result 22C and sunny" in second.output_text
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens  # the history went upstream too
    # the same conversation sent in full, without the store, gets the same answer
    full = client.responses.create(model="fast", tools=[WEATHER], store=False, input=[
        {"role": "user", "content": "call get_weather for Paris"},
        {"type": "function_call", "call_id": call.call_id, "name": "get_weather", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "22C and sunny"}])
    assert full.output_text == second.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(full.id)  # store=False: not kept
    # another tenant cannot continue (or read) this tenant's conversation
    other = openai.OpenAI(base_url=server.url + "/v1", api_key=_second_tenant_key(server), max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        other.responses.create(model="fast", input="hi", previous_response_id=first.id)
    assert e.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(first.id)
    # an end user (a user token of this tenant) has their own: not the tenant key's, not another user's
    def user_client(name: str) -> openai.OpenAI:
        r = httpx.post(server.url + "/v1/admin/user-tokens", headers=server.headers(), json={
            "user": name, "scope": "models", "resource": "urn:myriad:models"})
        assert r.status_code == 200, r.text
        return openai.OpenAI(base_url=server.url + "/v1", api_key=r.json()["access_token"], max_retries=0)

    alice, bob = user_client("alice"), user_client("bob")
    mine = alice.responses.create(model="fast", input="alice here")
    assert alice.responses.retrieve(mine.id).id == mine.id
    for stranger in (bob, client):
        with pytest.raises(openai.NotFoundError):
            stranger.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        alice.responses.create(model="fast", input="x", previous_response_id=first.id)


def test_stream_events(client):
    plain = client.responses.create(model="fast", input="Stream this please").output_text
    with client.responses.stream(model="fast", input="Stream this please") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == plain == final.output_text
    assert final.usage.output_tokens == 10 and final.status == "completed"
    assert client.responses.retrieve(final.id).output_text == plain  # streamed responses are stored too
    calls = [e for e in client.responses.create(model="fast", input="x", tools=[WEATHER], tool_choice="required",
                                                stream=True)]
    types = [e.type for e in calls]
    assert "response.function_call_arguments.delta" in types and types[-1] == "response.completed"
    assert calls[-1].response.output[0].name == "get_weather"


def test_structured_output(client):
    parsed = client.responses.parse(model="fast", input="Describe Paris", text_format=City)
    city = parsed.output_parsed
    assert isinstance(city, City) and city.landmarks and city.population == 1
    chat = client.chat.completions.parse(model="fast", messages=[{"role": "user", "content": "Describe Paris"}],
                                         response_format=City)
    assert isinstance(chat.choices[0].message.parsed, City)
    obj = client.chat.completions.create(model="fast", response_format={"type": "json_object"},
                                         messages=[{"role": "user", "content": "json please"}])
    assert obj.choices[0].message.content.startswith('{"simulated": true')
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fast", response_format={"type": "bogus"},
                                       messages=[{"role": "user", "content": "x"}])
    assert e.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="fast", input="x", text={"format": {"type": "bogus"}})
    assert e.value.body["param"] == "text.format.type"


def test_responses_ride_the_gateway_fallbacks_and_metering(client, server, upstream):
    h = server.headers()

    def requests_of(model: str) -> int:
        rows = httpx.get(server.url + "/v1/usage", params={"by": "model", "resource": "model.requests"},
                         headers=h).json()["rows"]
        return sum(int(r["quantity"]) for r in rows if r["model"] == model)

    before = requests_of("smart")
    upstream.fail_next(-1, status=503, model="up-primary")
    try:
        raw = client.responses.with_raw_response.create(model="fast", input="fall back please")
        assert raw.headers["x-myriad-deployment"] == "backup"
        assert raw.parse().output_text.startswith("[simulated up-backup]")
        with client.responses.stream(model="fast", input="fall back streaming") as s:
            assert s.get_final_response().output_text.startswith("[simulated up-backup]")
    finally:
        upstream.clear_faults()
    assert requests_of("smart") == before + 2  # metered as the model that answered


def test_upstreams_that_speak_responses_get_the_call_passed_through(client, server, upstream):
    def stats() -> dict:
        return httpx.get(upstream.root_url + "/_simulated/stats").json()

    first = client.responses.with_raw_response.create(model="native", input="call get_weather for Paris",
                                                      tools=[WEATHER], instructions="Use tools.")
    assert first.headers["x-myriad-deployment"] == "native" and stats()["responses"] == 1
    r = first.parse()
    assert r.model == "native" and r.output[0].type == "function_call" and r.store is True
    second = client.responses.create(model="native", tools=[WEATHER], previous_response_id=r.id, input=[
        {"type": "function_call_output", "call_id": r.output[0].call_id, "output": "22C"}])
    assert "You said: tool result 22C" in second.output_text and stats()["responses"] == 2
    assert second.previous_response_id == r.id and client.responses.retrieve(second.id).output_text
    with client.responses.stream(model="native", input="Stream natively") as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed" and stats()["responses"] == 3
    assert final.output_text.startswith("[simulated up-native] You said: Stream natively.")
    assert client.responses.retrieve(final.id).output_text == final.output_text
    assert stats()["by_model"].get("up-backup") is None
    # the Responses upstream is down: the call falls back to a Chat Completions one, translated
    upstream.fail_next(-1, status=503, model="up-native")
    try:
        fell = client.responses.with_raw_response.create(model="native", input="hello", previous_response_id=r.id)
        assert fell.headers["x-myriad-deployment"] == "backup"
        assert fell.parse().output_text.startswith("[simulated up-backup]")
        with client.responses.stream(model="native", input="hello") as s:
            assert s.get_final_response().output_text.startswith("[simulated up-backup]")
    finally:
        upstream.clear_faults()


@pytest.mark.parametrize("model", ["fast", "native"])  # translated, passed through
def test_mid_stream_failure_is_a_failed_response(client, upstream, model):
    upstream.stall_after_first_token_next(1, model="up-" + ("primary" if model == "fast" else model))
    events = list(client.responses.create(model=model, input="break please", stream=True))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    failed = events[-1].response
    assert failed.status == "failed" and "broke after it started" in failed.error.message
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(failed.id)  # a failed response is not kept to continue from


def test_openai_errors_name_the_parameter(client, server):
    cases = [
        (dict(model="fast", input="x", tools=[WEATHER], tool_choice={"type": "function", "name": "nope"}),
         "tool_choice"),
        (dict(model="fast", input="x", tools=[{"type": "function", "parameters": {}}]), "tools[0].name"),
        (dict(model="fast", input="x", tools=[{"type": "web_search"}]), "tools[0].type"),
        (dict(model="fast", input=[{"type": "mystery"}]), "input[0].type"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(**kwargs)
        assert e.value.body["param"] == param, (kwargs, e.value.body)
    chat = [
        (dict(tools=[{"type": "function", "function": {"name": "a"}}],
              tool_choice={"type": "function", "function": {"name": "b"}}), "tool_choice"),
        (dict(tools=[{"type": "function", "function": {"parameters": {}}}]), "tools[0].function.name"),
    ]
    for kwargs, param in chat:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}], **kwargs)
        assert e.value.body["param"] == param, (kwargs, e.value.body)
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="gpt-nope", input="x")
    assert e.value.code == "model_not_found"


def test_rest_of_the_openai_surface(client, server, upstream):
    assert client.models.retrieve("fast").id == "fast"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-nope")
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="fast", prompt="hi")
    assert "/v1/chat/completions" in e.value.message
    before = httpx.get(upstream.root_url + "/_simulated/stats").json()["requests"]
    with pytest.raises(openai.BadRequestError) as e:  # a 400, not a retryable 503, and no upstream call
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "word " * 400}])
    assert e.value.code == "context_length_exceeded" and e.value.body["param"] == "messages"
    assert httpx.get(upstream.root_url + "/_simulated/stats").json()["requests"] == before
    assert client.models.retrieve("native").id == "native"
    for method, path in [("GET", "/v1/nope"), ("POST", "/v1/chat/nope"), ("GET", "/v1/chat/completions")]:
        r = httpx.request(method, server.url + path, headers=server.headers())
        assert r.status_code in (404, 405), (path, r.text)
        assert set(r.json()["error"]) >= {"message", "type", "param", "code"}, r.text
    # token arrays (what LangChain's OpenAIEmbeddings sends): decoded with cl100k_base
    import tiktoken  # the tests' own copy, given the same cache as the server

    enc = tiktoken.get_encoding("cl100k_base")
    texts = ["a red apple", "tax law"]
    by_tokens = client.embeddings.create(model="embed", input=[enc.encode(t) for t in texts])
    by_text = client.embeddings.create(model="embed", input=texts)
    assert [d.embedding for d in by_tokens.data] == [d.embedding for d in by_text.data]
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="embed", input=[[10**9]])
    assert e.value.body["param"] == "input"


def _second_tenant_key(server) -> str:
    from myriad.identity import KeyStore

    keys = KeyStore(server.data_dir)
    keys.open()
    try:
        keys.create_tenant("other")
        return keys.create_key("other")[1]
    finally:
        keys.close()


@pytest.fixture(autouse=True)
def _tiktoken_cache(monkeypatch, tmp_path_factory):
    cache: Path = tmp_path_factory.getbasetemp() / "tiktoken-client"
    if not cache.exists():
        openai_server.tiktoken_cache(cache)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))


def test_stored_responses_survive_a_restart(server, client):
    """Last in this module: it restarts the shared server."""
    r = client.responses.create(model="fast", input="remember me")
    server.stop()
    server.start()
    fresh = openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)
    assert fresh.responses.retrieve(r.id).output_text == r.output_text
    nxt = fresh.responses.create(model="fast", input="and now?", previous_response_id=r.id)
    assert nxt.usage.input_tokens > r.usage.input_tokens
