"""The services' lifecycle: one AsyncExitStack, so a close (or a start that fails
half-way) unwinds exactly what started, and no background task outlives it."""

from __future__ import annotations

import asyncio

import pytest

from myriad.server import build_services
from myriad.settings import Settings


async def test_start_close_leaves_no_task_behind(tmp_path):
    before = set(asyncio.all_tasks())
    services = build_services(Settings(data_dir=tmp_path / "data"))
    await services.start()
    await services.models.chat({"messages": [{"role": "user", "content": "hi"}]}, tenant="acme")
    await services.close()
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert left == [], left
    assert services.keys._db is None


async def test_a_start_that_fails_half_way_unwinds_what_started(tmp_path):
    services = build_services(Settings(data_dir=tmp_path / "data"))
    closed: list[str] = []
    services._closers.append(lambda: closed.append("mine"))

    def boom() -> None:
        raise RuntimeError("a room could not start")

    services._starters.append(boom)
    with pytest.raises(RuntimeError):
        await services.start()
    assert closed == ["mine"] and services.keys._db is None  # unwound: the host, the closers, the stores
    await services.close()  # nothing left to close: no error
