"""JSON from outside, read one way everywhere: bounded depth, finite numbers.

Every door that parses JSON a client (or a config file) wrote goes through
``loads``. It parses with orjson (pinned in pyproject to versions that refuse deep
nesting instead of overflowing the C stack: orjson 3.8.3 segfaulted the whole
process on a 100,000-level object), which already refuses ``NaN``/``Infinity`` and
numbers that overflow a double or a 64-bit integer; on top of that, nothing may
nest deeper than ``MAX_DEPTH`` (so every later ``json.dumps`` of it, or a Python
walk over it, stays far from the interpreter's recursion limit). Failures are
``InvalidJSON`` (400) naming the field when one can be named.

``check`` applies the same rules to values that did not come through ``loads``
(TOML files, values an agent's code sets as its state).
"""

from __future__ import annotations

import json
import math
from typing import Any

from myriad.errors import ConfigError, InvalidRequest

MAX_DEPTH = 64
_INT_RANGE = 2 ** 63  # orjson's range; also what SQLite stores


class InvalidJSON(InvalidRequest):
    """JSON that is malformed, nests too deep, or holds a number JSON cannot carry."""


class JSONLimitExceeded(InvalidJSON):
    """Well-formed enough to parse, but deeper than allowed or with a number (NaN,
    Infinity, out of range) that JSON cannot carry."""


def _field(path: tuple[Any, ...], what: str) -> str:
    out = what
    if len(path) > 8:  # a deep path: its start and end say enough
        out = _field(path[:4], what) + f"...({len(path) - 6} more)..."
        path = path[-2:]
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def check(value: Any, what: str = "value", *, max_depth: int = MAX_DEPTH, numbers: bool = True) -> Any:
    """``value`` unchanged, or ``InvalidJSON`` naming the first field that nests
    deeper than ``max_depth`` or (with ``numbers``) holds a non-finite or
    out-of-range number. Iterative, so a hostile value cannot exhaust the stack
    here either; lists of scalars are looked at with C-speed builtins."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 0, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth >= max_depth and isinstance(node, (dict, list, tuple)):
            raise JSONLimitExceeded(f"{_field(path, what)} nests deeper than {max_depth} levels",
                                    details={"field": _field(path, what), "max_depth": max_depth})
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, (list, tuple)):
            kinds = set(map(type, node))
            if not any(issubclass(k, _CONTAINERS) for k in kinds):
                if numbers and kinds & _NUMBERS and not _numbers_ok(node, kinds):
                    for i, v in enumerate(node):
                        _check_scalar(v, path + (i,), what)
                continue
            items = enumerate(node)
        else:
            if numbers:
                _check_scalar(node, path, what)
            continue
        for k, v in items:
            if isinstance(v, (dict, list, tuple)):
                stack.append((v, depth + 1, path + (k,)))
            elif numbers:
                _check_scalar(v, path + (k,), what)
    return value


_CONTAINERS = (dict, list, tuple)
_NUMBERS = {float, int}


def _numbers_ok(node: Any, kinds: set[type]) -> bool:
    """A flat list's numbers are all finite and in range (fast paths for the usual
    all-int and all-float lists; anything else is looked at one by one)."""
    if kinds == {int}:
        in_range: bool = -_INT_RANGE <= min(node) and max(node) < _INT_RANGE
        return in_range
    if kinds == {float}:
        return all(map(math.isfinite, node))
    return False


def _check_scalar(v: Any, path: tuple[Any, ...], what: str) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise JSONLimitExceeded(f"{_field(path, what)} is {v}: NaN and Infinity are not JSON numbers",
                          details={"field": _field(path, what)})
    if isinstance(v, int) and not isinstance(v, bool) and not -_INT_RANGE <= v < _INT_RANGE:
        raise JSONLimitExceeded(f"{_field(path, what)} is out of range (integers must fit in 64 bits)",
                          details={"field": _field(path, what)})


def loads(raw: bytes | bytearray | memoryview | str, what: str = "body", *,
          max_depth: int = MAX_DEPTH) -> Any:
    """Parse untrusted JSON; ``InvalidJSON`` (400) naming the problem and, where it
    can, the field (``what`` names the whole document: ``body``, ``frame``, ...)."""
    import orjson

    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise _explain(raw, what, e, max_depth) from None
    return check(value, what, max_depth=max_depth, numbers=False)  # orjson refused bad numbers


def _explain(raw: Any, what: str, e: Exception, max_depth: int) -> InvalidJSON:
    """Why orjson refused ``raw``: deep nesting, a non-finite or huge number (found
    with the tolerant stdlib parser so the field can be named), or plain bad JSON."""
    msg = str(e)
    if "depth" in msg or "recursion" in msg:
        return JSONLimitExceeded(f"{what} nests deeper than {max_depth} levels ({msg})",
                           details={"field": what, "max_depth": max_depth})
    try:
        tolerant = json.loads(raw)
    except (ValueError, RecursionError):
        return InvalidJSON(f"{what} is not valid JSON: {msg}")
    try:
        check(tolerant, what, max_depth=max_depth)
    except JSONLimitExceeded as named:
        return named
    return InvalidJSON(f"{what} is not valid JSON: {msg}")


def config_loads(text: str | bytes, source: str, *, toml: bool = True) -> Any:
    """A config file the CLI or server reads (TOML, or JSON with ``toml=False``),
    held to the same rules; ``ConfigError`` naming ``source`` and the field."""
    try:
        if toml:
            import tomllib

            data = tomllib.loads(text.decode() if isinstance(text, bytes) else text)
        else:
            data = loads(text, "file")
    except RecursionError:
        raise ConfigError(f"{source}: nests too deep") from None
    except InvalidJSON as e:
        raise ConfigError(f"{source}: {e.message}") from None
    except ValueError as e:  # tomllib.TOMLDecodeError, UnicodeDecodeError
        raise ConfigError(f"{source}: not valid {'TOML' if toml else 'JSON'}: {e}") from None
    try:
        return check(data, "file")
    except InvalidJSON as e:
        raise ConfigError(f"{source}: {e.message}") from None


def dumps_checked(value: Any, what: str = "value") -> str:
    """``json.dumps`` of a value that must also be readable back by ``loads``
    (``JSONLimitExceeded`` otherwise; ``TypeError`` if it is not JSON at all)."""
    check(value, what)
    return json.dumps(value, allow_nan=False)


__all__ = ["MAX_DEPTH", "InvalidJSON", "JSONLimitExceeded", "check", "config_loads", "loads", "dumps_checked"]
