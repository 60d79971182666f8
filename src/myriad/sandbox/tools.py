"""Host-side tools for Code Mode, and the TypeScript declaration a model reads.

A tool is an async Python function. Its parameters come from its type hints (or an
explicit JSON schema); inside an isolate it is ``tools.<name>(args) -> Promise``,
where ``args`` is one object whose keys are the parameters. ``render_typescript``
turns a list of tools into the ``declare const tools: {...}`` block that goes in the
model's prompt, so the model writes ordinary JavaScript against a typed API.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import re
import types
import typing
import weakref
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Literal

from myriad.errors import InvalidRequest

_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_RESERVED = {"constructor", "prototype", "__proto__", "toString", "valueOf", "hasOwnProperty"}


@dataclass
class Tool:
    """One host function callable from sandboxed code as ``tools.<name>(args)``."""

    name: str
    fn: Callable[..., Awaitable[Any]]
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    returns: dict[str, Any] = field(default_factory=dict)

    async def invoke(self, args: Any) -> Any:
        """Validate ``args`` against the schema and call the function with them as keywords."""
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise InvalidRequest(f"tools.{self.name} takes one object argument, got {type(args).__name__}")
        _validate(args, self.parameters, f"tools.{self.name}")
        return await self.fn(**args)


def tool(
    fn: Callable[..., Awaitable[Any]] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> Any:
    """Make a ``Tool`` from an async function (usable bare or with arguments)."""

    def build(f: Callable[..., Awaitable[Any]]) -> Tool:
        if not inspect.iscoroutinefunction(f):
            raise TypeError(f"tool {f.__name__!r} must be an async function")
        tool_name = name or f.__name__
        if not _IDENT.match(tool_name) or tool_name in _RESERVED:
            raise ValueError(f"tool name {tool_name!r} is not a plain JavaScript identifier")
        doc = description if description is not None else inspect.getdoc(f) or ""
        params, returns = _cached_schema(f)
        return Tool(tool_name, f, doc.strip(), parameters or params, returns)

    return build(fn) if fn is not None else build


def as_tools(items: Iterable[Tool | Callable[..., Awaitable[Any]]] | None) -> dict[str, Tool]:
    """Normalise a list of tools / async functions into a name -> Tool mapping."""
    out: dict[str, Tool] = {}
    for item in items or ():
        t = item if isinstance(item, Tool) else tool(item)
        if t.name in out:
            raise ValueError(f"two tools are named {t.name!r}")
        out[t.name] = t
    return out


# -- Python types -> JSON schema ------------------------------------------------------


_SCHEMAS: "weakref.WeakKeyDictionary[Callable[..., Any], tuple[dict[str, Any], dict[str, Any]]]" = weakref.WeakKeyDictionary()


def _cached_schema(f: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``_schema_of(f)``, worked out once per function (an agent binds the same tools to
    every isolate it opens); each caller gets its own copy."""
    try:
        cached = _SCHEMAS.get(f)
    except TypeError:  # not weak-referenceable
        return _schema_of(f)
    if cached is None:
        _SCHEMAS[f] = cached = _schema_of(f)
    return copy.deepcopy(cached)


def _schema_of(f: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    hints = typing.get_type_hints(f)
    props: dict[str, Any] = {}
    required: list[str] = []
    for p in inspect.signature(f).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        props[p.name] = type_schema(hints.get(p.name, Any))
        if p.default is p.empty:
            required.append(p.name)
    params: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        params["required"] = required
    returns = type_schema(hints["return"]) if "return" in hints else {}
    return params, returns


def type_schema(tp: Any) -> dict[str, Any]:
    """A JSON schema for a Python type hint (the subset tools use)."""
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if tp is None or tp is type(None):
        return {"type": "null"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if tp in simple:
        return {"type": simple[tp]}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [type_schema(a) for a in args]}
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set):
        return {"type": "array", "items": type_schema(args[0]) if args else {}}
    if origin is dict or tp is dict:
        return {"type": "object", "additionalProperties": type_schema(args[1]) if len(args) == 2 else {}}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = dataclasses.fields(tp)
        req = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        return {"type": "object", "properties": {f.name: type_schema(hints[f.name]) for f in fields}, "required": req}
    if typing.is_typeddict(tp):
        hints = typing.get_type_hints(tp)
        return {
            "type": "object",
            "properties": {k: type_schema(v) for k, v in hints.items()},
            "required": sorted(getattr(tp, "__required_keys__", hints)),
        }
    return {}


