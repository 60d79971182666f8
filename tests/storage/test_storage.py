"""The ``Storage`` protocol on both backends (SQLite and a real PostgreSQL)."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from myriad.storage import AgentRecord, ScheduleRecord

MB = 2**20


def _agent(path: str = "t/c/a", state: bytes | None = b"{}") -> AgentRecord:
    tenant, cls, name = path.split("/")[:3]
    return AgentRecord(path, tenant, cls, name, state, time.time(), time.time())


def _schedule(sid: str, path: str = "t/c/a", next_run: float = 0.0, key: str | None = None) -> ScheduleRecord:
    return ScheduleRecord(sid, path, "t", "c", "a", "ring", "{}", "delayed", None, next_run, 0, time.time(), key)


async def test_agent_rows(any_storage: Any) -> None:
    s = any_storage
    assert await s.load_agent("t/c/a") is None
    await s.create_agent(_agent())
    await s.create_agent(_agent(state=b"ignored"))  # idempotent
    await s.save_state("t/c/a", b'{"n":1}')
    rec = await s.load_agent("t/c/a")
    assert rec.state == b'{"n":1}' and rec.tenant == "t" and rec.has_sql is False
    await s.create_agent(_agent("t/c/a/sub/d/x"))
    assert await s.count_agents() == {"c": 2} and await s.count_agents("other") == {}
    await s.delete_agent("t/c/a")
    assert await s.load_agent("t/c/a") is None and await s.load_agent("t/c/a/sub/d/x") is None


async def test_ten_megabyte_state_and_blob_row(any_storage: Any) -> None:
    """No 2 MB wall: a 10 MB state and a 10 MB SQL blob row round-trip, and come back
    in a fresh storage (on PostgreSQL, with an empty local directory)."""
    s = any_storage
    big = os.urandom(5 * MB).hex().encode()  # 10 MB of JSON-safe text
    await s.create_agent(_agent())
    await s.save_state("t/c/a", b'"' + big + b'"')
    assert (await s.load_agent("t/c/a")).state[1:-1] == big
    sql = s.agent_sql("t/c/a")
    blob = os.urandom(10 * MB)
    sql.execute("CREATE TABLE files (name TEXT PRIMARY KEY, data BLOB)")
    sql.execute("INSERT INTO files VALUES (?, ?)", ("big", blob))
    await sql.flush()
    assert not sql.pending
    sql.close()
    again = await s.open_agent_sql("t/c/a")
    assert again.execute("SELECT data FROM files WHERE name='big'")[0]["data"] == blob
    again.close()


async def test_schedules_and_idempotent_keys(any_storage: Any) -> None:
    s = any_storage
    await s.create_agent(_agent())
    first = await s.add_schedule(_schedule("s1", key="k"))
    dup = await s.add_schedule(_schedule("s2", key="k"))
    assert first.id == "s1" and dup.id == "s1"  # same key: the existing one
    await s.add_schedule(_schedule("s3"))  # no key: always new
    assert [r.id for r in await s.list_schedules("t/c/a")] == ["s1", "s3"]
    assert await s.get_schedule("s2") is None


async def test_claims_are_exclusive_until_released_or_expired(any_storage: Any) -> None:
    s = any_storage
    for i in range(10):
        await s.add_schedule(_schedule(f"s{i}", next_run=i))
    now = 100.0
    a = await s.claim_due(now, 6, "A", 60)
    b = await s.claim_due(now, 100, "B", 60)
    assert len(a) == 6 and len(b) == 4 and not {r.id for r in a} & {r.id for r in b}
    assert await s.claim_due(now, 100, "C", 60) == []
    assert await s.next_due() == pytest.approx(160.0)  # claimed rows are due again when the claim ends
    await s.renew_claims("A", [r.id for r in a], now + 120)
    assert [r.id for r in await s.claim_due(now + 61, 100, "C", 60)] == [r.id for r in b]  # B's expired
    await s.update_schedule(a[0].id, 50.0, 1)  # released: due again at once
    assert [r.id for r in await s.claim_due(now + 62, 100, "D", 60)] == [a[0].id]
    assert await s.delete_schedule(a[1].id) and not await s.delete_schedule(a[1].id)


async def test_a_claimant_that_lost_its_claim_settles_nothing(any_storage: Any) -> None:
    # A claims, pauses past its lease; B claims the same schedule and fires it. A's late
    # settle (move or delete) must not touch what B now holds; B's own settle does.
    s = any_storage
    await s.add_schedule(_schedule("cron", next_run=1))
    await s.add_schedule(_schedule("once", next_run=2))
    now = 100.0
    assert len(await s.claim_due(now, 10, "A", 5)) == 2
    assert len(await s.claim_due(now + 6, 10, "B", 60)) == 2  # A's claims expired
    assert not await s.update_schedule("cron", 999.0, 3, owner="A")
    assert not await s.delete_schedule("once", owner="A")
    rows = {r.id: r for r in await s.due_schedules(now + 6, 10)}
    assert rows["cron"].next_run == 1 and rows["cron"].attempts == 0 and "once" in rows
    assert await s.update_schedule("cron", 500.0, 0, owner="B") and await s.delete_schedule("once", owner="B")
    assert [(r.id, r.next_run) for r in await s.due_schedules(1000, 10)] == [("cron", 500.0)]
