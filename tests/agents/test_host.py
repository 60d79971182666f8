import asyncio
import json

import pytest

from examples.counter import Counter as ExampleCounter
from myriad.agents import Agent, AgentHost, AgentRef, callable
from myriad.errors import UnknownAgent
from myriad.settings import AgentSettings
from myriad.storage import SQLiteStorage
from tests.conftest import make_conn


class Counter(ExampleCounter):
    """The README's counter, plus methods that exercise the error paths."""

    async def not_exposed(self):
        return 1

    @callable()
    async def boom(self):
        raise ValueError("kaput")

    @callable()
    async def slow_add(self, a: int) -> int:
        n = self.state["n"]
        await asyncio.sleep(0.01)
        self.set_state({"n": n + a})
        return n + a


REF = AgentRef("t1", "counter", "u1")


async def test_connect_sends_identity_state_mcp(host: AgentHost):
    host.register(Counter)
    conn, t = make_conn()
    await host.connect(REF, conn)
    frames = t.frames()
    assert frames[0] == {"type": "cf_agent_identity", "name": "u1", "agent": "counter", "stateFollows": True}
    assert frames[1] == {"type": "cf_agent_state", "state": {"n": 0}}
    assert frames[2]["type"] == "cf_agent_mcp_servers"


async def test_rpc_and_errors(host: AgentHost):
    host.register(Counter)
    conn, t = make_conn()
    await host.connect(REF, conn)
    t.sent.clear()
    await host.frame(REF, conn, json.dumps({"type": "rpc", "id": "1", "method": "add", "args": [2, 3]}))
    frames = t.frames()
    # state broadcast precedes the reply, and both follow the durable write
    assert frames == [
        {"type": "cf_agent_state", "state": {"n": 5}},
        {"type": "rpc", "id": "1", "success": True, "result": 5, "done": True},
    ]
    t.sent.clear()
    for method, args, error in [
        ("nope", [], "Method nope does not exist"),
        ("not_exposed", [], "Method not_exposed is not callable"),
        ("boom", [], "kaput"),
        ("add", [1], "Wrong arguments for add"),
        ("_slot", [], "Method _slot does not exist"),
    ]:
        await host.frame(REF, conn, json.dumps({"type": "rpc", "id": method, "method": method, "args": args}))
        reply = t.frames()[-1]
        assert reply["success"] is False and reply["id"] == method and reply["error"].startswith(error)
    await host.frame(REF, conn, json.dumps({"type": "rpc", "id": "x", "method": "add", "args": "nope"}))
    assert t.frames()[-1]["error"] == "RPC args must be a list"


async def test_streaming(host: AgentHost):
    host.register(Counter)
    conn, t = make_conn()
    await host.connect(REF, conn)
    t.sent.clear()
    await host.frame(REF, conn, json.dumps({"type": "rpc", "id": "s", "method": "count", "args": [3]}))
    assert [(f["result"], f["done"]) for f in t.frames()] == [(0, False), (1, False), (2, False), ("done", True)]


async def test_client_state_broadcast_and_validation(host: AgentHost):
    host.register(Counter)
    a, ta = make_conn("a")
    b, tb = make_conn("b")
    await host.connect(REF, a)
    await host.connect(REF, b)
    ta.sent.clear(), tb.sent.clear()
    await host.frame(REF, a, json.dumps({"type": "cf_agent_state", "state": {"n": 42}}))
    assert ta.frames() == []  # the sender is not echoed
    assert tb.frames() == [{"type": "cf_agent_state", "state": {"n": 42}}]
    await host.frame(REF, a, json.dumps({"type": "cf_agent_state", "state": {"n": "x"}}))
    assert ta.frames() == [{"type": "cf_agent_state_error", "error": "State update rejected"}]
    assert await host.get_state(REF) == {"n": 42}


async def test_one_turn_at_a_time(host: AgentHost):
    host.register(Counter)
    results = await asyncio.gather(*[host.call(REF, "slow_add", [1]) for _ in range(20)])
    assert sorted(results) == list(range(1, 21))
    assert await host.get_state(REF) == {"n": 20}


async def test_instances_isolated(host: AgentHost):
    host.register(Counter)
    await host.call(REF, "add", [1, 1])
    other = AgentRef("t2", "counter", "u1")  # same name, other tenant
    assert await host.call(other, "add", [0, 0]) == 0


async def test_hibernate_and_wake_keeps_state_and_connections(host: AgentHost):
    host.register(Counter)
    conn, t = make_conn()
    await host.connect(REF, conn)
    await host.call(REF, "add", [2, 2])
    assert host.hibernate_idle(0) == 1
    assert host.resident_count == 0
    t.sent.clear()
    await host.frame(REF, conn, json.dumps({"type": "rpc", "id": "1", "method": "add", "args": [1, 0]}))
    assert t.frames()[-1]["result"] == 5
    assert host.stats["wakes"] == 2


async def test_state_survives_new_host(storage: SQLiteStorage):
    h1 = AgentHost(storage)
    h1.register(Counter)
    await h1.call(REF, "add", [3, 4])
    await h1.stop()
    h2 = AgentHost(storage)
    h2.register(Counter)
    assert await h2.call(REF, "add", [0, 0]) == 7


async def test_lru_cap(storage: SQLiteStorage):
    h = AgentHost(storage, AgentSettings(max_resident=10))
    h.register(Counter)
    for i in range(25):
        await h.call(AgentRef("t", "counter", f"a{i}"), "add", [i, 0])
    assert h.resident_count <= 10
    assert await h.call(AgentRef("t", "counter", "a3"), "add", [0, 0]) == 3


async def test_unknown_class(host: AgentHost):
    with pytest.raises(UnknownAgent):
        await host.call(AgentRef("t", "ghost", "x"), "add", [])


async def test_unknown_frames_go_to_on_message(host: AgentHost):
    class Echo(Agent):
        async def on_message(self, connection, message):
            await connection.send("echo:" + message)

    host.register(Echo)
    ref = AgentRef("t", "echo", "e")
    conn, t = make_conn()
    await host.connect(ref, conn)
    t.sent.clear()
    await host.frame(ref, conn, "not json {")
    await host.frame(ref, conn, '{"type":"mystery"}')
    assert t.sent == ["echo:not json {", 'echo:{"type":"mystery"}']
