"""Sandboxes: V8 isolates for Code Mode, bubblewrap containers for coding agents.

One API over both tiers (see README.md in this directory)::

    sandboxes = Sandboxes(settings.sandbox, data_dir=settings.data_dir)
    box = await sandboxes.open(needs={"tools"}, tools=[get_weather])       # isolate
    res = await box.run("return await tools.get_weather({city: 'Oslo'})")
    dev = await sandboxes.open(needs={"filesystem", "binaries"}, limits=Limits(memory_mb=256))  # container
    await dev.exec("git --version")

Importing this package does nothing; mini-racer and bubblewrap are touched only
when a sandbox of their tier is first opened.
"""

from __future__ import annotations

from myriad.sandbox.container import ContainerSandbox, ContainerTier, ProcessInfo
from myriad.sandbox.egress import EgressHook, EgressPolicy, EgressProxy, EgressRequest
from myriad.sandbox.events import EventKind, Hooks, SandboxEvent, SandboxHook
from myriad.sandbox.files import FileInfo
from myriad.sandbox.interface import CAPABILITIES, Limits, RunResult, Sandbox, SandboxInfo, Tier
from myriad.sandbox.isolate import IsolateSandbox, IsolateTier
from myriad.sandbox.policy import TIERS, Sandboxes, Snapshot
from myriad.sandbox.tools import Tool, render_typescript, tool

__all__ = [
    "CAPABILITIES",
    "ContainerSandbox",
    "ContainerTier",
    "EgressHook",
    "EgressPolicy",
    "EgressProxy",
    "EgressRequest",
    "EventKind",
    "FileInfo",
    "Hooks",
    "IsolateSandbox",
    "IsolateTier",
    "Limits",
    "ProcessInfo",
    "RunResult",
    "Sandbox",
    "SandboxEvent",
    "SandboxHook",
    "SandboxInfo",
    "Sandboxes",
    "Snapshot",
    "TIERS",
    "Tier",
    "Tool",
    "render_typescript",
    "tool",
]
