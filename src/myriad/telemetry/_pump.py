"""The ``SpanPump``: where finished spans go, off the request path.

A ``FastSpan``'s ``end()`` only appends the span to a deque (and a fast histogram's
``record`` its measurement to another). One daemon thread drains
that deque every ``interval`` seconds (50 ms) in slices: each slice goes into the
local store (one lock for the slice) and to each span processor (the SDK's
``BatchSpanProcessor`` per exporter, which batches, drops when full and exports on
its own thread, so a slow collector never holds up the store); then it folds the
queued measurements into the histograms.

Reads of the store drain the queue first (``TelemetryStore.sync``), so a query sees
every span ended before it, as when the store was written on the request path.

The thread gives up the GIL between slices, so a large backlog is handed over in
steps of ~0.1-0.3 ms rather than one long hold that would stall the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Sequence

log = logging.getLogger("myriad.telemetry")


class SpanPump:
    """Drains ended spans into the store and the processors (see the module docstring)."""

    def __init__(self, queue: deque[Any], store: Any = None, processors: Sequence[Any] = (),
                 interval: float = 0.05, slice_size: int = 64, max_queue: int = 100_000) -> None:
        self.queue = queue
        self.store = store
        self.processors = list(processors)
        self.interval = interval
        self.slice_size = slice_size
        self.max_queue = max_queue
        """Past this many waiting spans the oldest are dropped (a stuck pump must not grow memory)."""
        self.drained = 0
        self.dropped = 0
        self.on_tick: list[Any] = []
        """Also called every tick (the fast histograms' fold)."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="myriad-telemetry-pump", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.drain(yield_gil=True)
                for fn in self.on_tick:
                    fn()
            except Exception:  # pragma: no cover - a broken processor must not stop the pump
                log.exception("telemetry span pump failed")

    def drain(self, yield_gil: bool = False) -> int:
        """Move every span queued so far to the store and the processors; returns how many."""
        queue = self.queue
        if not queue:
            return 0
        moved = 0
        with self._lock:
            excess = len(queue) - self.max_queue
            for _ in range(max(0, excess)):
                queue.popleft()
                self.dropped += 1
            pop = queue.popleft
            store, processors, size = self.store, self.processors, self.slice_size
            while queue:
                batch = []
                try:
                    for _ in range(size):
                        batch.append(pop())
                except IndexError:
                    pass
                if store is not None:
                    store.add_spans(batch)
                for p in processors:
                    on_end = p.on_end
                    for span in batch:
                        on_end(span)
                moved += len(batch)
                if yield_gil and queue:
                    time.sleep(0)
        self.drained += moved
        return moved

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.drain()
        ok = True
        for p in self.processors:
            ok = bool(p.force_flush(timeout_millis)) and ok
        return ok

    def shutdown(self) -> None:
        """Stop the thread, hand over what is queued, shut the processors down."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self.drain()
        for p in self.processors:
            p.shutdown()


class ReadableProcessor:
    """An SDK ``SpanProcessor`` fed from the pump: it gets each span as the SDK's
    ``ReadableSpan`` (``on_start`` is not called: spans are handed over once ended)."""

    def __init__(self, inner: Any, resource: Any, limits: Any = None) -> None:
        self.inner = inner
        self.resource = resource
        self.limits = limits

    def on_end(self, span: Any) -> None:
        from myriad.telemetry._otlp import to_readable

        self.inner.on_end(to_readable(span, self.resource, self.limits))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self.inner.shutdown()


__all__ = ["SpanPump", "ReadableProcessor"]
