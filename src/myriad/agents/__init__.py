"""The agent runtime: ``Agent``, ``@callable``, and the ``AgentHost`` that runs
instances one turn at a time, persists their state, and hibernates them.

May import: storage, settings, errors (and, through the host's slots, whatever
model gateway / sandbox manager objects it is given).
"""

from myriad.agents.agent import Agent, StreamingResponse, callable
from myriad.agents.connection import Connection, Transport
from myriad.agents.handle import AgentHandle
from myriad.agents.host import AgentHost, TurnInfo
from myriad.agents.naming import AgentRef, kebab, validate_name
from myriad.agents.protocol import RpcError
from myriad.agents.schedules import Schedule

__all__ = [
    "Agent",
    "AgentHandle",
    "AgentHost",
    "AgentRef",
    "Connection",
    "RpcError",
    "Schedule",
    "StreamingResponse",
    "Transport",
    "TurnInfo",
    "callable",
    "kebab",
    "validate_name",
]
