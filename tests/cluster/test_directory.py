"""The directory's leases, activations and fence against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from myriad.cluster import Directory, placement_key, rendezvous, root_path
from myriad.cluster.directory import FENCE_SQL


async def _fenced_write(url: str, shard: str, token: int, path: str = "t/c/a") -> bool:
    """A write guarded by the fence, as a storage backend makes it: in one transaction."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS w (path text PRIMARY KEY, v text)")
        cur = await conn.execute(
            f"INSERT INTO w SELECT %s, %s WHERE {FENCE_SQL} ON CONFLICT (path) DO UPDATE SET v = EXCLUDED.v"
            " RETURNING 1", (path, shard, path, shard, token))
        return bool(await cur.fetchall())


async def test_single_holder_takeover_after_expiry_and_fence(pg_url: str) -> None:
    d = await Directory(pg_url, ttl=0.6).connect()
    try:
        await d.register("s1", "n1", "127.0.0.1:1", 1)
        await d.register("s2", "n2", "127.0.0.1:2", 2)
        holder, t1 = await d.acquire("t/c/a", "s1")
        assert holder == "s1" and t1 > 0
        assert await d.acquire("t/c/a", "s1") == ("s1", t1)  # idempotent, same token
        assert await d.acquire("t/c/a", "s2") == ("s1", t1)  # s1 is live: s2 is told who holds it
        assert await _fenced_write(pg_url, "s1", t1)
        assert not await _fenced_write(pg_url, "s2", t1)  # wrong shard
        # s1 stops heartbeating; s2 keeps its lease
        for _ in range(5):
            await asyncio.sleep(0.2)
            assert await d.heartbeat("s2", {}) is not None
        holder, t2 = await d.acquire("t/c/a", "s2")
        assert holder == "s2" and t2 > t1
        assert not await _fenced_write(pg_url, "s1", t1)  # the old holder is fenced out
        assert await _fenced_write(pg_url, "s2", t2)
        assert await d.heartbeat("s1", {}) is None  # an expired lease is never renewed
        assert [s.id for s in await d.shards()] == ["s2"]
    finally:
        await d.close()


async def test_drain_refuses_new_activations_and_release(pg_url: str) -> None:
    d = await Directory(pg_url, ttl=5).connect()
    try:
        await d.register("s1", "n1", "a:1", 1)
        await d.register("s2", "n2", "a:2", 2)
        assert (await d.acquire("t/c/x", "s1"))[0] == "s1"
        assert await d.drain("n1") == 1
        renewed = await d.heartbeat("s1", {"resident": 1})
        assert renewed is not None and renewed[1] is True
        assert await d.acquire("t/c/y", "s1") == ("", 0)  # draining: nothing new
        assert await d.release("s1") == 1
        assert (await d.acquire("t/c/x", "s2"))[0] == "s2"
        await d.register("s1b", "n1", "a:3", 3)  # a restart of a drained node stays drained
        assert [s.draining for s in await d.shards() if s.id == "s1b"] == [True]
        await d.undrain("n1")
        assert (await d.acquire("t/c/z", "s1b"))[0] == "s1b"
    finally:
        await d.close()


async def test_takeover_waits_for_a_write_in_flight(pg_url: str) -> None:
    """A write holding the fence's share lock finishes before a takeover; the write
    that comes after the takeover is refused."""
    d = await Directory(pg_url, ttl=0.5).connect()
    await d.register("s1", "n1", "a:1", 1)
    _, t1 = await d.acquire("t/c/a", "s1")
    async with await psycopg.AsyncConnection.connect(pg_url) as slow:
        await slow.execute("CREATE TABLE IF NOT EXISTS w (path text PRIMARY KEY, v text)")
        await slow.commit()
        cur = await slow.execute(f"SELECT {FENCE_SQL}", ("t/c/a", "s1", t1))
        assert (await cur.fetchone())[0] is True  # fence checked, lock held, not committed
        await asyncio.sleep(0.7)  # s1's lease expires meanwhile
        await d.register("s2", "n2", "a:2", 2)
        takeover = asyncio.ensure_future(d.acquire("t/c/a", "s2"))
        await asyncio.sleep(0.3)
        assert not takeover.done()  # waits for the in-flight write's transaction
        await slow.execute("INSERT INTO w VALUES ('t/c/a', 'old')")
        await slow.commit()
        holder, t2 = await asyncio.wait_for(takeover, 5)
        assert holder == "s2" and t2 > t1
    await d.close()


def test_placement() -> None:
    assert placement_key("/agents/counter/u1") == "counter/u1"
    assert placement_key("/agents/counter/u1/sub/x/y") == "counter/u1"
    assert placement_key("/v1/agents/counter/u1/rpc") == "counter/u1"
    assert placement_key("/v1/usage") is None and placement_key("/agents/counter") is None
    assert placement_key("/mcp/notes/alice") == "notes/alice" and placement_key("/mcp/scratchpad") is None
    assert root_path("t/c/n/sub/d/m") == "t/c/n"
    shards = ["a", "b", "c"]
    owners = {k: rendezvous(k, shards) for k in (f"c/{i}" for i in range(3000))}
    counts = {s: list(owners.values()).count(s) for s in shards}
    assert all(800 < n < 1200 for n in counts.values()), counts
    # removing a shard moves only its keys
    after = {k: rendezvous(k, ["a", "c"]) for k in owners}
    assert all(after[k] == owners[k] for k in owners if owners[k] != "b")
    assert rendezvous("x", []) is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_postgres_storage_refuses_a_fenced_out_write(pg_url: str, tmp_path) -> None:
    """The real storage with the shard's fence: once another shard took the agent over,
    the old holder's state write is refused by PostgreSQL (its local clock still says
    its lease holds, as for a write in flight when the lease ran out)."""
    import json
    import time

    from myriad.cluster import Activations
    from myriad.errors import FencedOut
    from myriad.storage import AgentRecord, PostgresStorage

    d = await Directory(pg_url, ttl=30).connect()
    a1 = Activations(d, "s1", "n1", "a:1", 1)
    a2 = Activations(d, "s2", "n2", "a:2", 2)
    await a1.start()
    await a2.start()
    old = PostgresStorage(pg_url, tmp_path / "1", fence=a1)
    new = PostgresStorage(pg_url, tmp_path / "2", fence=a2)
    await old.open()
    await new.open()
    try:
        path = "t/tally/x"
        await a1.ensure(path)
        now = time.time()
        await old.create_agent(AgentRecord(path, "t", "tally", "x", b'{"n": 0}', now, now))
        await old.save_state(path, b'{"n": 1}')
        with pytest.raises(Exception):
            await a2.ensure(path)  # s1 holds it
        await d._rows("UPDATE myriad_shards SET expires_at = clock_timestamp() WHERE id = %s", (a1.shard_id,))
        await a2.ensure(path)  # s1's lease is over: s2 takes it
        await new.save_state(path, b'{"n": 2}')
        assert a1.valid()  # s1 does not know yet
        with pytest.raises(FencedOut):
            await old.save_state(path, b'{"n": 99}')
        record = await new.load_agent(path)
        assert record is not None and json.loads(record.state) == {"n": 2}
    finally:
        await a1.stop()
        await a2.stop()
        await old.close()
        await new.close()
        await d.close()
