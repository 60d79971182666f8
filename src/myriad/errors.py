"""Myriad's one exception tree.

Every error Myriad raises on purpose is a ``MyriadError``; third-party errors are
translated where they enter. Each class carries the HTTP status and the stable
``code`` that the API puts in its JSON error body, so a room raises and the server
answers without a mapping table::

    MyriadError                      500 internal_error
    ├── ConfigError                  500 config_error      settings / config files
    ├── InvalidRequest               400 invalid_request   bad input from a client
    │   ├── InvalidName              400 invalid_name
    │   ├── UnknownAgent             400 unknown_agent
    │   └── PayloadTooLarge          413 payload_too_large
    ├── AuthenticationError          401 unauthenticated   missing / bad / expired key
    ├── PermissionDenied             403 forbidden         a scope or tenant does not cover it
    ├── NotFound                     404 not_found
    ├── Conflict                     409 conflict
    │   └── AgentElsewhere           409 agent_moved          cluster: another shard holds the agent
    ├── BudgetExceeded               402 budget_exceeded
    ├── RateLimited                  429 rate_limited
    │   └── ConcurrencyLimited       429 concurrency_limited
    ├── StorageError                 500 storage_error
    │   ├── DatabaseUnavailable      503 database_unavailable  refused / cut / restarting (retry)
    │   └── FencedOut                409 fenced_out           a write lost its fence (another owner)
    ├── AgentError                   500 agent_error       an agent method failed
    ├── McpError                     502 mcp_error          a remote MCP server failed or refused
    │   └── McpTimeout               504 mcp_timeout
    ├── SandboxError                 500 sandbox_error
    │   ├── SandboxUnavailable       503 sandbox_unavailable  the machine cannot sandbox
    │   ├── TierUnavailable          400 tier_unavailable     needs the tier cannot meet
    │   ├── SandboxTimeout           408 sandbox_timeout
    │   └── SandboxLimitExceeded     422 sandbox_limit
    └── ModelError                   502 model_error
        ├── UpstreamError            502 upstream_error       5xx / connection / bad reply (retryable)
        │   ├── UpstreamTimeout      504 upstream_timeout
        │   └── UpstreamRateLimited  429 upstream_rate_limited   carries retry_after
        ├── UpstreamRejected         400 upstream_rejected    the provider refused the request (4xx)
        │   └── ContextWindowExceeded 400 context_length_exceeded
        ├── UnknownModel             404 model_not_found
        └── NoDeploymentAvailable    503 no_deployment

Rooms may subclass these; they must not invent parallel trees.
"""

from __future__ import annotations

from typing import Any


class MyriadError(Exception):
    """Base of every error Myriad raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        """The body the HTTP API sends: ``{"error": {"code", "message", ...details}}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.details)
        return {"error": body}


class ConfigError(MyriadError):
    code = "config_error"


class InvalidRequest(MyriadError):
    status = 400
    code = "invalid_request"


class InvalidName(InvalidRequest):
    code = "invalid_name"


class UnknownAgent(InvalidRequest):
    code = "unknown_agent"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "payload_too_large"


class AuthenticationError(MyriadError):
    status = 401
    code = "unauthenticated"


class PermissionDenied(MyriadError):
    status = 403
    code = "forbidden"


class NotFound(MyriadError):
    status = 404
    code = "not_found"


class Conflict(MyriadError):
    status = 409
    code = "conflict"


class AgentElsewhere(Conflict):
    """Cluster mode: this process does not hold the agent (another shard does, or this
    one is draining or lost its lease); the front door routes the request there."""

    code = "agent_moved"


class BudgetExceeded(MyriadError):
    status = 402
    code = "budget_exceeded"


class RateLimited(MyriadError):
    status = 429
    code = "rate_limited"


class ConcurrencyLimited(RateLimited):
    code = "concurrency_limited"


class StorageError(MyriadError):
    code = "storage_error"


class DatabaseUnavailable(StorageError):
    """The database cannot be reached right now (refused, restarting, pool exhausted)."""

    status = 503
    code = "database_unavailable"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={"retry_after": 1, **(details or {})})


class FencedOut(StorageError):
    """A fenced write found its fence no longer holding: this process no longer owns
    the agent (another activation took over), so the write was not made."""

    status = 409
    code = "fenced_out"


class AgentError(MyriadError):
    code = "agent_error"


class McpError(MyriadError):
    status = 502
    code = "mcp_error"


class McpTimeout(McpError):
    status = 504
    code = "mcp_timeout"


class SandboxError(MyriadError):
    code = "sandbox_error"


class SandboxUnavailable(SandboxError):
    status = 503
    code = "sandbox_unavailable"


class TierUnavailable(SandboxError):
    status = 400
    code = "tier_unavailable"


class SandboxTimeout(SandboxError):
    status = 408
    code = "sandbox_timeout"


class SandboxLimitExceeded(SandboxError):
    status = 422
    code = "sandbox_limit"


class ModelError(MyriadError):
    status = 502
    code = "model_error"


class UpstreamError(ModelError):
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamRateLimited(UpstreamError):
    """The provider said 429; ``retry_after`` (seconds) is what it asked us to wait."""

    status = 429
    code = "upstream_rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class UpstreamRejected(ModelError):
    """The provider refused the request itself (a 4xx other than 408/429): retrying
    the same request elsewhere will not help, except for a context-window overflow."""

    status = 400
    code = "upstream_rejected"


class ContextWindowExceeded(UpstreamRejected):
    code = "context_length_exceeded"


class UnknownModel(ModelError):
    status = 404
    code = "model_not_found"


class NoDeploymentAvailable(ModelError):
    status = 503
    code = "no_deployment"


__all__ = [
    "MyriadError",
    "ConfigError",
    "InvalidRequest",
    "InvalidName",
    "UnknownAgent",
    "PayloadTooLarge",
    "AuthenticationError",
    "PermissionDenied",
    "NotFound",
    "Conflict",
    "AgentElsewhere",
    "BudgetExceeded",
    "RateLimited",
    "ConcurrencyLimited",
    "StorageError",
    "DatabaseUnavailable",
    "FencedOut",
    "AgentError",
    "McpError",
    "McpTimeout",
    "SandboxError",
    "SandboxUnavailable",
    "TierUnavailable",
    "SandboxTimeout",
    "SandboxLimitExceeded",
    "ModelError",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "ContextWindowExceeded",
    "UnknownModel",
    "NoDeploymentAvailable",
]
