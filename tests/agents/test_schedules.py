import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from myriad.agents import Agent, AgentHost, AgentRef, callable
from myriad.agents.schedules import next_cron, parse_when
from myriad.errors import InvalidRequest
from myriad.settings import AgentSettings
from myriad.storage import SQLiteStorage

REF = AgentRef("t", "alarm", "a")


class Alarm(Agent):
    initial_state = {"fired": [], "failures": 0}

    @callable()
    async def arm(self, when, payload):
        return (await self.schedule(when, "ring", payload)).id

    async def ring(self, payload):
        self.set_state({**self.state, "fired": self.state["fired"] + [payload]})

    async def flaky(self, payload):
        if self.state["failures"] < 2:
            self.set_state({**self.state, "failures": self.state["failures"] + 1})
            raise RuntimeError("not yet")
        await self.ring(payload)


async def wait_for(pred, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if await pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def test_delay_fires_and_wakes_hibernated_agent(host: AgentHost):
    host.register(Alarm)
    await host.call(REF, "arm", [0.1, "hi"])
    host.hibernate_idle(0)
    assert host.resident_count == 0
    await wait_for(lambda: _fired(host, ["hi"]))
    # the row goes once the firing turn has finished (on PostgreSQL, a moment later)
    await wait_for(lambda: _no_schedules_of(host))


async def _count_schedules(host, n):
    return len(await host.run(REF, lambda a: a.list_schedules())) == n


async def _no_schedules_of(host):
    return await host.run(REF, lambda a: a.list_schedules()) == []


async def _fired(host, expected):
    return (await host.get_state(REF))["fired"] == expected


async def test_datetime_cancel_and_list(host: AgentHost):
    host.register(Alarm)
    when = datetime.now(timezone.utc) + timedelta(hours=1)
    sid = await host.call(REF, "arm", [0, "now"])
    later = await host.run(REF, lambda a: a.schedule(when, "ring", "later"))
    await wait_for(lambda: _fired(host, ["now"]))
    await wait_for(lambda: _count_schedules(host, 1))  # the fired row goes after its turn
    listed = await host.run(REF, lambda a: a.list_schedules())
    assert [s.id for s in listed] == [later.id] and listed[0].kind == "scheduled"
    assert await host.run(REF, lambda a: a.cancel_schedule(later.id)) is True
    assert await host.run(REF, lambda a: a.cancel_schedule(sid)) is False
    # another agent cannot cancel it
    other = AgentRef("t", "alarm", "b")
    s = await host.run(REF, lambda a: a.schedule(3600, "ring", "x"))
    assert await host.run(other, lambda a: a.cancel_schedule(s.id)) is False


async def test_retries_with_backoff_then_succeeds(host: AgentHost):
    host.register(Alarm)
    await host.run(REF, lambda a: a.schedule(0, "flaky", "eventually"))
    await wait_for(lambda: _fired(host, ["eventually"]))
    assert (await host.get_state(REF))["failures"] == 2


async def test_gives_up_after_max_attempts(storage: SQLiteStorage):
    h = AgentHost(storage, AgentSettings(schedule_max_attempts=2, schedule_backoff=0.01))
    h.register(Alarm)
    await h.start()
    try:
        await h.run(REF, lambda a: a.schedule(0, "flaky", "never"))
        await wait_for(lambda: _no_schedules(storage))
        assert (await h.get_state(REF))["fired"] == []
    finally:
        await h.stop()


async def _no_schedules(storage):
    return await storage.next_due() is None


async def test_survives_host_restart(storage: SQLiteStorage):
    h1 = AgentHost(storage)
    h1.register(Alarm)
    await h1.call(REF, "arm", [0.2, "after restart"])
    await h1.stop()  # never started: nothing fired
    h2 = AgentHost(storage)
    h2.register(Alarm)
    await h2.start()
    try:
        await wait_for(lambda: _fired(h2, ["after restart"]))
    finally:
        await h2.stop()


async def test_cron(host: AgentHost):
    host.register(Alarm)
    s = await host.run(REF, lambda a: a.schedule("*/5 * * * *", "ring", "cron"))
    assert s.kind == "cron" and s.time.minute % 5 == 0
    assert next_cron("0 0 * * *", 0) == 86400.0


def test_parse_when_rejects_bad_input():
    for bad in [-1, "not cron", True, object()]:
        with pytest.raises(InvalidRequest):
            parse_when(bad, 0)


async def test_schedule_unknown_method_rejected(host: AgentHost):
    host.register(Alarm)
    with pytest.raises(InvalidRequest):
        await host.run(REF, lambda a: a.schedule(1, "missing", None))


async def test_same_schedule_twice_is_one_unless_asked_for_a_new_one(host: AgentHost):
    """Cloudflare agents #1049/#1153: a cron set up in on_start piled up duplicate rows."""
    host.register(Alarm)
    a = await host.run(REF, lambda ag: ag.schedule("*/5 * * * *", "ring", {"text": "water"}))
    b = await host.run(REF, lambda ag: ag.schedule("*/5 * * * *", "ring", {"text": "water"}))
    assert a.id == b.id
    other = await host.run(REF, lambda ag: ag.schedule("*/5 * * * *", "ring", {"text": "tea"}))
    forced = await host.run(REF, lambda ag: ag.schedule("*/5 * * * *", "ring", {"text": "water"}, new=True))
    d1 = await host.run(REF, lambda ag: ag.schedule(3600, "ring", "x"))
    d2 = await host.run(REF, lambda ag: ag.schedule(3600, "ring", "x"))
    assert len({a.id, other.id, forced.id}) == 3 and d1.id == d2.id
    assert len(await host.run(REF, lambda ag: ag.list_schedules())) == 4
    # once it has fired (and is gone), the same call schedules it again
    assert await host.run(REF, lambda ag: ag.cancel_schedule(d1.id))
    d3 = await host.run(REF, lambda ag: ag.schedule(3600, "ring", "x"))
    assert d3.id != d1.id
