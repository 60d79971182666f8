"""A Responses API request, validated and normalised.

``parse_request`` checks a ``POST /v1/responses`` body the way OpenAI does (a 400
that names the parameter), expands ``previous_response_id`` and ``item_reference``
items from the store into the full conversation, and returns a
:class:`ResponsesRequest`: the conversation as Responses items, plus what the
response object echoes back. ``ResponsesRequest.to_chat()`` is the same call as a
Chat Completions body, for providers that speak only that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from myriad.errors import InvalidRequest, NotFound
from myriad.models.responses._ids import new_id

ItemLookup = Callable[[str], "dict[str, Any] | None"]
"""An item (input or output of an earlier response of this tenant) by its id."""

_ROLES = ("user", "assistant", "system", "developer")
_UNSUPPORTED = {
    "background": "background responses are not supported; leave 'background' out or false",
    "conversation": "conversations are not supported; chain responses with 'previous_response_id'",
    "prompt": "prompt templates are not supported; send 'instructions' and 'input'",
}


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, details={"param": param})


@dataclass
class ResponsesRequest:
    """One ``/v1/responses`` call after validation."""

    model: str | None
    items: list[dict[str, Any]]
    """The whole conversation as Responses input items: the previous response's
    history (when ``previous_response_id`` is given), then this call's input."""
    new_items: list[dict[str, Any]]
    """This call's input alone (what ``GET /v1/responses/{id}/input_items`` lists)."""
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool = True
    metadata: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    reasoning: dict[str, Any] | None = None
    original: dict[str, Any] = field(default_factory=dict)
    """The body as the client sent it (for passing the call through)."""

    def to_chat(self) -> dict[str, Any]:
        """The same call as an OpenAI Chat Completions body."""
        messages: list[dict[str, Any]] = []
        if self.instructions:
            messages.append({"role": "system", "content": self.instructions})
        messages += items_to_messages(self.items)
        body: dict[str, Any] = {"messages": messages}
        if self.model:
            body["model"] = self.model
        if self.tools:
            body["tools"] = [{"type": "function", "function": {k: t[k] for k in (
                "name", "description", "parameters", "strict") if t.get(k) is not None}} for t in self.tools]
            body["tool_choice"] = _chat_tool_choice(self.tool_choice)
            body["parallel_tool_calls"] = self.parallel_tool_calls
        fmt = self.text_format
        if fmt.get("type") == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif fmt.get("type") == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}}
        for src, dst in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                         ("user", "user")):
            value = getattr(self, src)
            if value is not None:
                body[dst] = value
        return body

    def echo(self) -> dict[str, Any]:
        """The request's fields as the response object repeats them."""
        return {
            "instructions": self.instructions, "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata, "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": self.reasoning or {"effort": None, "summary": None}, "store": self.store,
            "temperature": self.temperature if self.temperature is not None else 1.0,
            "text": {"format": self.text_format}, "tool_choice": self.tool_choice, "tools": self.tools,
            "top_p": self.top_p if self.top_p is not None else 1.0, "truncation": "disabled", "user": self.user,
        }


def parse_request(body: Mapping[str, Any], *, previous: Callable[[str], "list[dict[str, Any]] | None"],
                  item: ItemLookup) -> ResponsesRequest:
    """Validate ``body``; ``previous(id)`` is the stored conversation of an earlier
    response of the same tenant (None: unknown or expired), ``item(id)`` one item."""
    for key, why in _UNSUPPORTED.items():
        if body.get(key):
            raise _bad(why, key)
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise _bad("'model' must be a non-empty string", "model")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("'instructions' must be a string", "instructions")
    new_items = _input_items(body.get("input"), item)
    history: list[dict[str, Any]] = []
    prev_id = body.get("previous_response_id")
    if prev_id is not None:
        if not isinstance(prev_id, str) or not prev_id:
            raise _bad("'previous_response_id' must be a response id", "previous_response_id")
        found = previous(prev_id)
        if found is None:
            raise NotFound(f"Previous response with id '{prev_id}' not found (unknown, deleted or expired).",
                           details={"param": "previous_response_id"})
        history = found
    tools = _tools(body.get("tools"))
    req = ResponsesRequest(
        model=model, items=history + new_items, new_items=new_items, instructions=instructions, tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice", "auto"), tools), text_format=_text_format(body.get("text")),
        stream=_flag(body, "stream", False), store=_flag(body, "store", True), previous_response_id=prev_id,
        max_output_tokens=_positive_int(body, "max_output_tokens"), temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1), parallel_tool_calls=_flag(body, "parallel_tool_calls", True),
        metadata=_metadata(body.get("metadata")), user=_str(body, "user"), reasoning=_reasoning(body.get("reasoning")),
        original=dict(body),
    )
    if not req.items:
        raise _bad("'input' must not be empty", "input")
    return req


