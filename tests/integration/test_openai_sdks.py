"""The agent frameworks people build on, unmodified and on their defaults, pointed at
a real ``myriad serve``: the OpenAI Agents SDK (Responses API), LangChain
(``with_structured_output``, ``OpenAIEmbeddings`` with its token arrays) and the
Vercel AI SDK's ``openai()`` provider from Node (Responses API)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import openai
import pytest
from pydantic import BaseModel

from myriad.models.simulated import start_simulated_upstream
from tests.integration import openai_server


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
    live = openai_server.start(tmp_path_factory.mktemp("sdks"), upstream.base_url)
    yield live
    live.stop()


def test_openai_agents_sdk_default_settings(server, upstream):
    import agents
    from agents import Agent, Runner, function_tool

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"22C and sunny in {city}"

    async def run() -> tuple[str, City, str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)
        agents.set_default_openai_client(client, use_for_tracing=False)
        agents.set_tracing_disabled(True)  # traces would go to api.openai.com; unrelated to the model calls
        assistant = Agent(name="assistant", instructions="Use tools.", model="fast", tools=[get_weather])
        told = await Runner.run(assistant, "please call get_weather for Paris")
        typed = await Runner.run(Agent(name="typed", model="fast", output_type=City), "describe Paris")
        streamed = Runner.run_streamed(assistant, "stream a get_weather call")
        deltas = []
        async for ev in streamed.stream_events():
            if ev.type == "raw_response_event" and ev.data.type == "response.output_text.delta":
                deltas.append(ev.data.delta)
        assert "".join(deltas) == streamed.final_output
        return told.final_output, typed.final_output, streamed.final_output

    told, typed, streamed = asyncio.run(run())
    assert calls == ["simulated", "simulated"]  # the model's arguments reached the tool, twice
    assert "You said: tool result 22C and sunny in" in told and "tool result" in streamed
    assert isinstance(typed, City) and typed.population == 1


def test_langchain_structured_output_and_embeddings(server, tmp_path, monkeypatch):
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    # tiktoken downloads its encoding from OpenAI; these machines reach only package registries
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(openai_server.tiktoken_cache(tmp_path / "tiktoken")))
    common = dict(base_url=server.url + "/v1", api_key=server.key, max_retries=0)
    city = ChatOpenAI(model="fast", **common).with_structured_output(City).invoke("Describe Paris")
    assert isinstance(city, City) and city.landmarks == ["simulated"]
    via_responses = ChatOpenAI(model="fast", use_responses_api=True, **common).with_structured_output(City)
    assert isinstance(via_responses.invoke("Describe Paris"), City)
    as_json = ChatOpenAI(model="fast", **common).with_structured_output(None, method="json_mode")
    assert as_json.invoke("Answer in json")["simulated"] is True
    emb = OpenAIEmbeddings(model="embed", **common)  # defaults: sends token arrays
    vectors = emb.embed_documents(["a red apple", "tax law"])
    plain = openai.OpenAI(**common).embeddings.create(model="embed", input=["a red apple", "tax law"])
    assert vectors == [d.embedding for d in plain.data]


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed (scripts/setup.sh --test installs it)")
def test_vercel_ai_sdk_openai_provider(server):
    if not (openai_server.NODE_DIR / "node_modules" / "@ai-sdk" / "openai").exists():
        pytest.fail("npm packages missing: run scripts/setup.sh --test (npm install in tests/node)")
    proc = subprocess.run(["node", "vercel_ai.mjs", server.url + "/v1", server.key], cwd=openai_server.NODE_DIR,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["text"].startswith("[simulated up-primary] You said: Hello from the AI SDK.")
    assert out["usage"]["inputTokens"] > 0 and out["usage"]["outputTokens"] == 10
    assert out["streamed"] == out["text"]
    assert out["toolCalls"] == [{"toolName": "get_weather", "input": {"city": "simulated"}}]
    assert "tool result" in out["afterTool"] and out["steps"] == 2
    assert out["object"] == {"name": "simulated", "population": 1, "landmarks": ["simulated"]}
