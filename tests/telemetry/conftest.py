"""Fixtures: a real SDK pipeline whose local store is the in-memory exporter we read."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from myriad.settings import TelemetrySettings
from myriad.telemetry import Telemetry, setup_telemetry


@pytest.fixture
async def tel() -> AsyncIterator[Telemetry]:
    t = setup_telemetry(TelemetrySettings(), {})
    yield t
    await t.aclose()


@pytest.fixture
async def tel_content() -> AsyncIterator[Telemetry]:
    t = setup_telemetry(TelemetrySettings(capture_content=True), {})
    yield t
    await t.aclose()
