"""Pre-aggregating histograms for the hot path.

The OpenTelemetry Python SDK validates and hashes the attributes of every
measurement, for every reader: about 20 us per ``Histogram.record`` on this machine,
and a turn records ten of them. ``FastHistogram`` has the API's ``record(amount,
attributes)`` shape but only queues the measurement (~0.1 us); the queue is folded in
batches into per-attribute-set explicit-bucket aggregates (a dict lookup and a bisect
per measurement) on the span pump's thread. At export time ``FastMetrics.to_sdk``
turns the aggregates into the SDK's own ``Metric`` data (cumulative temporality,
the conventions' bucket boundaries), which the metric readers ship with everything
else in the same OTLP request (see ``_setup``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from bisect import bisect_left
from collections import deque
from typing import Any, Mapping, Sequence

log = logging.getLogger("myriad.telemetry")


class FastHistogram:
    """An explicit-bucket histogram aggregated in process (see module docstring).

    ``record`` only queues the measurement (a deque append); the owning ``FastMetrics``
    folds the queue into the aggregates in batches, off the request path (the span
    pump's thread calls ``FastMetrics.fold`` every tick, and every read folds first).
    The attribute mapping handed to ``record`` must not be changed afterwards."""

    __slots__ = ("name", "unit", "description", "bounds", "_points", "_by_items", "_pending", "_owner")

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float],
                 owner: "FastMetrics | None" = None) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = tuple(float(b) for b in bounds)
        # attribute set -> [count, sum, bucket_counts, min, max, attributes]
        self._points: dict[frozenset[Any], list[Any]] = {}
        self._by_items: dict[tuple[Any, ...], list[Any]] = {}
        """The same points by the attributes' items in the order recorded (cheaper to hash)."""
        self._owner = owner if owner is not None else FastMetrics()
        self._pending = self._owner.pending

    def record(self, amount: float, attributes: Mapping[str, Any] | None = None, context: Any = None) -> None:
        self._pending.append((self, amount, attributes))

    def _fold(self, amount: float, attributes: Mapping[str, Any] | None) -> None:
        """Add one measurement (the owner's lock is held)."""
        items = tuple(attributes.items()) if attributes else ()
        p = self._by_items.get(items)
        if p is None:
            key = frozenset(items)
            p = self._points.get(key)
            if p is None:
                p = self._points[key] = [0, 0.0, [0] * (len(self.bounds) + 1), math.inf, -math.inf,
                                         dict(attributes or {})]
            self._by_items[items] = p
        p[0] += 1
        p[1] += amount
        p[2][bisect_left(self.bounds, amount)] += 1
        if amount < p[3]:
            p[3] = amount
        if amount > p[4]:
            p[4] = amount

    def snapshot(self) -> list[tuple[dict[str, Any], int, float, list[int], float, float]]:
        """(attributes, count, sum, bucket_counts, min, max) per attribute set."""
        owner = self._owner
        owner.fold()
        with owner.lock:
            return [(dict(p[5]), p[0], p[1], list(p[2]), p[3], p[4]) for p in self._points.values()]


class FastMetrics:
    """The set of fast histograms of one ``Telemetry``, and their queue of measurements."""

    def __init__(self) -> None:
        self.histograms: list[FastHistogram] = []
        self.start_ns = time.time_ns()
        self.pending: deque[tuple[FastHistogram, float, Mapping[str, Any] | None]] = deque()
        self.lock = threading.Lock()

    def histogram(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> FastHistogram:
        h = FastHistogram(name, unit, description, bounds, self)
        self.histograms.append(h)
        return h

    def fold(self) -> None:
        """Fold every queued measurement into the aggregates."""
        pending = self.pending
        if not pending:
            return
        pop = pending.popleft
        with self.lock:
            while True:
                try:
                    h, amount, attributes = pop()
                except IndexError:
                    break
                try:
                    h._fold(amount, attributes)
                except Exception:  # one bad measurement (unhashable attributes) must not stop the rest
                    log.warning("dropped a measurement of %s with unhashable attributes", h.name)

    def snapshot(self) -> dict[str, Any]:
        """Same shape as ``metrics_snapshot``: ``{name: {"unit", "points": [...]}}``."""
        out: dict[str, Any] = {}
        for h in self.histograms:
            points = [{"attributes": a, "count": c, "sum": s, "bounds": list(h.bounds), "buckets": b,
                       "min": lo, "max": hi} for a, c, s, b, lo, hi in h.snapshot()]
            if points:
                out[h.name] = {"unit": h.unit, "points": points}
        return out

    def to_sdk(self) -> list[Any]:
        """The aggregates as SDK ``Metric`` objects (cumulative), for an exporter."""
        from opentelemetry.sdk.metrics.export import AggregationTemporality, Histogram, HistogramDataPoint, Metric

        now = time.time_ns()
        metrics = []
        for h in self.histograms:
            points = [HistogramDataPoint(attributes=a, start_time_unix_nano=self.start_ns, time_unix_nano=now,
                                         count=c, sum=s, bucket_counts=b, explicit_bounds=list(h.bounds),
                                         min=lo, max=hi)
                      for a, c, s, b, lo, hi in h.snapshot()]
            if points:
                metrics.append(Metric(name=h.name, description=h.description, unit=h.unit,
                                      data=Histogram(data_points=points,
                                                     aggregation_temporality=AggregationTemporality.CUMULATIVE)))
        return metrics


def merge_into(metrics_data: Any, fast: FastMetrics, resource: Any, scope_name: str, schema_url: str) -> Any:
    """``metrics_data`` (from the SDK) plus the fast histograms as one more scope."""
    from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    extra = fast.to_sdk()
    if not extra:
        return metrics_data
    rms = list(metrics_data.resource_metrics) if metrics_data is not None else []
    if not rms:
        scope = ScopeMetrics(scope=InstrumentationScope(scope_name, schema_url=schema_url), metrics=extra,
                             schema_url=schema_url)
        return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope],
                                                             schema_url=schema_url)])
    first = rms[0]
    scopes = list(first.scope_metrics)
    # one ScopeMetrics per scope: exporters group by scope, a second one would replace the first
    for i, sm in enumerate(scopes):
        if sm.scope.name == scope_name:
            scopes[i] = ScopeMetrics(scope=sm.scope, metrics=[*sm.metrics, *extra], schema_url=sm.schema_url)
            break
    else:
        scopes.append(ScopeMetrics(scope=InstrumentationScope(scope_name, schema_url=schema_url), metrics=extra,
                                   schema_url=schema_url))
    rms[0] = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
    return MetricsData(resource_metrics=rms)


__all__ = ["FastHistogram", "FastMetrics", "merge_into"]
