"""What an agent class offers over MCP: tools, resources and prompts, declared in Python.

    class Docs(Agent):
        @mcp.tool()
        async def search(self, query: str, limit: int = 5) -> list[str]:
            \"\"\"Search this user's notes.\"\"\"

        @mcp.resource("notes://recent", mime_type="text/plain")
        async def recent(self) -> str: ...

        @mcp.prompt()
        async def summarize(self, topic: str) -> str: ...

Parameters and descriptions come from type hints and docstrings (the same schema
rules as Code-Mode tools, ``myriad.sandbox.tool``). Each call runs as one turn of the
addressed instance, so state written by a tool is durable before the answer leaves.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, TypeVar

from myriad.sandbox import tool as _code_mode_tool

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_MARK = "__myriad_mcp__"


@dataclass(frozen=True)
class McpTool:
    name: str
    attr: str
    description: str
    parameters: dict[str, Any]
    returns: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class McpResource:
    uri: str
    attr: str
    name: str
    description: str
    mime_type: str


@dataclass(frozen=True)
class McpPrompt:
    name: str
    attr: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Declarations:
    """Everything one agent class offers (empty when it declares nothing)."""

    tools: dict[str, McpTool]
    resources: dict[str, McpResource]
    prompts: dict[str, McpPrompt]
    per_session: bool = False
    """One instance per MCP session at ``/mcp/{agent}`` (``@mcp.per_session``)."""

    def __bool__(self) -> bool:
        return bool(self.tools or self.resources or self.prompts)


def _unbound_view(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` without its ``self`` parameter, for schema extraction."""
    async def view(**kwargs: Any) -> Any:  # never called
        raise NotImplementedError

    functools.update_wrapper(view, fn)
    sig = inspect.signature(fn)
    view.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])  # type: ignore[attr-defined]
    return view


def _check_async(fn: Callable[..., Any], what: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@mcp.{what} method {fn.__qualname__} must be 'async def'")


def tool(*, name: str | None = None, description: str | None = None) -> Callable[[F], F]:
    """Offer an async agent method as an MCP tool (``tools/call``)."""
    def mark(fn: F) -> F:
        _check_async(fn, "tool")
        t = _code_mode_tool(_unbound_view(fn), name=name or fn.__name__, description=description)
        setattr(fn, _MARK, McpTool(t.name, fn.__name__, t.description, t.parameters, t.returns))
        return fn
    return mark


def resource(uri: str, *, name: str | None = None, description: str | None = None,
             mime_type: str = "text/plain") -> Callable[[F], F]:
    """Offer an async agent method (no parameters) as an MCP resource at ``uri``."""
    def mark(fn: F) -> F:
        _check_async(fn, "resource")
        doc = description if description is not None else (inspect.getdoc(fn) or "")
        setattr(fn, _MARK, McpResource(uri, fn.__name__, name or fn.__name__, doc.strip(), mime_type))
        return fn
    return mark


def prompt(*, name: str | None = None, description: str | None = None) -> Callable[[F], F]:
    """Offer an async agent method returning text as an MCP prompt (``prompts/get``)."""
    def mark(fn: F) -> F:
        _check_async(fn, "prompt")
        t = _code_mode_tool(_unbound_view(fn), name=name or fn.__name__, description=description)
        setattr(fn, _MARK, McpPrompt(t.name, fn.__name__, t.description, t.parameters))
        return fn
    return mark


C = TypeVar("C", bound=type)


def per_session(cls: C) -> C:
    """Class decorator: serve the class at ``/mcp/{agent}`` with one new instance per MCP
    session (as Cloudflare's ``McpAgent`` does): ``initialize`` creates the instance and
    answers its id in ``Mcp-Session-Id``, later requests carrying that header reach it,
    ``DELETE`` ends the session and deletes the instance. Instances stay reachable by name
    at ``/mcp/{agent}/mcp-{session id}`` too."""
    setattr(cls, _PER_SESSION, True)
    if "__myriad_mcp_declarations__" in cls.__dict__:  # read before the decorator ran
        delattr(cls, "__myriad_mcp_declarations__")
    return cls


_PER_SESSION = "__myriad_mcp_per_session__"


def declarations(cls: type) -> Declarations:
    """The tools, resources and prompts ``cls`` declares (cached per class)."""
    cached = cls.__dict__.get("__myriad_mcp_declarations__")
    if isinstance(cached, Declarations):
        return cached
    tools: dict[str, McpTool] = {}
    resources: dict[str, McpResource] = {}
    prompts: dict[str, McpPrompt] = {}
    for attr in dir(cls):
        spec = getattr(getattr(cls, attr, None), _MARK, None)
        if isinstance(spec, McpTool):
            tools[spec.name] = spec
        elif isinstance(spec, McpResource):
            resources[spec.uri] = spec
        elif isinstance(spec, McpPrompt):
            prompts[spec.name] = spec
    found = Declarations(tools, resources, prompts, bool(getattr(cls, _PER_SESSION, False)))
    setattr(cls, "__myriad_mcp_declarations__", found)
    return found


__all__ = ["Declarations", "McpPrompt", "McpResource", "McpTool", "declarations", "per_session", "prompt", "resource",
           "tool"]
