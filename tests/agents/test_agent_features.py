from myriad.agents import Agent, AgentHost, AgentRef, callable, kebab, validate_name
from myriad.errors import InvalidName

import pytest


class Notes(Agent):
    async def on_start(self):
        self.sql("CREATE TABLE IF NOT EXISTS notes (body TEXT)")

    @callable()
    async def add(self, body: str) -> int:
        self.sql("INSERT INTO notes VALUES (?)", body)
        return self.sql("SELECT count(*) AS n FROM notes")[0]["n"]

    @callable()
    async def all(self) -> list:
        return [r["body"] for r in self.sql("SELECT body FROM notes")]


class Child(Agent):
    initial_state = {"v": 0}

    @callable()
    async def bump(self) -> int:
        self.set_state({"v": self.state["v"] + 1})
        return self.state["v"]


class Parent(Agent):
    @callable()
    async def use_child(self, name: str) -> int:
        child = await self.sub_agent(Child, name)
        return await child.bump()


async def test_per_agent_sql_is_private_and_survives_hibernation(host: AgentHost):
    host.register(Notes)
    a, b = AgentRef("t", "notes", "a"), AgentRef("t", "notes", "b")
    assert await host.call(a, "add", ["one"]) == 1
    assert await host.call(a, "add", ["two"]) == 2
    assert await host.call(b, "add", ["other"]) == 1
    host.hibernate_idle(0)
    assert await host.call(a, "all") == ["one", "two"]
    assert await host.call(b, "all") == ["other"]


async def test_sub_agents(host: AgentHost):
    host.register(Parent)
    p = AgentRef("t", "parent", "p")
    assert await host.call(p, "use_child", ["c1"]) == 1
    assert await host.call(p, "use_child", ["c1"]) == 2
    assert await host.call(p, "use_child", ["c2"]) == 1
    child = p.child("child", "c1")
    assert child.path == "t/parent/p/sub/child/c1"
    assert await host.get_state(child) == {"v": 2}
    # a top-level Child named c1 is another instance
    assert await host.call(AgentRef("t", "child", "c1"), "bump") == 1


async def test_delete(host: AgentHost):
    host.register(Notes)
    a = AgentRef("t", "notes", "gone")
    await host.call(a, "add", ["x"])
    await host.delete(a)
    assert await host.call(a, "all") == []


def test_kebab_matches_the_npm_client():
    assert kebab("MyAgent") == "my-agent"
    assert kebab("ChatAgentV2") == "chat-agent-v2"
    assert kebab("HTTPServer") == "h-t-t-p-server"
    assert kebab("MY_AGENT") == "my-agent"
    assert kebab("Counter") == "counter"


@pytest.mark.parametrize("bad", ["", "a" * 129, "a/b", "..", "a b", "ü", "-x", "a\x00"])
def test_bad_names(bad):
    with pytest.raises(InvalidName):
        validate_name(bad)


async def test_usage_without_metering_is_empty(host: AgentHost):
    host.register(Child)
    assert await host.run(AgentRef("t", "child", "u"), lambda a: a.usage()) == []


class WhoAmI(Agent):
    @callable()
    async def who(self):
        return self.caller

    @callable()
    async def via_child(self):
        child = await self.sub_agent(WhoAmI, "kid")
        return await child.who()

    async def later(self, payload):
        self.set_state({"caller_in_schedule": self.caller})


async def test_caller_is_the_turns_principal(host: AgentHost):
    from tests.conftest import make_conn
    import json

    host.register(WhoAmI)
    ref = AgentRef("t", "who-am-i", "w")
    assert await host.call(ref, "who", caller="alice") == "alice"
    assert await host.call(ref, "via_child", caller="bob") == "bob"  # sub-agent calls inherit it
    assert await host.call(ref, "who") is None
    conn, t = make_conn()
    conn.principal = "carol"
    await host.connect(ref, conn)
    await host.frame(ref, conn, json.dumps({"type": "rpc", "id": "1", "method": "who", "args": []}))
    assert t.frames()[-1]["result"] == "carol"
    await host.run(ref, lambda a: a.later(None))
    assert (await host.get_state(ref))["caller_in_schedule"] is None