# ------------------------------------------------------------------ input items


def _input_items(raw: Any, lookup: ItemLookup) -> list[dict[str, Any]]:
    if raw is None:
        raise _bad("'input' is required: a string or an array of input items", "input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}],
                 "id": new_id("msg")}]
    if not isinstance(raw, list):
        raise _bad("'input' must be a string or an array of input items", "input")
    out = []
    for i, it in enumerate(raw):
        where = f"input[{i}]"
        if isinstance(it, str):
            it = {"role": "user", "content": it}
        if not isinstance(it, Mapping):
            raise _bad(f"{where} must be an object", where)
        kind = it.get("type", "message" if "role" in it else None)
        if kind == "message":
            out.append(_message_item(it, where))
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(it.get(key), str):
                    raise _bad(f"{where}.{key} must be a string", f"{where}.{key}")
            out.append({"type": "function_call", "id": it.get("id") or new_id("fc"), "call_id": it["call_id"],
                        "name": it["name"], "arguments": it["arguments"], "status": "completed"})
        elif kind == "function_call_output":
            if not isinstance(it.get("call_id"), str):
                raise _bad(f"{where}.call_id must be a string", f"{where}.call_id")
            output = it.get("output")
            if isinstance(output, list):
                output = _parts_text(output, f"{where}.output")
            if not isinstance(output, str):
                raise _bad(f"{where}.output must be a string or an array of text parts", f"{where}.output")
            out.append({"type": "function_call_output", "id": it.get("id") or new_id("fco"),
                        "call_id": it["call_id"], "output": output, "status": "completed"})
        elif kind == "item_reference":
            ref = it.get("id")
            found = lookup(ref) if isinstance(ref, str) else None
            if found is None:
                raise NotFound(f"Item with id '{ref}' not found (unknown, deleted or expired).",
                               details={"param": f"{where}.id"})
            out.append(found)
        elif kind == "reasoning":
            continue  # reasoning of a model that is not ours to replay; chat models take none
        else:
            raise _bad(f"{where}.type {kind!r} is not supported: use message, function_call, "
                       "function_call_output or item_reference", f"{where}.type")
    return out


