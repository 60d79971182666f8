"""Metering agent turns, by wrapping the host's turn (like telemetry does).

``AgentHost(instrumentation=[..., TurnMeter(counter)])``: every turn adds one
``agent.turns`` to the agent's subject in a ``UsageCounter`` (no I/O on the turn's
path); the counter writes them to the ledger as idempotent events every few seconds.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

from myriad.metering._counter import UsageCounter
from myriad.metering._events import Resources, Subject

T = TypeVar("T")


class TurnMeter:
    """Counts each agent turn (failed ones too) for the agent that ran it."""

    def __init__(self, counter: UsageCounter) -> None:
        self.counter = counter

    def wrap_turn(self, turn: Callable[[Any, Any], Awaitable[T]], host: Any = None
                  ) -> Callable[[Any, Any], Awaitable[T]]:
        add = self.counter.add

        async def metered_turn(slot: Any, body: Any) -> T:
            try:
                return await turn(slot, body)
            finally:
                ref = slot.ref
                add(Subject(ref.tenant, agent=ref.path), Resources.AGENT_TURNS)

        return metered_turn


__all__ = ["TurnMeter"]
