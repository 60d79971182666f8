"""Benchmarks: ``myriad bench <name>``.

Each benchmark is a module with ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> dict``; it measures its baseline in the same run, prints a table a
person can read (``myriad.bench.report``) and returns the result that the CLI prints
as one JSON line. Register a new one by adding it to ``BENCHES``.
"""

from __future__ import annotations

BENCHES: dict[str, str] = {
    "hibernation": "myriad.bench.hibernation",
    "density": "myriad.bench.density",
    "metering": "myriad.bench.metering",
    "sandbox": "myriad.bench.sandbox",
    "gateway": "myriad.bench.gateway",
    "identity": "myriad.bench.identity",
    "telemetry": "myriad.bench.telemetry",
    "storage": "myriad.bench.storage",
    "mcp": "myriad.bench.mcp",
    "chat": "myriad.bench.chat",
    "scale": "myriad.bench.scale",
    "agents": "myriad.bench.agents",
}

__all__ = ["BENCHES"]