# -- validation (the subset above) ----------------------------------------------------

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "array": (list,),
    "object": (dict,),
}


def _validate(value: Any, schema: dict[str, Any], where: str) -> None:
    if not schema:
        return
    if "anyOf" in schema:
        for sub in schema["anyOf"]:
            try:
                _validate(value, sub, where)
                return
            except InvalidRequest:
                continue
        raise InvalidRequest(f"{where}: {json.dumps(value)[:80]} matches none of the allowed types")
    if "enum" in schema and value not in schema["enum"]:
        raise InvalidRequest(f"{where} must be one of {schema['enum']}, got {value!r}")
    typ = schema.get("type")
    if typ:
        ok = _JSON_TYPES.get(typ, (object,))
        if not isinstance(value, ok) or (typ in ("integer", "number") and isinstance(value, bool)):
            raise InvalidRequest(f"{where} must be {typ}, got {type(value).__name__}")
    if typ == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                raise InvalidRequest(f"{where}: missing required property {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, v in value.items():
            if key in props:
                _validate(v, props[key], f"{where}.{key}")
            elif extra is False:
                raise InvalidRequest(f"{where}: unknown property {key!r}")
            elif isinstance(extra, dict):
                _validate(v, extra, f"{where}.{key}")
    if typ == "array" and isinstance(value, list) and schema.get("items"):
        for i, v in enumerate(value):
            _validate(v, schema["items"], f"{where}[{i}]")


# -- JSON schema -> TypeScript -------------------------------------------------------


def schema_to_ts(schema: dict[str, Any], indent: str = "") -> str:
    """A TypeScript type expression for a JSON schema."""
    if not schema:
        return "any"
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " | ".join(schema_to_ts(s, indent) for s in schema["anyOf"])
    typ = schema.get("type")
    if isinstance(typ, list):
        return " | ".join(schema_to_ts({**schema, "type": t}, indent) for t in typ)
    if typ in ("integer", "number"):
        return "number"
    if typ in ("string", "boolean", "null"):
        return str(typ)
    if typ == "array":
        inner = schema_to_ts(schema.get("items", {}), indent)
        return f"({inner})[]" if "|" in inner else f"{inner}[]"
    if typ == "object":
        props = schema.get("properties")
        if not props and schema.get("additionalProperties") is False:
            return "{}"
        if not props:
            extra = schema.get("additionalProperties")
            value = schema_to_ts(extra, indent) if isinstance(extra, dict) else "any"
            return f"Record<string, {value}>"
        required = set(schema.get("required", []))
        inner = indent + "  "
        lines = []
        for key, sub in props.items():
            k = key if _IDENT.match(key) else json.dumps(key)
            doc = sub.get("description")
            if doc:
                lines.append(f"{inner}/** {doc} */")
            lines.append(f"{inner}{k}{'' if key in required else '?'}: {schema_to_ts(sub, inner)};")
        return "{\n" + "\n".join(lines) + f"\n{indent}}}"
    return "any"


def render_typescript(tools: Iterable[Tool] | dict[str, Tool]) -> str:
    """The ``declare const tools`` block describing the bound tools to a model."""
    items = list(tools.values()) if isinstance(tools, dict) else list(tools)
    lines = ["declare const tools: {"]
    for t in items:
        if t.description:
            doc = t.description.replace("*/", "* /").splitlines()
            lines.append("  /**")
            lines.extend(f"   * {d}".rstrip() for d in doc)
            lines.append("   */")
        args = schema_to_ts(t.parameters, "  ")
        ret = schema_to_ts(t.returns, "  ")
        optional = "?" if not t.parameters.get("required") else ""
        lines.append(f"  {t.name}(args{optional}: {args}): Promise<{ret}>;")
    lines.append("};")
    return "\n".join(lines)


__all__ = ["Tool", "tool", "as_tools", "render_typescript", "schema_to_ts", "type_schema"]
