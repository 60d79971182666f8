"""Every model call through a real ``myriad serve`` is metered, and the ledger
reconciles exactly with the usage the (simulated, real-HTTP) upstream reported.

Driven by the official ``openai`` client and by an agent's own ``self.models``;
budgets and rate limits refuse before the upstream is touched.
"""

from __future__ import annotations

import time
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import httpx
import openai
import pytest

from myriad.metering import UsageQuery
from myriad.metering._sqlite import SQLiteLedger
from myriad.models.simulated import start_simulated_upstream
from tests.integration.live import LiveServer


@pytest.fixture(scope="module")
def upstream():
    up = start_simulated_upstream(tokens=12)
    yield up
    up.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream):
    tmp: Path = tmp_path_factory.mktemp("metered")
    cfg = tmp / "models.toml"
    cfg.write_text(f"""
[router]
default_model = "fast"
default_embedding_model = "emb"

[[deployment]]
name = "fast-1"
model = "fast"
provider = "openai"
base_url = "{upstream.base_url}"
upstream_model = "up-fast"
price = {{ input = 0.15, output = 0.6, cached = 0.075 }}

[[deployment]]
name = "emb-1"
model = "emb"
kind = "embedding"
provider = "openai"
base_url = "{upstream.base_url}"
upstream_model = "up-emb"
price = {{ input = 0.02 }}
""")
    s = LiveServer(tmp / "data", agents="examples.assistant", env={"MYRIAD_MODELS__CONFIG": str(cfg)}).start()
    yield s
    s.stop()


def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)


def nanos(tokens: int, per_million: str) -> int:
    return int((Decimal(tokens) * Decimal(per_million) * 1000).to_integral_value(rounding=ROUND_HALF_EVEN))


def ledger_events(server: LiveServer) -> dict[str, dict]:
    # the server owns its ledger: settled usage reaches the file in group commits every
    # metering.flush_interval (20 ms); another process reading the file waits that long
    time.sleep(0.2)
    store = SQLiteLedger(server.data_dir / "metering.db")
    try:
        return {e.cloudevent["data"].get("attributes", {}).get("upstream_id") or e.cloudevent["id"]: e
                for e in store.events("default", limit=100_000)}
    finally:
        store.close()


def test_usage_reconciles_exactly_with_what_the_upstream_reported(server: LiveServer, upstream):
    c = client(server)
    seen: dict[str, tuple[int, int]] = {}  # upstream completion id -> (prompt, completion) as reported
    for i in range(5):
        r = c.chat.completions.create(model="fast", max_tokens=4 + i,
                                      messages=[{"role": "user", "content": "tell me about metering " * (i + 1)}])
        seen[r.id] = (r.usage.prompt_tokens, r.usage.completion_tokens)
    for i in range(3):
        chunks = list(c.chat.completions.create(model="fast", stream=True, stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": f"stream {i} " * 7}]))
        usage = chunks[-1].usage
        seen[chunks[0].id] = (usage.prompt_tokens, usage.completion_tokens)
    hidden_ids = []
    for i in range(2):  # the caller does not ask for usage: the gateway still meters exactly, and hides the chunk
        chunks = list(c.chat.completions.create(model="fast", stream=True,
                                                messages=[{"role": "user", "content": f"quiet {i}"}]))
        assert all(ch.usage is None for ch in chunks)
        hidden_ids.append(chunks[0].id)
    emb_calls = []
    for texts in (["alpha beta", "gamma"], ["delta epsilon zeta"]):
        emb_calls.append(c.embeddings.create(model="emb", input=texts).usage.prompt_tokens)
    emb_tokens = sum(emb_calls)

    events = ledger_events(server)
    for cid, (prompt, completion) in seen.items():
        assert cid in events, (cid, sorted(events), seen)
        ev = events[cid]
        lines = ev.lines
        got_prompt = (lines.get("model.input_tokens", (0, 0))[0] + lines.get("model.cached_tokens", (0, 0))[0]) // 10**6
        assert (got_prompt, lines["model.output_tokens"][0] // 10**6) == (prompt, completion), cid
        assert ev.cost_nanos == nanos(prompt, "0.15") + nanos(completion, "0.6")
        assert ev.cloudevent["data"]["deployment"] == "fast-1" and ev.cloudevent["data"]["model"] == "fast"
    for cid in hidden_ids:
        assert "estimated" not in events[cid].cloudevent["data"].get("attributes", {})
        assert events[cid].lines["model.output_tokens"][0] > 0
    store = SQLiteLedger(server.data_dir / "metering.db")
    try:
        (row,) = store.totals(UsageQuery("default", resource="model.embedding_tokens", group_by=("model",)))
        assert row.keys == {"model": "emb"} and row.quantity_micro == emb_tokens * 10**6
        assert emb_tokens > 0 and row.cost_nanos == sum(nanos(t, "0.02") for t in emb_calls)
        (req,) = store.totals(UsageQuery("default", resource="model.requests", group_by=()))
        assert req.quantity_micro == (len(seen) + len(hidden_ids) + 2) * 10**6  # one event per call, none twice
        assert store.open_reservations() == 0
    finally:
        store.close()


def test_an_agent_is_charged_for_its_own_calls(server: LiveServer):
    h = server.headers()
    r = httpx.post(server.url + "/v1/agents/assistant/alice/rpc", json={"method": "ask", "args": ["hello there"]},
                   headers=h, timeout=30)
    assert r.status_code == 200, r.text
    rows = httpx.get(server.url + "/v1/usage", params={"by": "agent,model", "resource": "model.requests"},
                     headers=h).json()["rows"]
    assert {"agent": "default/assistant/alice", "model": "fast", "quantity": "1", "cost": "0.000000000",
            "lines": 1} in rows


def test_budget_and_rate_limit_refuse_before_the_upstream(server: LiveServer, upstream):
    c, h = client(server), server.headers()
    before = httpx.get(upstream.root_url + "/_simulated/stats").json()["requests"]
    r = httpx.post(server.url + "/v1/usage/budgets", json={"id": "tiny", "period": "day", "hard": "0.000001"}, headers=h)
    assert r.status_code == 201
    try:
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "too dear"}])
        assert e.value.status_code == 402 and e.value.body["code"] == "budget_exceeded"
        assert "tiny" in e.value.body["message"]
        assert e.value.body["budget"]["id"] == "tiny"  # the numbers, not only the sentence
        # an agent's own model call is refused the same way, and the client sees why
        r = httpx.post(server.url + "/v1/agents/assistant/carol/rpc", json={"method": "ask", "args": ["hi"]},
                       headers=h, timeout=30)
        assert r.status_code == 402 and r.json()["error"]["code"] == "budget_exceeded", r.text
    finally:
        assert httpx.delete(server.url + "/v1/usage/budgets/tiny", headers=h).status_code == 204
    r = httpx.post(server.url + "/v1/usage/limits", json={"id": "rpm", "kind": "requests_per_minute", "limit": 1,
                                                        "operation": "model"}, headers=h)
    assert r.status_code == 201
    try:
        c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "one"}])
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "two"}])
        assert e.value.status_code == 429 and int(e.value.response.headers["retry-after"]) >= 1
    finally:
        assert httpx.delete(server.url + "/v1/usage/limits/rpm", headers=h).status_code == 204
    after = httpx.get(upstream.root_url + "/_simulated/stats").json()["requests"]
    assert after - before == 1  # only the admitted call reached the upstream
