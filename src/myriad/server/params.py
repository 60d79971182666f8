"""Reading request input the same way on every door (clear 4xx, never 500s)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from myriad import safe_json
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


def parse_json_object(raw: bytes, *, required: bool = False) -> dict[str, Any]:
    """``raw`` as a JSON object; an empty body is ``{}`` unless ``required``. Parsed
    by ``myriad.safe_json``: bounded depth, no NaN/Infinity, 400 naming the field."""
    if not raw:
        if required:
            raise InvalidRequest("a JSON object body is required")
        return {}
    body = safe_json.loads(raw, "body")
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


async def json_object(request: Request, limit: int | None, *, required: bool = False) -> dict[str, Any]:
    """The body as a JSON object, size-limited (413) and validated (400)."""
    return parse_json_object(await read_body(request, limit), required=required)


__all__ = ["int_param", "read_body", "parse_json_object", "json_object"]
