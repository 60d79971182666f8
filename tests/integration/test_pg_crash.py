"""PostgreSQL under the server: a machine lost mid-load loses nothing acknowledged, and
a database restart under load gives clear 503s, no hang, and recovers by itself."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.live import LiveServer

AGENTS = "tests.integration.notes_agents"


def _server(data_dir: Path, url: str) -> LiveServer:
    return LiveServer(data_dir, agents=AGENTS, env={"MYRIAD_DATABASE": url, "MYRIAD_STORAGE__CONNECT_TIMEOUT": "2"})


async def _writer(client: httpx.AsyncClient, name: str, acked: dict[str, list[str]], stop: asyncio.Event,
                  errors: list[Any] | None = None) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        text = f"{name}-{i}"
        try:
            r = await client.post(f"/v1/agents/notes/{name}/rpc", json={"method": "add", "args": [text]})
        except httpx.HTTPError as e:
            if errors is None:
                return  # the server died
            errors.append(f"{type(e).__name__}: {e}")  # type: ignore[arg-type]
            await asyncio.sleep(0.05)
            continue
        if r.status_code == 200:
            acked.setdefault(name, []).append(text)
        elif errors is not None:
            errors.append(r.status_code)
            assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable", r.text
            assert r.headers.get("retry-after") == "1"
            await asyncio.sleep(0.05)
        else:
            return


async def test_machine_lost_mid_load_then_fresh_process_with_empty_disk(pg_url: str, tmp_path: Path) -> None:
    first = _server(tmp_path / "machine-a", pg_url).start()
    names = [f"n{i}" for i in range(8)]
    acked: dict[str, list[str]] = {}
    stop = asyncio.Event()
    headers = first.headers()  # keys live in the database too: the other machine accepts it
    async with httpx.AsyncClient(base_url=first.url, headers=headers, timeout=10) as c:
        tasks = [asyncio.create_task(_writer(c, n, acked, stop)) for n in names]
        await asyncio.sleep(1.5 + random.random())
        first.kill9()
        stop.set()
        await asyncio.gather(*tasks)
    assert sum(map(len, acked.values())) > 40, "the load did not get going"

    second = _server(tmp_path / "machine-b", pg_url).start()  # another machine: an empty data dir
    try:
        assert not list((tmp_path / "machine-b").glob("sqlcache/*/*"))
        async with httpx.AsyncClient(base_url=second.url, headers=headers, timeout=10) as c:
            for name, texts in acked.items():
                rows = (await c.post(f"/v1/agents/notes/{name}/rpc", json={"method": "texts", "args": []})).json()
                stored = rows["result"]
                # every acknowledged row is there, in order; at most one more (durable, reply lost)
                assert stored[:len(texts)] == texts, (name, len(stored), len(texts))
                assert len(stored) <= len(texts) + 1
                state = (await c.get(f"/v1/agents/notes/{name}")).json()["state"]
                assert state["n"] == len(stored)
    finally:
        second.stop()


async def test_postgres_restart_under_load_is_503_then_recovers(tmp_path: Path) -> None:
    # its own PostgreSQL server: if a restart ever failed, the session's server (and every
    # test after this one) would not go down with it
    from tests.pg import PostgresServer

    postgres = PostgresServer(fsync=False).start()
    try:
        await _restart_under_load(postgres, postgres.create_database(), tmp_path)
    finally:
        postgres.destroy()


async def _restart_under_load(postgres: Any, pg_url: str, tmp_path: Path) -> None:
    server = _server(tmp_path / "data", pg_url).start()
    names = [f"r{i}" for i in range(6)]
    acked: dict[str, list[str]] = {}
    errors: list[Any] = []
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers(), timeout=15) as c:
            tasks = [asyncio.create_task(_writer(c, n, acked, stop, errors)) for n in names]
            await asyncio.sleep(1.0)
            before = sum(map(len, acked.values()))
            started = time.monotonic()
            await asyncio.to_thread(postgres.stop, "fast")
            await asyncio.sleep(3)  # down long enough for requests to fail, not hang
            for _ in range(600):  # a loaded machine can take a while to finish the shutdown
                if not (postgres.data / "postmaster.pid").exists():
                    break
                await asyncio.sleep(0.1)
            await asyncio.to_thread(postgres.start)
            down = time.monotonic() - started
            recovered = sum(map(len, acked.values()))
            deadline = time.monotonic() + 15
            while sum(map(len, acked.values())) < recovered + 30 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*tasks)  # a hang would show here (client timeout 15 s)
            after = sum(map(len, acked.values()))
            assert before > 10 and after >= recovered + 30, (before, recovered, after)  # recovered by itself
            assert errors and set(errors) <= {503}, errors[:5]
            assert down < 70
            for name, texts in acked.items():
                stored = (await c.post(f"/v1/agents/notes/{name}/rpc", json={"method": "texts", "args": []})).json()
                assert [t for t in stored["result"] if t in set(texts)] == texts  # nothing acknowledged lost
    finally:
        server.stop()
