"""The Responses <-> Chat Completions translation, checked against the ``openai``
package's own types (what every client parses)."""

from __future__ import annotations

import asyncio
import time

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from myriad.errors import DatabaseUnavailable, InvalidRequest, NotFound
from myriad.models import Gateway
from myriad.models.responses import (MemoryResponseStore, PostgresResponseStore, Responses, SQLiteResponseStore,
                                     StoredResponse, items_to_messages, parse_request)
from myriad.models.simulated._schema import example_value

EVENTS = TypeAdapter(ResponseStreamEvent)
TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {
    "q": {"type": "string"}, "n": {"type": "integer", "minimum": 3}}, "required": ["q", "n"]}}


def parse(body, previous=None, items=None):
    return parse_request(body, previous=lambda rid: (previous or {}).get(rid), item=lambda i: (items or {}).get(i))


def test_input_items_become_chat_messages():
    req = parse({"model": "m", "instructions": "sys", "tools": [TOOL], "tool_choice": {"type": "function", "name": "lookup"},
                 "max_output_tokens": 5, "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}},
                 "input": [{"role": "developer", "content": "dev"},
                           {"role": "user", "content": [{"type": "input_text", "text": "a"},
                                                        {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
                           {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "b"}]},
                           {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
                           {"type": "function_call", "call_id": "c2", "name": "lookup", "arguments": "{}"},
                           {"type": "function_call_output", "call_id": "c1", "output": "r1"},
                           {"type": "reasoning", "summary": []}]})
    chat = req.to_chat()
    assert [m["role"] for m in chat["messages"]] == ["system", "system", "user", "assistant", "tool"]
    assert chat["messages"][2]["content"][1]["image_url"]["url"].startswith("data:image/png")
    assistant = chat["messages"][3]
    assert assistant["content"] == "b" and [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert chat["tools"][0]["function"]["name"] == "lookup" and chat["max_tokens"] == 5
    assert chat["response_format"]["json_schema"]["name"] == "x"


@pytest.mark.parametrize("body,param", [
    ({"input": 3}, "input"),
    ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
    ({"input": "x", "tools": [TOOL], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}}, "text.format.schema"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "temperature": 3}, "temperature"),
    ({"input": "x", "stream": "yes"}, "stream"),
])
def test_bad_requests_name_the_parameter(body, param):
    with pytest.raises(InvalidRequest) as e:
        parse(body)
    assert e.value.details["param"] == param


def test_previous_response_and_item_references_expand():
    history = [{"type": "message", "id": "msg_1", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
    req = parse({"input": [{"type": "item_reference", "id": "msg_9"}], "previous_response_id": "resp_1"},
                previous={"resp_1": history}, items={"msg_9": {"type": "message", "id": "msg_9", "role": "assistant",
                                                              "content": [{"type": "output_text", "text": "yo"}]}})
    assert [m["content"] for m in items_to_messages(req.items)] == ["hi", "yo"]
    with pytest.raises(NotFound) as e:
        parse({"input": "x", "previous_response_id": "resp_gone"})
    assert e.value.details["param"] == "previous_response_id"


def _store(kind, tmp_path, request, **kw):
    if kind == "memory":
        return MemoryResponseStore(**kw)
    if kind == "sqlite":
        return SQLiteResponseStore(tmp_path / "r.db", **kw)
    return PostgresResponseStore(request.getfixturevalue("pg_url"), migrate=True, trim_every=1, **kw)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_store_is_per_tenant_bounded_and_expires(kind, tmp_path, request):
    now = [0.0]
    store = _store(kind, tmp_path, request, ttl=10, max_per_tenant=2, clock=lambda: now[0])

    def put(tenant, rid):
        stored = StoredResponse(response={"id": rid}, input_items=[],
                                conversation=[{"type": "message", "id": f"msg_{rid}"}])
        if kind == "postgres" and rid == "r2":  # written at once (what Responses does on PostgreSQL)
            assert store.put_now(tenant, stored) and store.pending() == 0
            return
        store.put(tenant, stored)
        if kind != "memory":
            assert store.get(tenant, rid) is not None and store.item(tenant, f"msg_{rid}")  # readable while buffered
            assert store.flush() == 1 and store.pending() == 0

    put("a", "r1")
    put("a", "r2")
    assert store.get("b", "r1") is None and store.item("b", "msg_r1") is None
    assert store.item("a", "msg_r1") is not None
    put("a", "r3")  # over the bound: r1 goes
    assert store.get("a", "r1") is None and store.item("a", "msg_r1") is None and store.get("a", "r2")
    assert store.delete("a", "r2") and not store.delete("a", "r2") and store.get("a", "r2") is None
    now[0] = 11
    assert store.get("a", "r3") is None
    if kind != "memory":  # what was written is read back by a new store on the same file (another machine)
        now[0] = 5
        again = _store(kind, tmp_path, request, ttl=10, clock=lambda: now[0])
        assert again.get("a", "r3").conversation == [{"type": "message", "id": "msg_r3"}]
        assert again.item("a", "msg_r3") == {"type": "message", "id": "msg_r3"}
        assert again.get("b", "r3") is None
        again.close()
        store.close()


def test_a_shared_store_keeps_a_response_the_database_refused_and_writes_it_later(tmp_path):
    """PostgreSQL down when a response is stored: the answer still goes, the response stays
    readable here and is written once the database is back."""
    from tests.pg import PostgresServer

    with PostgresServer(fsync=False) as pg:
        url = pg.create_database()
        store = PostgresResponseStore(url, migrate=True, connect_timeout=1)
        assert store.get("t", "r0") is None  # connected once
        pg.stop()
        stored = StoredResponse(response={"id": "r1"}, input_items=[], conversation=[{"type": "message", "id": "m1"}])
        assert not store.put_now("t", stored)
        assert store.pending() == 1 and store.get("t", "r1") is stored  # still readable from this process
        with pytest.raises(DatabaseUnavailable):
            store.get("t", "other")
        pg.start()
        for _ in range(50):  # the pool reconnects by itself
            try:
                assert store.flush() == 1
                break
            except DatabaseUnavailable:
                time.sleep(0.1)
        assert store.pending() == 0
        other = PostgresResponseStore(url)
        assert other.get("t", "r1").conversation == [{"type": "message", "id": "m1"}]
        other.close()
        store.close()


def test_create_and_stream_match_the_openai_types():
    async def run():
        responses = Responses(Gateway.simulated())
        body = {"model": "sim-small", "input": "hello there", "tools": [TOOL]}
        made, _ = await responses.create(await responses.parse(body, "t"), tenant="t")
        Response.model_validate(made)
        events = []
        async for _deployment, batch in responses.stream(await responses.parse(dict(body, stream=True), "t"), tenant="t"):
            events += batch
        tool_events = []
        async for _deployment, batch in responses.stream(
                await responses.parse(dict(body, input="lookup it", stream=True), "t"), tenant="t"):
            tool_events += batch
        return made, events, tool_events

    made, events, tool_events = asyncio.run(run())
    for e in events + tool_events:
        EVENTS.validate_python(e)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == made["output"][0]["content"][0]["text"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text
    done = tool_events[-1]["response"]["output"][0]
    assert done["type"] == "function_call" and done["arguments"] == '{"q": "simulated", "n": 3}'


def test_example_values_follow_the_schema():
    schema = {"type": "object", "required": ["when", "tags", "kind", "opt", "nested", "score"],
              "properties": {"when": {"type": "string", "format": "date-time"},
                             "tags": {"type": "array", "items": {"type": "string", "minLength": 12}, "minItems": 2},
                             "kind": {"enum": ["b", "a"]}, "opt": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/N"}]},
                             "nested": {"$ref": "#/$defs/N"}, "score": {"type": "number", "maximum": 0.5}},
              "$defs": {"N": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}
    assert example_value(schema) == {"when": "2026-01-01T00:00:00Z", "tags": ["simulatedxxx"] * 2, "kind": "b",
                                     "opt": {"x": 1}, "nested": {"x": 1}, "score": 0.5}
