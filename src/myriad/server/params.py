"""Reading request input the same way on every door (clear 4xx, never 500s)."""

from __future__ import annotations

import json
from typing import Any, Callable

from starlette.requests import Request

from myriad.errors import InvalidRequest, PayloadTooLarge


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """Query parameter ``name`` as an int in ``[lo, hi]`` (``default`` when absent)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if not lo <= v <= hi:
        raise InvalidRequest(f"query parameter {name!r} must be between {lo} and {hi}, got {v}")
    return v


async def read_body(request: Request, limit: int | None) -> bytes:
    """The raw body; 413 past ``limit`` bytes (checked on Content-Length before reading)."""
    if limit is not None:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    raw = await request.body()
    if limit is not None and len(raw) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return raw


def parse_json_object(raw: bytes, *, required: bool = False,
                      loads: Callable[[bytes], Any] = json.loads) -> dict[str, Any]:
    """``raw`` as a JSON object; an empty body is ``{}`` unless ``required``. ``loads``
    lets the hot gateway door use orjson (its errors are ``ValueError`` too)."""
    if not raw:
        if required:
            raise InvalidRequest("a JSON object body is required")
        return {}
    try:
        body = loads(raw)
    except ValueError as e:
        raise InvalidRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


async def json_object(request: Request, limit: int | None, *, required: bool = False,
                      loads: Callable[[bytes], Any] = json.loads) -> dict[str, Any]:
    """The body as a JSON object, size-limited (413) and validated (400)."""
    return parse_json_object(await read_body(request, limit), required=required, loads=loads)


__all__ = ["int_param", "read_body", "parse_json_object", "json_object"]
