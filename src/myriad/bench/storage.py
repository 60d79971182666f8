"""Storage: SQLite and PostgreSQL side by side, per operation, in one run.

Each backend gets the same work through the real runtime: ``save_state`` (a turn's
state write), ``load_agent`` (the read behind a wake), a turn that inserts one row
into the agent's own SQL and returns (through the output gate: on PostgreSQL its
pages are shipped before the reply), the same turn without SQL (the baseline that
the SQL insert's cost is read against), and waking a random hibernated agent
(the hibernation benchmark's wake, here from each backend). Per MB of agent SQL:
the cost to ship a 1 MB row and to rebuild the file on an empty machine. What the
stores the doors share cost per request (agents' owners, stored responses). And a
model call's budget admission (reserve, then commit the actual usage) against the
metering ledger on the same backend (the ledger's synchronous mode is its own: the
``sc`` columns apply to the runtime's writes).

Columns: SQLite as embedded (synchronous=NORMAL: no fsync per write), SQLite with
an fsync per write (``durable_fsync``), PostgreSQL with ``synchronous_commit=on``
(the default: every commit waits for the server's WAL fsync) and ``=off`` (the
commit returns once the server has it, the like-for-like of SQLite's default).
Without ``--database`` a throwaway PostgreSQL server (fsync on) is started on this
machine, so the numbers are loopback numbers. CPU is this process's CPU per
operation; PostgreSQL's own CPU is reported when the bench started the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

DESCRIPTION = __doc__ or ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ops", type=int, default=2_000, help="timed operations of each kind per backend (default 2,000)")
    p.add_argument("--agents", type=int, default=1_000, help="agents created per backend (default 1,000)")
    p.add_argument("--database", help="PostgreSQL URL to use (default: start a throwaway server here)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args))


class _ServerCPU:
    """CPU seconds used by a PostgreSQL server's processes (when we started it)."""

    def __init__(self, data_dir: Path | None) -> None:
        self.pid: int | None = None
        if data_dir is not None:
            try:
                self.pid = int((data_dir / "postmaster.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                self.pid = None

    def seconds(self) -> float:
        if self.pid is None:
            return float("nan")
        import psutil

        try:
            procs = [psutil.Process(self.pid), *psutil.Process(self.pid).children(recursive=True)]
        except psutil.Error:
            return float("nan")
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total


async def _timed(n: int, op: Callable[[int], Any], server: _ServerCPU) -> dict[str, float]:
    from myriad.bench.report import summary_ms

    samples: list[float] = []
    cpu0, srv0 = time.process_time(), server.seconds()
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        samples.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / n * 1000
    srv = (server.seconds() - srv0) / n * 1000
    s = summary_ms(samples)
    return {"p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "cpu_ms": round(cpu, 4),
            "db_cpu_ms": round(srv, 4) if srv == srv else float("nan")}


async def _one_backend(label: str, storage: Any, ledger_url: str, args: argparse.Namespace,
                       server: _ServerCPU) -> dict[str, Any]:
    from myriad.agents import Agent, AgentHost, AgentRef, callable
    from myriad.bench.report import progress, summary_ms
    from myriad.settings import AgentSettings

    class Bench(Agent):
        initial_state = None

        @callable()
        async def init(self, i: int) -> None:
            self.set_state({"i": i, "user": f"user-{i}", "notes": []})

        @callable()
        async def get(self) -> Any:
            return self.state

        @callable()
        async def note(self, i: int) -> int:
            self.sql("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)")
            self.sql("INSERT INTO notes (text) VALUES (?)", f"note {i}: a line of agent memory")
            return i

        @callable()
        async def blob(self, data: str) -> None:
            self.sql("CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, data BLOB)")
            self.sql("INSERT INTO blobs (data) VALUES (?)", bytes.fromhex(data))

    await storage.open()
    host = AgentHost(storage, AgentSettings(max_resident=100_000, hibernate_after=3600))
    host.register(Bench)
    n, ops = args.agents, args.ops
    refs = [AgentRef("bench", "bench", f"a{i}") for i in range(n)]
    for i, ref in enumerate(refs):
        await host.call(ref, "init", [i])
        if i % max(1, n // 10) == 0:
            progress(f"{label}: creating agents", i, n)
    rng = random.Random(7)
    out: dict[str, Any] = {"backend": label}
    payload = b'{"i": 1, "user": "user-1", "notes": ["a small state, as most agents have"]}'
    out["save_state"] = await _timed(ops, lambda i: storage.save_state(refs[i % n].path, payload), server)
    out["load_agent"] = await _timed(ops, lambda i: storage.load_agent(refs[rng.randrange(n)].path), server)
    writer = AgentRef("bench", "bench", "writer")
    await host.call(writer, "note", [0])
    out["sql_insert_turn"] = await _timed(ops, lambda i: host.call(writer, "note", [i]), server)
    out["noop_turn"] = await _timed(ops, lambda i: host.call(writer, "get"), server)
    # wake: a random hibernated agent, then the same call on it resident (the baseline)
    wake: list[float] = []
    warm: list[float] = []
    host.hibernate_idle(0)
    for _ in range(min(ops, n)):
        ref = refs[rng.randrange(n)]
        t = time.perf_counter()
        await host.call(ref, "get")
        wake.append(time.perf_counter() - t)
        t = time.perf_counter()
        await host.call(ref, "get")
        warm.append(time.perf_counter() - t)
        host.hibernate_idle(0)
    w, b = summary_ms(wake), summary_ms(warm)
    out["wake"] = {"p50_ms": w["p50_ms"], "p99_ms": w["p99_ms"]}
    out["resident_call"] = {"p50_ms": b["p50_ms"], "p99_ms": b["p99_ms"]}
    # per MB of agent SQL: ship a 1 MB row through the output gate; rebuild the file
    mb = os.urandom(2**20).hex()
    big = AgentRef("bench", "bench", "big")
    t = time.perf_counter()
    for _ in range(4):
        await host.call(big, "blob", [mb])
    out["sql_write_per_mb_ms"] = round((time.perf_counter() - t) / 4 * 1000, 2)
    host.hibernate_idle(0)
    restore = getattr(storage, "open_agent_sql", None)
    from myriad.storage.postgres._sqlfile import local_file

    if hasattr(storage, "url") and restore is not None:
        local_file(storage.data_dir, big.path, remove=True)  # an empty machine
        t = time.perf_counter()
        sql = await restore(big.path)
        out["sql_restore_per_mb_ms"] = round((time.perf_counter() - t) / 4 * 1000, 2)
        sql.close()
    else:
        out["sql_restore_per_mb_ms"] = float("nan")  # a local file: nothing to restore
    out.update(await _door_stores(storage, ops, server))
    await host.stop()
    await storage.close()
    out["budget"] = await _budget(ledger_url, ops, server)
    return out


async def _door_stores(storage: Any, ops: int, server: _ServerCPU) -> dict[str, Any]:
    """What the stores the doors share cost per request, as the doors call them: a user's
    first request to a new agent (owner lookup, the agent's row, the claim), another
    machine's first check of an existing agent's owner (nothing cached there yet), and a
    stored response written before its answer is released, then read back by another
    machine (``previous_response_id``). On PostgreSQL each goes to a worker thread."""
    from myriad.agents import AgentRef
    from myriad.identity import KeyStore, OwnerStore, Principal
    from myriad.models.responses import PostgresResponseStore, SQLiteResponseStore, StoredResponse
    from myriad.server.ownership import Owners

    url = getattr(storage, "url", None)
    keys = KeyStore(storage.data_dir / "door-stores", url)
    if url:
        owners, other = (Owners(OwnerStore.local(None), OwnerStore(keys.db), blocking=True) for _ in range(2))
        store: Any = PostgresResponseStore(url, migrate=True)
        reader: Any = PostgresResponseStore(url)
    else:
        shared = OwnerStore.local(storage.data_dir / "owners.db")
        owners, other = Owners(shared), Owners(shared)
        store = reader = SQLiteResponseStore(storage.data_dir / "responses.db")
    alice = Principal("bench", "k", frozenset({"agents"}), kind="token", user="alice")  # confined to her agents
    out: dict[str, Any] = {}
    out["owner_first_touch"] = await _timed(
        ops, lambda i: owners.require_agent(alice, AgentRef("bench", "bench", f"owned-{i}"), storage), server)
    out["owner_check_elsewhere"] = await _timed(
        ops, lambda i: other.agent_owner("bench", f"bench/bench/owned-{i}"), server)

    def stored(i: int) -> Any:
        return StoredResponse(response={"id": f"resp_{i}", "output": []}, input_items=[{"type": "message", "id": f"m{i}"}],
                              conversation=[{"type": "message", "id": f"m{i}", "content": "a line of conversation"}])

    async def keep(i: int) -> None:  # what Responses does before releasing the answer
        if url:
            await asyncio.to_thread(store.put_now, "bench", stored(i))
        else:
            store.put("bench", stored(i))

    out["response_keep"] = await _timed(ops, keep, server)
    if not url:
        store.flush()
    out["response_read_elsewhere"] = await _timed(
        ops, (lambda i: asyncio.to_thread(reader.get, "bench", f"resp_{i}")) if url
        else (lambda i: _now(reader.get("bench", f"resp_{i}"))), server)
    for closeable in {id(store): store, id(reader): reader}.values():
        closeable.close()
    keys.close()
    return out


async def _now(value: Any) -> Any:
    return value


async def _budget(url: str, ops: int, server: _ServerCPU) -> dict[str, float]:
    """A model call's admission: reserve against a budget, then commit the actual usage."""
    from myriad.bench.metering import PRICES
    from myriad.metering import Meter, Subject, Usage

    meter = Meter.open(url)
    meter.ensure_prices(dict(PRICES))
    subject = Subject("bench", "u1")
    est = Usage.tokens_of("small", input=1000, output=500)

    async def call(i: int) -> None:
        async with meter.reserve(subject, est) as res:
            res.commit(Usage.tokens_of("small", input=100, output=10))

    try:
        return await _timed(ops, call, server)
    finally:
        await meter.aclose()


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from myriad.bench.report import print_table
    from myriad.storage import PostgresStorage, SQLiteStorage

    tmp = Path(tempfile.mkdtemp(prefix="myriad-bench-storage-"))
    server = None
    url = args.database
    pg_data: Path | None = None
    if not url:
        from myriad.bench._postgres import PostgresServer

        server = PostgresServer().start()  # fsync on: commits really wait for the disk
        pg_data = server.data
    try:
        cpu = _ServerCPU(pg_data)
        none = _ServerCPU(None)
        results = []
        results.append(await _one_backend("sqlite", SQLiteStorage(tmp / "sqlite"),
                                          f"sqlite:///{tmp / 'sqlite' / 'metering.db'}", args, none))
        results.append(await _one_backend("sqlite fsync", SQLiteStorage(tmp / "sqlite-fsync", durable_fsync=True),
                                          f"sqlite:///{tmp / 'sqlite-fsync' / 'metering.db'}", args, none))
        for sc in ("on", "off"):
            db = server.create_database() if server is not None else url
            results.append(await _one_backend(f"postgres sc={sc}", PostgresStorage(
                db, tmp / f"pg-{sc}", pool_size=4, synchronous_commit=sc), db, args, cpu))
    finally:
        if server is not None:
            server.destroy()
        shutil.rmtree(tmp, ignore_errors=True)

    labels = [r["backend"] for r in results]
    rows: list[list[Any]] = []
    for op, what in [("save_state", "save_state p50 / p99 ms"), ("load_agent", "load_agent p50 / p99 ms"),
                     ("sql_insert_turn", "turn with 1 SQL insert p50 / p99 ms"),
                     ("noop_turn", "baseline: turn, no writes p50 / p99 ms"),
                     ("wake", "wake hibernated + call p50 / p99 ms"),
                     ("resident_call", "baseline: resident call p50 / p99 ms"),
                     ("budget", "budget reserve + commit p50 / p99 ms"),
                     ("owner_first_touch", "door: user's first request to a new agent p50 / p99 ms"),
                     ("owner_check_elsewhere", "door: agent owner, first check on a machine p50 / p99 ms"),
                     ("response_keep", "door: keep a response before its answer p50 / p99 ms"),
                     ("response_read_elsewhere", "door: read a stored response p50 / p99 ms")]:
        rows.append([what, *[f"{r[op]['p50_ms']:.3f} / {r[op]['p99_ms']:.3f}" for r in results]])
    for op in ("save_state", "load_agent", "sql_insert_turn", "budget"):
        rows.append([f"{op} CPU ms/op (this process)", *[r[op]["cpu_ms"] for r in results]])
    for op in ("save_state", "load_agent", "sql_insert_turn", "budget"):
        rows.append([f"{op} CPU ms/op (PostgreSQL)", *[r[op]["db_cpu_ms"] for r in results]])
    rows.append(["agent SQL: write 1 MB row, ms", *[r["sql_write_per_mb_ms"] for r in results]])
    rows.append(["agent SQL: rebuild on empty machine, ms/MB", *[r["sql_restore_per_mb_ms"] for r in results]])
    print_table(f"storage: {args.ops:,} ops each, {args.agents:,} agents per backend"
                + ("" if server is None else " (PostgreSQL: a throwaway server on loopback, fsync on)"),
                ["measure", *labels], rows)
    pg_on = next(r for r in results if r["backend"] == "postgres sc=on")
    pg_off = next(r for r in results if r["backend"] == "postgres sc=off")
    print(f"targets: PostgreSQL state write p50 <= 1 ms (sc=on {pg_on['save_state']['p50_ms']:.3f}, "
          f"sc=off {pg_off['save_state']['p50_ms']:.3f}); wake p50 <= 2 ms (sc=on {pg_on['wake']['p50_ms']:.3f})\n")
    load = os.getloadavg()[0]
    print(f"machine load average during the run: {load:.1f} on {os.cpu_count()} CPUs (a shared machine: "
          "compare columns, not runs)\n")
    return {"bench": "storage", "ops": args.ops, "agents": args.agents, "load_avg": round(load, 2),
            "results": results}
