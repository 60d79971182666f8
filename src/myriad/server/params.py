"""Reading request parameters the same way on every door (clear 400s, never 500s)."""

from __future__ import annotations

from starlette.requests import Request

from myriad.errors import InvalidRequest


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


__all__ = ["int_param"]
