"""Fixtures for the sandbox room: a real ``Sandboxes`` under a temporary data dir."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from myriad.sandbox import Sandboxes
from myriad.settings import SandboxSettings


def make_settings(tmp_path: Path, **overrides: object) -> SandboxSettings:
    settings = SandboxSettings(root=str(tmp_path / "sandboxes"), timeout=10.0, memory_mb=256, pids=128,
                               idle_timeout=600, max_lifetime=3600)
    for k, v in overrides.items():
        setattr(settings, k, v)
    return settings


@pytest.fixture
async def sandboxes(tmp_path: Path) -> AsyncIterator[Sandboxes]:
    sbs = Sandboxes(make_settings(tmp_path))
    try:
        yield sbs
    finally:
        await sbs.aclose()


@pytest.fixture
async def box(sandboxes: Sandboxes):
    """A container sandbox with the test defaults."""
    return await sandboxes.open(needs={"filesystem", "binaries"})
