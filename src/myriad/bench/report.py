"""Printing benchmark results: a readable table and one JSON line."""

from __future__ import annotations

import json
import math
import statistics
import sys
from typing import Any, Iterable, Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds from samples in seconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "p50_ms": round(percentile(ms, 50), 4),
        "p90_ms": round(percentile(ms, 90), 4),
        "p99_ms": round(percentile(ms, 99), 4),
        "max_ms": round(max(ms), 4) if ms else math.nan,
        "mean_ms": round(statistics.fmean(ms), 4) if ms else math.nan,
        "n": len(ms),
    }


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]], out: Any = None) -> None:
    """Print an aligned text table with a title."""
    out = out or sys.stdout
    rows = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    print(f"\n{title}", file=out)
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)), file=out)
    out.flush()


def emit_json(result: dict[str, Any], out: Any = None) -> None:
    """Print the one machine-readable line."""
    out = out or sys.stdout
    print(json.dumps(result, sort_keys=True, default=str), file=out)
    out.flush()


def progress(label: str, done: int, total: int, out: Any = None) -> None:
    """A one-line progress bar on stderr (overwritten in place)."""
    out = out or sys.stderr
    width = 30
    frac = 0 if total <= 0 else min(1.0, done / total)
    if not out.isatty():  # logs get a line per 10%, not a carriage-return storm
        tenth = max(1, total // 10)
        if done < total and done % tenth:
            return
        print(f"{label}: {done}/{total}", file=out, flush=True)
        return
    bar = "#" * int(frac * width)
    end = "\n" if done >= total else ""
    print(f"\r{label} [{bar:<{width}}] {done}/{total}", end=end, file=out, flush=True)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        if math.isnan(c):
            return "-"
        return f"{c:,.3f}" if abs(c) < 100 else f"{c:,.0f}"
    if isinstance(c, int):
        return f"{c:,}"
    return str(c)


def _numeric(s: str) -> bool:
    return s.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()


__all__ = ["percentile", "summary_ms", "print_table", "emit_json", "progress"]
