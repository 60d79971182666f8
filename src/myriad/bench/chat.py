"""Chat: what a durable, resumable chat reply costs per chunk.

One host in this process (SQLite storage), one connected client (a transport that
only counts). Each round streams ``--chunks`` UI message chunks:

  chat reply     ChatAgent: each chunk handed to the agent in its own turn, written to
                 the agent's SQL (numbered), then sent as cf_agent_use_chat_response
  rpc stream     baseline in the same run: the same chunks from a streaming @callable
                 (StreamingResponse.send: the output gate, nothing written)
  resume replay  a client ACKing the finished reply: every stored chunk read and sent

Both reply kinds run twice: as a burst (the generator never waits, so the chat reply
writes and sends the waiting chunks in batches) and paced (the generator sleeps
``--pace`` ms between chunks, like a model streaming tokens: one chunk per turn and per
SQL write). Paced rows report host CPU time per chunk, burst rows wall time. The
reply's model is not involved, so the table is the host's cost; ``--rounds`` rounds,
medians quoted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator

DESCRIPTION = __doc__ or ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", type=int, default=500, help="chunks per reply (default 500)")
    parser.add_argument("--rounds", type=int, default=7, help="replies measured per kind (default 7)")
    parser.add_argument("--pace", type=float, default=1.0, help="ms between chunks in the paced rows (default 1)")
    parser.add_argument("--dir", help="data directory (default: a temp dir)")


class _Count:
    def __init__(self) -> None:
        self.frames = 0
        self.done = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.frames += 1
        if '"done": true' in text or '"done":true' in text:
            self.done.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from myriad.agents import AgentHost, AgentRef, Connection, callable
    from myriad.agents.chat import ChatAgent, ChatTurn
    from myriad.bench.report import print_table
    from myriad.settings import AgentSettings
    from myriad.storage import SQLiteStorage

    n = args.chunks
    pace = {"s": 0.0}

    class BenchChat(ChatAgent):
        async def on_chat_message(self, turn: ChatTurn) -> AsyncIterator[dict[str, Any]]:
            yield {"type": "start"}
            yield {"type": "text-start", "id": "t"}
            for i in range(n - 4):
                if pace["s"]:
                    await asyncio.sleep(pace["s"])
                yield {"type": "text-delta", "id": "t", "delta": f"w{i} "}
            yield {"type": "text-end", "id": "t"}
            yield {"type": "finish"}

        @callable(streaming=True)
        async def words(self, stream: Any) -> None:
            for i in range(n):
                if pace["s"]:
                    await asyncio.sleep(pace["s"])
                await stream.send({"type": "text-delta", "id": "t", "delta": f"w{i} "})

    data = Path(args.dir or tempfile.mkdtemp(prefix="myriad-bench-chat-"))
    storage = SQLiteStorage(data)
    opened = getattr(storage, "open", None)
    if opened is not None:
        result = opened()
        if asyncio.iscoroutine(result):
            await result
    host = AgentHost(storage, AgentSettings(hibernate_after=3600))
    host.register(BenchChat)
    await host.start()
    times: dict[str, list[float]] = {k: [] for k in (
        "chat reply (burst, wall)", "rpc stream (burst, wall)", "resume replay (wall)",
        "chat reply (paced, cpu)", "rpc stream (paced, cpu)")}
    body = json.dumps({"messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "go"}]}]})

    async def reply(ref: Any, conn: Any, wire: _Count, clock: Any) -> tuple[float, float]:
        wire.done.clear()
        t0 = clock()
        await host.frame(ref, conn, json.dumps({"type": "cf_agent_use_chat_request", "id": "q" + str(wire.frames),
                                                "init": {"method": "POST", "body": body}}))
        await wire.done.wait()
        chat = clock() - t0
        t0 = clock()
        await host.frame(ref, conn, json.dumps({"type": "rpc", "id": "x", "method": "words", "args": []}))
        return chat, clock() - t0

    try:
        for r in range(args.rounds + 1):  # round 0 warms up
            ref = AgentRef("bench", "bench-chat", f"r{r}")
            wire = _Count()
            conn = Connection("c", wire)
            await host.connect(ref, conn)
            pace["s"] = 0.0
            chat, rpc = await reply(ref, conn, wire, time.perf_counter)
            late = _Count()
            other = Connection("late", late)
            await host.connect(ref, other)
            last = await host.run(ref, _last_request)
            t0 = time.perf_counter()
            await host.frame(ref, other, json.dumps({"type": "cf_agent_stream_resume_ack", "id": last}))
            replay = time.perf_counter() - t0
            if late.frames < n:
                raise RuntimeError(f"replay sent {late.frames} frames, expected {n}+")
            pace["s"] = args.pace / 1000
            chat_cpu, rpc_cpu = await reply(ref, conn, wire, time.process_time)
            if r:
                for k, v in zip(times, (chat, rpc, replay, chat_cpu, rpc_cpu)):
                    times[k].append(v)
    finally:
        await host.stop()
    per = {k: statistics.median(v) / n * 1e6 for k, v in times.items()}
    base = {"chat reply (burst, wall)": "rpc stream (burst, wall)", "rpc stream (burst, wall)": "rpc stream (burst, wall)",
            "resume replay (wall)": "rpc stream (burst, wall)",
            "chat reply (paced, cpu)": "rpc stream (paced, cpu)", "rpc stream (paced, cpu)": "rpc stream (paced, cpu)"}
    rows = [(k, n, round(per[k], 1), round(per[k] / per[base[k]], 2)) for k in times]
    print_table(f"chat: {n} chunks per reply, median of {args.rounds} rounds (one process, pace {args.pace} ms)",
                ["kind", "chunks", "us per chunk", "x rpc stream"], rows)
    return {"bench": "chat", "chunks": n, "rounds": args.rounds, "pace_ms": args.pace,
            "us_per_chunk": {k: round(v, 2) for k, v in per.items()},
            "ratio_burst": round(per["chat reply (burst, wall)"] / per["rpc stream (burst, wall)"], 2),
            "ratio_paced_cpu": round(per["chat reply (paced, cpu)"] / per["rpc stream (paced, cpu)"], 2)}


async def _last_request(agent: Any) -> str:
    rows = agent.sql("SELECT request_id FROM cf_chat_streams ORDER BY created DESC LIMIT 1")
    return str(rows[0]["request_id"])


__all__ = ["DESCRIPTION", "add_arguments", "run"]
