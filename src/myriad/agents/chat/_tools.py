"""Server-side tools of a chat agent: ``@tool`` methods, their JSON schemas."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar, get_type_hints

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What ``@tool`` records on a method."""

    name: str
    description: str
    parameters: dict[str, Any]
    needs_approval: bool

    def openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def tool(*, description: str = "", parameters: dict[str, Any] | None = None,
         needs_approval: bool = False) -> Callable[[F], F]:
    """Offer an async method to the model as a tool. Its arguments come from the
    model as keyword arguments; its JSON schema is taken from the type hints unless
    ``parameters`` gives one. ``needs_approval=True`` pauses the reply until the user
    approves or denies the call (``cf_agent_tool_approval``)."""

    def mark(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@tool method {fn.__qualname__} must be 'async def'")
        schema = parameters if parameters is not None else _schema(fn)
        fn.__myriad_tool__ = ToolSpec(fn.__name__, description or inspect.getdoc(fn) or fn.__name__,  # type: ignore[attr-defined]
                                      schema, needs_approval)
        return fn  # type: ignore[return-value]  # mypy loses F through iscoroutinefunction

    return mark


def _schema(fn: Callable[..., Any]) -> dict[str, Any]:
    hints = get_type_hints(fn)
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, param in list(inspect.signature(fn).parameters.items())[1:]:  # skip self
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        json_type = _JSON_TYPES.get(hints.get(name, str), "string")
        props[name] = {"type": json_type}
        if param.default is param.empty:
            required.append(name)
    return {"type": "object", "properties": props, "required": required}


def tools_of(cls: type) -> dict[str, ToolSpec]:
    """The ``@tool`` methods of a class, by name."""
    out: dict[str, ToolSpec] = {}
    for name in dir(cls):
        spec = getattr(getattr(cls, name, None), "__myriad_tool__", None)
        if isinstance(spec, ToolSpec):
            out[spec.name] = spec
    return out


__all__ = ["ToolSpec", "tool", "tools_of"]
