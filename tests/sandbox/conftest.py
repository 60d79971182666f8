"""Fixtures for the sandbox room: a real ``Sandboxes`` under a temporary data dir."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import AsyncIterator

import pytest

from myriad.sandbox import Sandboxes
from myriad.settings import SandboxSettings


def make_settings(tmp_path: Path, **overrides: object) -> SandboxSettings:
    settings = SandboxSettings(root=str(sandbox_root(tmp_path)), timeout=10.0, memory_mb=256, pids=128,
                               idle_timeout=600, max_lifetime=3600)
    for k, v in overrides.items():
        setattr(settings, k, v)
    return settings


def host_pids_with(marker: str) -> list[int]:
    """Host processes whose command line contains ``marker`` (to see what a sandbox left)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def sandbox_root(tmp_path: Path) -> Path:
    """A sandbox root for a test. As root, sandboxes run as unprivileged uids that must be
    able to walk to it, and pytest's own temp dirs are 0700: use a traversable twin in /tmp."""
    if os.geteuid() != 0:
        return tmp_path / "sandboxes"
    twin = Path(tempfile.gettempdir()) / f"myriad-test-{os.getpid()}" / tmp_path.name / "sandboxes"
    _created.append(twin.parent.parent)
    twin.mkdir(parents=True, exist_ok=True)
    for p in (twin.parent.parent, twin.parent):
        os.chmod(p, 0o711)
    return twin


_created: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _remove_sandbox_roots():
    yield
    for p in set(_created):
        shutil.rmtree(p, ignore_errors=True)


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
