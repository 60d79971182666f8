"""Micro-batching: concurrent embedding requests share one model call.

A model call on a batch of 32 short texts costs little more than on one, so when
many agents embed at once their texts go through the model together, in a worker
thread that keeps the event loop free while torch computes. By default a batch is
whatever queued while the previous batch was computing (no added latency for a
lone request); ``max_wait > 0`` also waits that long for company.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

EncodeFn = Callable[[list[str]], Sequence[Sequence[float]]]


class MicroBatcher:
    """Queue texts from many callers; encode them in batches on one thread."""

    def __init__(self, encode: EncodeFn, *, max_batch: int = 64, max_wait: float = 0.0) -> None:
        self.encode = encode
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batches = 0
        """How many model calls were made (tests and benchmarks read this)."""
        self._queue: asyncio.Queue[tuple[list[str], asyncio.Future[list[list[float]]]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="myriad-embed")

    async def submit(self, texts: list[str]) -> list[list[float]]:
        """Vectors for ``texts``, computed in a batch with whatever else is queued."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(), name="myriad-embed-batcher")
        fut: asyncio.Future[list[list[float]]] = loop.create_future()
        assert self._queue is not None
        self._queue.put_nowait((texts, fut))
        return await fut

    async def _run(self) -> None:
        queue = self._queue
        assert queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await queue.get()
            items = [first]
            n = len(first[0])
            # Whatever queued while the last batch computed joins this one at no cost.
            while n < self.max_batch and not queue.empty():
                item = queue.get_nowait()
                items.append(item)
                n += len(item[0])
            deadline = loop.time() + self.max_wait
            while n < self.max_batch and self.max_wait > 0:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                items.append(item)
                n += len(item[0])
            texts = [t for ts, _ in items for t in ts]
            try:
                vectors = await loop.run_in_executor(self._pool, self.encode, texts)
                self.batches += 1
            except BaseException as e:  # hand the failure to every waiting caller
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                if isinstance(e, asyncio.CancelledError):
                    raise
                continue
            i = 0
            for ts, fut in items:
                if not fut.done():
                    fut.set_result([list(v) for v in vectors[i:i + len(ts)]])
                i += len(ts)

    async def aclose(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, RuntimeError):
                pass
        self._worker = None
        self._pool.shutdown(wait=False)


__all__ = ["MicroBatcher"]
