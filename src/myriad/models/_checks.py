"""Checks OpenAI makes on a chat request before any model sees it, made here too so
a client gets the same 400 (naming the parameter) whichever provider is behind:
``response_format`` types, tools without a name, a named ``tool_choice`` that is
not among the tools."""

from __future__ import annotations

from typing import Any, Mapping

from myriad.errors import InvalidRequest

_FORMATS = ("text", "json_object", "json_schema")


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, details={"param": param})


def check_chat_request(body: Mapping[str, Any]) -> None:
    """Raise ``InvalidRequest`` (with ``param``) for what OpenAI would refuse."""
    fmt = body.get("response_format")
    if fmt is not None:
        _check_format(fmt)
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("'tools' must be an array", "tools")
        for i, t in enumerate(tools):
            if not isinstance(t, Mapping) or not isinstance(t.get("function"), Mapping):
                raise _bad(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                           f"tools[{i}]")
            name = t["function"].get("name")
            if not isinstance(name, str) or not name:
                raise _bad(f"Missing required parameter: 'tools[{i}].function.name'.", f"tools[{i}].function.name")
            names.add(name)
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, Mapping):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str) or not name:
            raise _bad("'tool_choice' must name a function: {\"type\": \"function\", \"function\": {\"name\": ...}}",
                       "tool_choice")
        if name not in names:
            raise _bad(f"Invalid value for 'tool_choice': tool '{name}' is not in 'tools'.", "tool_choice")
    elif choice not in ("none", "auto", "required"):
        raise _bad("'tool_choice' must be 'none', 'auto', 'required' or a named function", "tool_choice")
    elif choice == "required" and not names:
        raise _bad("'tool_choice' is 'required' but no 'tools' were given", "tool_choice")


def _check_format(fmt: Any) -> None:
    if not isinstance(fmt, Mapping):
        raise _bad("'response_format' must be an object such as {\"type\": \"json_object\"}", "response_format")
    kind = fmt.get("type")
    if kind not in _FORMATS:
        raise _bad(f"Invalid value for 'response_format.type': {kind!r}; supported: "
                   f"{', '.join(_FORMATS)}", "response_format")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise _bad("Missing required parameter: 'response_format.json_schema.name'.",
                       "response_format.json_schema.name")
        schema = spec.get("schema")
        if schema is not None and not isinstance(schema, Mapping):
            raise _bad("'response_format.json_schema.schema' must be a JSON schema object",
                       "response_format.json_schema.schema")


__all__ = ["check_chat_request"]
