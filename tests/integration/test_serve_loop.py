"""``myriad serve`` runs on uvicorn's loop setup: uvloop when it is installed."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.live import LiveServer


@pytest.mark.integration
def test_serve_runs_on_uvloop(tmp_path):
    pytest.importorskip("uvloop")
    s = LiveServer(tmp_path / "data", agents="examples.counter").start()
    try:
        assert httpx.get(s.url + "/healthz", headers=s.headers()).json()["loop"] == "uvloop"
    finally:
        s.stop()
