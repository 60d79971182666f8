"""The model gateway: providers, routing, fallbacks, streaming, embeddings.

Public surface::

    Gateway            route chat / stream / embed to deployments (one per process)
    GatewayConfig      the TOML deployment file, validated
    ModelsClient       what an agent holds as ``self.models``
    ChatResult, ChatChunk, EmbeddingResult, Usage, UsageRecord
    Provider, register_provider, register_strategy

The simulated upstream lives in ``myriad.models.simulated`` (imported on demand).
"""

from myriad.models.client import ModelsClient
from myriad.models.config import Deployment, GatewayConfig, simulated_config
from myriad.models.gateway import Gateway, VirtualModel
from myriad.models.providers import Provider, register_provider
from myriad.models.routing import register_strategy
from myriad.models.types import ChatChunk, ChatResult, EmbeddingResult, Usage, UsageRecord

__all__ = [
    "ChatChunk",
    "ChatResult",
    "Deployment",
    "EmbeddingResult",
    "Gateway",
    "GatewayConfig",
    "ModelsClient",
    "Provider",
    "Usage",
    "UsageRecord",
    "VirtualModel",
    "register_provider",
    "register_strategy",
    "simulated_config",
]
