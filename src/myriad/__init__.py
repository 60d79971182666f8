"""Myriad: durable, addressable, cheap one-to-one AI agents.

Importing ``myriad`` does nothing but define names; the public API is resolved
lazily so that ``import myriad`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from myriad.agents import Agent, Connection, callable
    from myriad.agents.chat import ChatAgent, tool
    from myriad.settings import Settings

_LAZY = {
    "Agent": "myriad.agents",
    "Connection": "myriad.agents",
    "callable": "myriad.agents",
    "ChatAgent": "myriad.agents.chat",
    "tool": "myriad.agents.chat",
    "Settings": "myriad.settings",
}

__all__ = ["Agent", "ChatAgent", "Connection", "Settings", "callable", "tool", "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'myriad' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
