"""The provider protocol: the wire protocol of one kind of model API.

A provider takes and returns OpenAI-shaped dicts, whatever its API speaks (the
Anthropic provider translates both ways), and raises only ``myriad.errors``
classes: ``UpstreamRateLimited`` (with ``retry_after``), ``UpstreamTimeout``,
``UpstreamError`` (retryable elsewhere), ``UpstreamRejected`` /
``ContextWindowExceeded`` (the request itself was refused). Timeouts, retries,
fallbacks and accounting are the gateway's business, not the provider's.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Protocol, TypeGuard, runtime_checkable

from myriad.models.config import Deployment
from myriad.models.types import Usage


@runtime_checkable
class Provider(Protocol):
    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed chat completion (``body["model"]`` is the upstream name)."""
        ...

    def stream(self, body: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        """OpenAI ``chat.completion.chunk`` dicts, in lists of those that arrived
        together (so a relay can write them at once), ending with a usage chunk when
        the provider reports usage."""
        ...

    async def embed(self, model: str, texts: list[str], dimensions: int | None = None
                    ) -> tuple[list[list[float]], Usage]:
        """One vector per text, in order."""
        ...

    async def aclose(self) -> None:
        ...


class ResponsesProvider(Provider, Protocol):
    """A provider whose deployment also speaks the Responses API (``speaks_responses``)."""

    speaks_responses: bool

    async def responses(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed ``POST /responses``: the upstream's response object."""
        ...

    def responses_stream(self, body: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        """A streamed ``POST /responses``: its typed events, in lists of those that arrived together."""
        ...


def speaks_responses_api(provider: Provider) -> TypeGuard[ResponsesProvider]:
    """Whether ``provider`` passes Responses API requests through as they are."""
    return bool(getattr(provider, "speaks_responses", False))


ProviderFactory = Callable[[Deployment, "str | None"], Provider]
"""``factory(deployment, api_key)`` builds a provider; the key is already resolved."""

__all__ = ["Provider", "ProviderFactory", "ResponsesProvider", "speaks_responses_api"]
