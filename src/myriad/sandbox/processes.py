"""Process plumbing of container sandboxes: output capture, background process
records, and the small async helpers around a bwrap child."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any

from myriad.sandbox.egress import Attachment
from myriad.sandbox.interface import OutputCallback


@dataclass
class ProcessInfo:
    """A background process as the API shows it."""

    id: str
    command: list[str]
    status: str  # running | exited | killed
    exit_code: int | None
    started_at: float
    ended_at: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Capture:
    """Collects one output stream up to a limit (the head, or the tail for logs)."""

    def __init__(self, limit: int, keep_tail: bool = False) -> None:
        self.limit = limit
        self.keep_tail = keep_tail
        self.buf = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> bytes:
        """Store ``chunk``; return the part that fitted (what a streaming caller sees)."""
        if self.keep_tail:
            self.buf += chunk
            if len(self.buf) > self.limit:
                del self.buf[: len(self.buf) - self.limit]
                self.truncated = True
            return chunk
        room = self.limit - len(self.buf)
        if room <= 0:
            self.truncated = True
            return b""
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[:room]
        self.buf += chunk
        return chunk

    def text(self) -> str:
        return self.buf.decode(errors="replace")


class BackgroundProcess:
    def __init__(self, pid: str, argv: list[str], proc: asyncio.subprocess.Process, attachment: Attachment | None, limit: int) -> None:
        self.id = pid
        self.argv = argv
        self.proc = proc
        self.attachment = attachment
        self.stdout = Capture(limit, keep_tail=True)
        self.stderr = Capture(limit, keep_tail=True)
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.killed = False
        self.task: asyncio.Task[None] | None = None

    def info(self) -> ProcessInfo:
        code = self.proc.returncode
        status = "running" if code is None else ("killed" if self.killed else "exited")
        return ProcessInfo(self.id, self.argv, status, code, self.started_at, self.ended_at)


async def pump(stream: asyncio.StreamReader | None, capture: Capture, name: str, on_output: OutputCallback | None) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        kept = capture.add(chunk)
        if on_output is not None and kept:
            res = on_output(name, kept)
            if asyncio.iscoroutine(res):
                await res


async def read_pipe(fd: int) -> bytes:
    """Read a pipe to EOF on the event loop (no thread hop); closes ``fd``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
    try:
        return await reader.read()
    finally:
        transport.close()


async def feed(proc: asyncio.subprocess.Process, data: bytes | str | None) -> None:
    if data is None or proc.stdin is None:
        return
    try:
        proc.stdin.write(data.encode() if isinstance(data, str) else data)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        proc.stdin.close()


def kill(proc: asyncio.subprocess.Process) -> None:
    # SIGKILL the bwrap monitor and its process group; --die-with-parent takes the
    # sandbox's pid 1 with it, and the kernel kills the rest of that pid namespace.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


__all__ = ["ProcessInfo", "Capture", "BackgroundProcess", "pump", "read_pipe", "feed", "kill"]
