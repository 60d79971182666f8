"""Metering agent turns: turn middleware of the host (like telemetry's).

``AgentHost(instrumentation=[..., TurnMeter(counter)])``: every turn adds one
``agent.turns`` to the agent's subject in a ``UsageCounter`` (no I/O on the turn's
path); the counter writes them to the ledger as idempotent events every few seconds.
"""

from __future__ import annotations

from typing import Any

from myriad.metering._counter import UsageCounter
from myriad.metering._events import Resources, Subject

class TurnMeter:
    """Counts each agent turn (failed ones too) for the agent that ran it."""

    def __init__(self, counter: UsageCounter) -> None:
        self.counter = counter

    def enter(self, info: Any) -> None:
        return None

    def exit(self, info: Any) -> None:
        ref = info.ref
        self.counter.add(Subject(ref.tenant, agent=ref.path), Resources.AGENT_TURNS)


__all__ = ["TurnMeter"]