def _message_item(it: Mapping[str, Any], where: str) -> dict[str, Any]:
    role = it.get("role")
    if role not in _ROLES:
        raise _bad(f"{where}.role must be one of {', '.join(_ROLES)}", f"{where}.role")
    content = it.get("content")
    if isinstance(content, str):
        parts = [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    elif isinstance(content, list):
        parts = [_part(p, role, f"{where}.content[{j}]") for j, p in enumerate(content)]
    else:
        raise _bad(f"{where}.content must be a string or an array of content parts", f"{where}.content")
    out = {"type": "message", "role": role, "content": parts, "id": it.get("id") or new_id("msg")}
    if role == "assistant":
        out["status"] = "completed"
    return out


def _part(p: Any, role: str, where: str) -> dict[str, Any]:
    if not isinstance(p, Mapping):
        raise _bad(f"{where} must be an object", where)
    kind = p.get("type")
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(p.get("text"), str):
            raise _bad(f"{where}.text must be a string", f"{where}.text")
        if role == "assistant":
            return {"type": "output_text", "text": p["text"], "annotations": []}
        return {"type": "input_text", "text": p["text"]}
    if kind == "refusal" and isinstance(p.get("refusal"), str):
        return {"type": "refusal", "refusal": p["refusal"]}
    if kind == "input_image":
        if not isinstance(p.get("image_url"), str):
            raise _bad(f"{where}: only images given by 'image_url' (a URL or data URL) are supported",
                       f"{where}.image_url")
        return {"type": "input_image", "image_url": p["image_url"], "detail": p.get("detail") or "auto"}
    raise _bad(f"{where}.type {kind!r} is not supported: use input_text, input_image or output_text",
               f"{where}.type")


def _parts_text(parts: list[Any], where: str) -> str:
    texts = []
    for j, p in enumerate(parts):
        if not isinstance(p, Mapping) or not isinstance(p.get("text"), str):
            raise _bad(f"{where}[{j}] must be a text part", f"{where}[{j}]")
        texts.append(p["text"])
    return "".join(texts)


def items_to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses items as Chat Completions messages: consecutive function calls
    become one assistant message's ``tool_calls`` (joined to the assistant text
    before them), outputs become ``tool`` messages."""
    out: list[dict[str, Any]] = []
    for it in items:
        kind = it.get("type")
        if kind == "message":
            role = "system" if it["role"] == "developer" else it["role"]
            out.append({"role": role, "content": _chat_content(it["content"], role)})
        elif kind == "function_call":
            call = {"id": it["call_id"], "type": "function",
                    "function": {"name": it["name"], "arguments": it["arguments"]}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": it["call_id"], "content": it["output"]})
    return out


def _chat_content(parts: list[dict[str, Any]], role: str) -> Any:
    if all(p["type"] in ("input_text", "output_text", "refusal") for p in parts):
        return "".join(p.get("text") or p.get("refusal") or "" for p in parts)
    out: list[dict[str, Any]] = []
    for p in parts:
        if p["type"] == "input_image":
            out.append({"type": "image_url", "image_url": {"url": p["image_url"], "detail": p["detail"]}})
        else:
            out.append({"type": "text", "text": p.get("text") or p.get("refusal") or ""})
    return out


# ------------------------------------------------------------------ tools and formats


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad("'tools' must be an array", "tools")
    out = []
    seen: set[str] = set()
    for i, t in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(t, Mapping):
            raise _bad(f"{where} must be an object", where)
        if t.get("type") != "function":
            raise _bad(f"{where}.type {t.get('type')!r} is not supported by this gateway: only 'function' tools "
                       "(hosted tools such as web_search run only on OpenAI's servers)", f"{where}.type")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"Missing required parameter: '{where}.name'.", f"{where}.name")
        if name in seen:
            raise _bad(f"{where}.name {name!r} is used by another tool", f"{where}.name")
        seen.add(name)
        params = t.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            raise _bad(f"{where}.parameters must be a JSON schema object", f"{where}.parameters")
        out.append({"type": "function", "name": name, "description": t.get("description"),
                    "parameters": dict(params) if params is not None else None, "strict": t.get("strict")})
    return out


def _tool_choice(raw: Any, tools: list[dict[str, Any]]) -> Any:
    if raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            raise _bad("tool_choice 'required' needs at least one tool in 'tools'", "tool_choice")
        return raw
    if isinstance(raw, Mapping) and raw.get("type") == "function":
        name = raw.get("name")
        if not any(t["name"] == name for t in tools):
            raise _bad(f"Tool choice '{name}' not found in 'tools' parameter.", "tool_choice")
        return {"type": "function", "name": name}
    raise _bad("'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}",
               "tool_choice")


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, Mapping):
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _text_format(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {"type": "text"}
    if not isinstance(raw, Mapping):
        raise _bad("'text' must be an object", "text")
    fmt = raw.get("format")
    if fmt is None:
        return {"type": "text"}
    if not isinstance(fmt, Mapping):
        raise _bad("'text.format' must be an object", "text.format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not fmt["name"]:
            raise _bad("Missing required parameter: 'text.format.name'.", "text.format.name")
        if not isinstance(fmt.get("schema"), Mapping):
            raise _bad("Missing required parameter: 'text.format.schema'.", "text.format.schema")
        out = {"type": "json_schema", "name": fmt["name"], "schema": dict(fmt["schema"]),
               "strict": bool(fmt.get("strict", False))}
        if isinstance(fmt.get("description"), str):
            out["description"] = fmt["description"]
        return out
    raise _bad(f"Invalid value for 'text.format.type': {kind!r}; use 'text', 'json_object' or 'json_schema'",
               "text.format.type")


def _flag(body: Mapping[str, Any], key: str, default: bool) -> bool:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _bad(f"'{key}' must be true or false", key)
    return v


def _positive_int(body: Mapping[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise _bad(f"'{key}' must be a positive integer", key)
    return v


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
        raise _bad(f"'{key}' must be a number between {lo} and {hi}", key)
    return float(v)


def _str(body: Mapping[str, Any], key: str) -> str | None:
    v = body.get(key)
    if v is not None and not isinstance(v, str):
        raise _bad(f"'{key}' must be a string", key)
    return v


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or len(raw) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise _bad("'metadata' must be an object of at most 16 string values", "metadata")
    return dict(raw)


def _reasoning(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _bad("'reasoning' must be an object", "reasoning")
    return {"effort": raw.get("effort"), "summary": raw.get("summary")}


__all__ = ["ResponsesRequest", "parse_request", "items_to_messages", "ItemLookup"]
