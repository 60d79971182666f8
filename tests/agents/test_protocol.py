"""The wire protocol module: one parse per frame, one RPC path for every door."""

import pytest

from myriad.agents import Agent, AgentHost, AgentRef, RpcError, callable
from myriad.agents.protocol import parse_frame, rpc_result


def test_parse_frame_kinds():
    assert parse_frame('{"type":"rpc","id":"1"}').kind == "rpc"
    assert parse_frame('{"type":"rpc"}').data == {"type": "rpc"}
    for text in ("{not json", "[1,2]", "hello", '{"type": 5}', '{"no":"type"}', ""):
        frame = parse_frame(text)
        assert frame.kind is None and frame.text == text


def test_rpc_result_refuses_what_json_cannot_carry():
    assert '"done": true' in rpc_result("1", 5)
    with pytest.raises(RpcError):
        rpc_result("1", object())


class Calc(Agent):
    @callable()
    async def add(self, a: int, b: int) -> int:
        return a + b

    @callable(streaming=True)
    async def count(self, stream, n: int) -> None:
        for i in range(n):
            await stream.send(i)

    async def hidden(self) -> int:
        return 1


async def test_one_rpc_path_same_errors_from_every_door(host: AgentHost):
    host.register(Calc)
    ref = AgentRef("t", "calc", "a")
    assert await host.call(ref, "add", [2, 3]) == 5
    assert await host.call(ref, "count", [3]) == {"chunks": [0, 1, 2], "result": None}
    for method, args, message in [("nope", [], "Method nope does not exist"),
                                  ("hidden", [], "Method hidden is not callable"),
                                  ("_wake", [], "Method _wake does not exist"),
                                  ("add", [1], "Wrong arguments for add")]:
        with pytest.raises(RpcError, match=message):
            await host.call(ref, method, args)
