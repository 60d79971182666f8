"""Log correlation: every ``logging`` record carries the current trace and span ids.

``install_log_correlation`` wraps the log record factory (the same technique as
OpenTelemetry's logging instrumentation) so each record gets ``otelTraceID``,
``otelSpanID`` and ``otelTraceSampled``; a format string can use them
(``%(otelTraceID)s``). It also attaches the store's handler to the root logger so
recent warnings and errors show up on the dashboard next to their trace.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from opentelemetry import trace

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] [trace_id=%(otelTraceID)s span_id=%(otelSpanID)s] %(message)s"
"""A format that shows the correlation ids."""


def install_log_correlation(store: Any = None, level: int = logging.WARNING) -> Callable[[], None]:
    """Install the record factory (and the store's handler); returns the undo function."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.otelTraceID = format(ctx.trace_id, "032x")
            record.otelSpanID = format(ctx.span_id, "016x")
            record.otelTraceSampled = ctx.trace_flags.sampled
        else:
            record.otelTraceID = "0"
            record.otelSpanID = "0"
            record.otelTraceSampled = False
        return record

    logging.setLogRecordFactory(factory)
    handler = store.log_handler(level) if store is not None else None
    if handler is not None:
        logging.getLogger().addHandler(handler)

    def undo() -> None:
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous)
        if handler is not None:
            logging.getLogger().removeHandler(handler)

    return undo


__all__ = ["install_log_correlation", "LOG_FORMAT"]
