"""Providers by name. Modules are imported only when a deployment uses them, so a
provider with heavy dependencies (the local embedder needs torch) costs nothing
until configured.

Register another with ``register_provider("name", factory_or_"module:attr")``.
"""

from __future__ import annotations

import importlib

from myriad.errors import ConfigError
from myriad.models.config import Deployment
from myriad.models.providers.interface import Provider, ProviderFactory

PROVIDERS: dict[str, ProviderFactory | str] = {
    "openai": "myriad.models.providers.openai:OpenAIProvider",
    "anthropic": "myriad.models.providers.anthropic:AnthropicProvider",
    "simulated": "myriad.models.providers.simulated:SimulatedProvider",
    "local": "myriad.models.providers.local:LocalEmbeddingProvider",
}
"""name -> factory, or ``"module:attr"`` imported on first use."""


def register_provider(name: str, factory: ProviderFactory | str) -> None:
    """Make ``provider = "name"`` usable in deployment files."""
    PROVIDERS[name] = factory


def create_provider(deployment: Deployment, api_key: str | None) -> Provider:
    """Build the provider a deployment names."""
    entry = PROVIDERS.get(deployment.provider)
    if entry is None:
        raise ConfigError(f"deployment {deployment.name!r}: unknown provider {deployment.provider!r}")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        factory: ProviderFactory = getattr(importlib.import_module(module), attr)
        PROVIDERS[deployment.provider] = entry = factory
    return entry(deployment, api_key)


__all__ = ["PROVIDERS", "Provider", "ProviderFactory", "register_provider", "create_provider"]
