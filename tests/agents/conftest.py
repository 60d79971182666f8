"""The runtime's tests run on both storage backends (SQLite and a real PostgreSQL)."""

from typing import Any

import pytest


@pytest.fixture
def storage(any_storage: Any) -> Any:
    return any_storage
