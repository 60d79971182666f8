"""Tools for Code Mode: schemas from type hints, validation, the TypeScript declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from myriad.errors import InvalidRequest
from myriad.sandbox.tools import as_tools, render_typescript, tool


@dataclass
class Weather:
    city: str
    temp_c: float


async def get_weather(city: str, units: Literal["c", "f"] = "c", days: list[int] | None = None) -> Weather:
    """Current weather for a city."""
    return Weather(city, 20.0)


def test_schema_from_type_hints() -> None:
    t = tool(get_weather)
    assert t.name == "get_weather"
    assert t.description == "Current weather for a city."
    props = t.parameters["properties"]
    assert props["city"] == {"type": "string"}
    assert props["units"] == {"enum": ["c", "f"]}
    assert props["days"] == {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]}
    assert t.parameters["required"] == ["city"]
    assert t.returns["properties"]["temp_c"] == {"type": "number"}


def test_typescript_declaration() -> None:
    ts = render_typescript(as_tools([get_weather]))
    assert ts.startswith("declare const tools: {")
    assert "   * Current weather for a city." in ts
    assert "get_weather(args: {" in ts
    assert "    city: string;" in ts
    assert '    units?: "c" | "f";' in ts
    assert "    days?: number[] | null;" in ts
    assert "}): Promise<{" in ts
    assert "    temp_c: number;" in ts


def test_optional_args_and_explicit_schema() -> None:
    async def ping() -> str:
        return "pong"

    schema = {"type": "object", "properties": {"q": {"type": "string", "description": "query"}}, "required": ["q"]}

    async def search(**kwargs: object) -> list[str]:
        return []

    ts = render_typescript(as_tools([tool(ping), tool(search, parameters=schema, description="Search.")]))
    assert "  ping(args?: {}): Promise<string>;" in ts
    assert "/** query */" in ts and "q: string;" in ts


async def test_validation() -> None:
    t = tool(get_weather)
    assert (await t.invoke({"city": "Oslo"})).city == "Oslo"
    with pytest.raises(InvalidRequest, match="missing required property 'city'"):
        await t.invoke({})
    with pytest.raises(InvalidRequest, match="must be string"):
        await t.invoke({"city": 3})
    with pytest.raises(InvalidRequest, match="must be one of"):
        await t.invoke({"city": "x", "units": "k"})
    with pytest.raises(InvalidRequest, match="unknown property 'zzz'"):
        await t.invoke({"city": "x", "zzz": 1})
    with pytest.raises(InvalidRequest, match="one object argument"):
        await t.invoke([1])


def test_bad_tools_rejected() -> None:
    def sync(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="async"):
        tool(sync)  # type: ignore[arg-type]

    async def f() -> None: ...

    with pytest.raises(ValueError, match="identifier"):
        tool(f, name="not-valid")
    with pytest.raises(ValueError, match="two tools"):
        as_tools([f, f])


def test_schemas_are_worked_out_once_and_never_shared() -> None:
    """The schema of a function is cached (every isolate an agent opens binds the same
    tools), but each Tool gets its own copy: changing one changes no other."""
    from myriad.sandbox import tools as tools_mod

    first, second = tool(get_weather), tool(get_weather)
    assert get_weather in tools_mod._SCHEMAS
    assert first.parameters == second.parameters and first.parameters is not second.parameters
    first.parameters["properties"]["city"]["type"] = "number"
    assert second.parameters["properties"]["city"] == {"type": "string"}
    assert tool(get_weather).parameters["properties"]["city"] == {"type": "string"}
