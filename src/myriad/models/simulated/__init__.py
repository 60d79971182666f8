"""The simulated OpenAI-compatible model upstream (clearly labelled as simulated).

Deterministic replies and embeddings, configurable latency / time to first token /
token rate, and failures on demand (500s, stalls, 429 with Retry-After). Used by
tests, benchmarks, examples, and by ``myriad serve`` when no real provider is
configured. See :func:`start_simulated_upstream`.
"""

from myriad.models.simulated._engine import FINGERPRINT, Fault, Profile, embed_text
from myriad.models.simulated.app import SimulatedConfig, SimulatedUpstream
from myriad.models.simulated.runner import UpstreamHandle, start_simulated_upstream

__all__ = [
    "FINGERPRINT",
    "Fault",
    "Profile",
    "SimulatedConfig",
    "SimulatedUpstream",
    "UpstreamHandle",
    "embed_text",
    "start_simulated_upstream",
]
