"""ChatAgent in process: the frames, the durable stream, hibernation between chunks,
errors, clear; and the UI-message helpers. (tests/integration/test_chat_npm.py drives
the same agent with the real npm clients.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from myriad.agents import AgentHost, AgentRef, Connection
from myriad.agents.chat import ChatAgent, ChatTurn
from myriad.agents.chat._ui import DENIED, Accumulator, to_openai

class Scripted(ChatAgent):
    """Replies with the words the test feeds through GATE (None ends, "!" raises)."""

    gate: "asyncio.Queue[str | None]"

    async def on_chat_message(self, turn: ChatTurn):
        GATE = type(self).gate
        if not turn.started:  # a reply picked up after a crash continues where it was cut
            yield {"type": "start"}
        if turn.open_text_id is None:
            yield {"type": "text-start", "id": "t"}
        while (word := await GATE.get()) is not None:
            if word == "!":
                raise RuntimeError("model fell over")
            yield {"type": "text-delta", "id": "t", "delta": word}
        yield {"type": "text-end", "id": "t"}
        yield {"type": "finish"}


class Wire:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass

    def of(self, request_id: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == "cf_agent_use_chat_response" and f["id"] == request_id]


def request(request_id: str, text: str = "hi") -> str:
    body = {"messages": [{"id": "u-" + request_id, "role": "user", "parts": [{"type": "text", "text": text}]}]}
    return json.dumps({"type": "cf_agent_use_chat_request", "id": request_id,
                       "init": {"method": "POST", "body": json.dumps(body)}})


async def until(pred, what: str) -> None:
    for _ in range(400):
        if pred():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timeout: " + what)


def fresh(host: AgentHost) -> None:
    host.register(Scripted)
    Scripted.gate = asyncio.Queue()  # one per test: each test has its own event loop


class _Gate:
    def __getattr__(self, name: str) -> Any:
        return getattr(Scripted.gate, name)


GATE = _Gate()


async def connect(host: AgentHost, ref: AgentRef, cid: str = "c1") -> tuple[Connection, Wire]:
    wire = Wire()
    conn = Connection(cid, wire)
    await host.connect(ref, conn)
    return conn, wire


async def test_reply_survives_hibernation_between_chunks_and_replays_whole(host: AgentHost):
    fresh(host)
    ref = AgentRef("t", "scripted", "a")
    conn, wire = await connect(host, ref)
    await host.frame(ref, conn, request("r1"))
    await GATE.put("Hello ")
    await until(lambda: any("Hello" in f["body"] for f in wire.of("r1")), "first delta")
    wakes = host.stats["wakes"]
    assert host.hibernate_idle(0) == 1  # the instance leaves memory mid-reply
    await GATE.put("world")
    await GATE.put(None)
    await until(lambda: any(f["done"] for f in wire.of("r1")), "done")
    assert host.stats["wakes"] > wakes  # the next chunk woke it
    live = [f for f in wire.of("r1") if not f["done"]]
    assert [f["seq"] for f in live] == list(range(len(live)))
    # a client that ACKs later is replayed the same chunks, then the end
    late, late_wire = await connect(host, ref, "c2")
    await host.frame(ref, late, json.dumps({"type": "cf_agent_stream_resume_ack", "id": "r1"}))
    replay = late_wire.of("r1")
    assert [f["body"] for f in replay[:-1]] == [f["body"] for f in live]
    assert all(f["replay"] for f in replay) and replay[-1]["done"]
    messages = late_wire.frames[[f["type"] for f in late_wire.frames].index("cf_agent_chat_messages")]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["parts"] == [{"type": "text", "text": "Hello world", "state": "done"}]


async def test_connect_mid_stream_is_told_and_probe_finds_it(host: AgentHost):
    fresh(host)
    ref = AgentRef("t", "scripted", "b")
    conn, wire = await connect(host, ref)
    await host.frame(ref, conn, request("r2"))
    await GATE.put("one ")
    await until(lambda: len(wire.of("r2")) >= 3, "chunks")
    other, other_wire = await connect(host, ref, "c2")
    assert other_wire.frames[1] == {"type": "cf_agent_stream_resuming", "id": "r2"}  # told before identity
    assert other_wire.frames[2]["type"] == "cf_agent_identity"
    await GATE.put("two")  # not sent to c2 before it ACKs (it would get it twice)
    await until(lambda: any("two" in f["body"] for f in wire.of("r2")), "two")
    assert not other_wire.of("r2")
    await host.frame(ref, other, json.dumps({"type": "cf_agent_stream_resume_request", "probeId": "p"}))
    assert other_wire.frames[-1] == {"type": "cf_agent_stream_resuming", "id": "r2", "probeId": "p"}
    await host.frame(ref, other, json.dumps({"type": "cf_agent_stream_resume_ack", "id": "r2"}))
    assert other_wire.of("r2")[-1].get("replayComplete") is True
    await GATE.put(None)
    await until(lambda: any(f["done"] for f in other_wire.of("r2")), "live done after replay")
    bodies = [f["body"] for f in other_wire.of("r2") if f["body"]]
    assert bodies == [f["body"] for f in wire.of("r2") if f["body"]]  # same chunks, once each


async def test_error_cancel_clear_and_bad_requests(host: AgentHost):
    fresh(host)
    ref = AgentRef("t", "scripted", "c")
    conn, wire = await connect(host, ref)
    await host.frame(ref, conn, json.dumps({"type": "cf_agent_use_chat_request", "id": "bad",
                                            "init": {"method": "POST", "body": "{not json"}}))
    assert wire.of("bad")[-1]["error"] is True and "messages" in wire.of("bad")[-1]["body"]
    await host.frame(ref, conn, request("r3"))
    await GATE.put("!")
    await until(lambda: any(f["done"] for f in wire.of("r3")), "done after error")
    error, done = wire.of("r3")[-2:]
    assert error["error"] is True and error["body"] == "model fell over" and done["outcome"] == "error"
    await host.frame(ref, conn, request("r4"))
    await until(lambda: len(wire.of("r4")) >= 2, "started")
    await host.frame(ref, conn, json.dumps({"type": "cf_agent_chat_request_cancel", "id": "r4"}))
    await until(lambda: any(f["done"] for f in wire.of("r4")), "done after cancel")
    assert wire.of("r4")[-1]["outcome"] == "aborted"
    await host.frame(ref, conn, json.dumps({"type": "cf_agent_stream_resume_request", "probeId": "q"}))
    assert wire.frames[-1] == {"type": "cf_agent_stream_resume_none", "reason": "idle", "probeId": "q"}
    await host.frame(ref, conn, json.dumps({"type": "cf_agent_chat_clear"}))
    assert await host.run(ref, lambda a: _messages(a)) == []


async def _messages(agent: Any) -> list[Any]:
    return agent.messages


def test_accumulator_and_openai_messages():
    acc = Accumulator({"id": "a1", "role": "assistant", "parts": []})
    for chunk in [{"type": "start", "messageId": "m"}, {"type": "start-step"},
                  {"type": "tool-input-start", "toolCallId": "c1", "toolName": "refund"},
                  {"type": "tool-input-available", "toolCallId": "c1", "toolName": "refund", "input": {"id": 7}},
                  {"type": "tool-approval-request", "toolCallId": "c1", "approvalId": "ap"},
                  {"type": "tool-input-available", "toolCallId": "c2", "toolName": "weather", "input": {}},
                  {"type": "tool-output-available", "toolCallId": "c2", "output": {"sun": True}},
                  {"type": "finish-step"}, {"type": "start-step"},
                  {"type": "text-start", "id": "t"}, {"type": "text-delta", "id": "t", "delta": "ok"}]:
        acc.apply(chunk)
    msg = acc.message
    assert msg["id"] == "m" and acc.open_text_id() == "t"
    assert msg["parts"][1]["state"] == "approval-requested" and msg["parts"][1]["approval"] == {"id": "ap"}
    user = {"id": "u", "role": "user", "parts": [{"type": "text", "text": "refund 7"}]}
    out = to_openai([user, msg], system="sys")
    # the call waiting for approval is left out; the answered one is a call + its result
    assert out[0] == {"role": "system", "content": "sys"} and out[1] == {"role": "user", "content": "refund 7"}
    assert [c["id"] for c in out[2]["tool_calls"]] == ["c2"] and out[3]["tool_call_id"] == "c2"
    assert out[4] == {"role": "assistant", "content": "ok"}
    msg["parts"][1].update(state="approval-responded", approval={"id": "ap", "approved": False})
    assert {"role": "tool", "tool_call_id": "c1", "content": DENIED} in to_openai([user, msg])


async def test_dropped_activation_stops_its_reply_and_the_next_owner_finishes_it(host: AgentHost):
    fresh(host)
    ref = AgentRef("t", "scripted", "d")
    conn, wire = await connect(host, ref)
    await host.frame(ref, conn, request("r5"))
    await GATE.put("before ")
    await until(lambda: any("before" in f["body"] for f in wire.of("r5")), "first delta")
    await host.drop(ref)  # the activation moved (cluster handover): its producer stops
    await asyncio.sleep(0.01)
    assert host.task("chat:t/scripted/d:r5") is None
    again, again_wire = await connect(host, ref, "c3")  # the new owner: the reply is picked up
    assert {"type": "cf_agent_stream_resuming", "id": "r5"} in again_wire.frames
    await host.frame(ref, again, json.dumps({"type": "cf_agent_stream_resume_ack", "id": "r5"}))
    await GATE.put("after")
    await GATE.put(None)
    await until(lambda: any(f["done"] for f in again_wire.of("r5")), "finished by the next owner")
    messages = await host.run(ref, _messages)
    assert messages[-1]["parts"][0]["text"] == "before after"


async def test_a_reply_is_one_turn_to_instrumentation_however_many_chunks(storage: Any):
    from myriad.settings import AgentSettings

    class Counting:
        turns = 0

        def wrap_turn(self, turn: Any, host: Any = None) -> Any:
            async def counted(slot: Any, body: Any) -> Any:
                Counting.turns += 1
                return await turn(slot, body)
            return counted

    class Middleware:  # the turn-middleware shape (enter/exit with a TurnInfo)
        turns = 0

        def enter(self, info: Any) -> None:
            Middleware.turns += 1

        def exit(self, info: Any) -> None:
            pass

    h = AgentHost(storage, AgentSettings(hibernate_after=3600), instrumentation=[Counting(), Middleware()])
    await h.start()
    try:
        fresh(h)
        ref = AgentRef("t", "scripted", "m")
        conn, wire = await connect(h, ref)
        before, before_mw = Counting.turns, Middleware.turns
        await h.frame(ref, conn, request("r6"))
        for w in ["a ", "b ", "c ", "d ", "e "]:
            await GATE.put(w)
        await GATE.put(None)
        await until(lambda: any(f["done"] for f in wire.of("r6")), "done")
        assert len(wire.of("r6")) == 10  # 9 chunks and the end
        assert Counting.turns - before == 1 and Middleware.turns - before_mw == 1  # the request frame only
    finally:
        await h.stop()


async def test_replies_queue_and_a_queued_one_can_be_cancelled(host: AgentHost):
    fresh(host)
    ref = AgentRef("t", "scripted", "q")
    conn, wire = await connect(host, ref)
    await host.frame(ref, conn, request("first"))
    await host.frame(ref, conn, request("second"))  # waits for the first (the "queue" policy)
    await host.frame(ref, conn, request("third"))
    await until(lambda: len(wire.of("first")) >= 2, "first started")
    assert not wire.of("second") and not wire.of("third")
    await host.frame(ref, conn, json.dumps({"type": "cf_agent_chat_request_cancel", "id": "second"}))
    await until(lambda: any(f["done"] for f in wire.of("second")), "second ended while queued")
    await asyncio.sleep(0.05)
    assert not wire.of("third")  # still behind first
    assert wire.of("second") == [{"type": "cf_agent_use_chat_response", "id": "second", "body": "",
                                  "done": True, "outcome": "aborted"}]
    await host.frame(ref, conn, request("fourth"))
    await GATE.put(None)  # first ends; third runs, then fourth (never two at once)
    await until(lambda: any(f["done"] for f in wire.of("first")), "first done")
    await until(lambda: len(wire.of("third")) >= 2, "third started")
    await asyncio.sleep(0.05)
    assert not wire.of("fourth")
    await GATE.put(None)
    await until(lambda: any(f["done"] for f in wire.of("third")), "third done")
    await until(lambda: len(wire.of("fourth")) >= 2, "fourth started")
    await GATE.put(None)
    await until(lambda: any(f["done"] for f in wire.of("fourth")), "fourth done")
    # nothing left streaming: a probe finds no reply to resume
    await host.frame(ref, conn, json.dumps({"type": "cf_agent_stream_resume_request", "probeId": "z"}))
    assert wire.frames[-1]["type"] == "cf_agent_stream_resume_none"
