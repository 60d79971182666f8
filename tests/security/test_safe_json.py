"""myriad.safe_json and the readers built on it: config files (TOML/JSON) and
sandbox limits hold the same rules as the HTTP doors (tests of the doors
themselves: tests/integration/test_hostile_json.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from myriad import safe_json
from myriad.errors import ConfigError, InvalidRequest
from myriad.models.config import GatewayConfig
from myriad.sandbox.interface import Limits
from myriad.settings import Settings


def test_depth_nan_and_range_are_named():
    with pytest.raises(safe_json.JSONLimitExceeded) as e:
        safe_json.loads(b'{"a": {"b": [1, NaN]}}')
    assert e.value.details["field"] == "body.a.b[1]"
    with pytest.raises(safe_json.JSONLimitExceeded, match="nests deeper than 64"):
        safe_json.loads(b"[" * 65 + b"]" * 65)
    assert safe_json.loads(b"[" * 64 + b"]" * 64) is not None  # the limit itself is fine
    with pytest.raises(safe_json.JSONLimitExceeded, match="out of range"):
        safe_json.check({"n": 2 ** 70}, "state")
    with pytest.raises(safe_json.InvalidJSON) as bad:
        safe_json.loads(b"{nope")
    assert not isinstance(bad.value, safe_json.JSONLimitExceeded)
    assert safe_json.check([1.5, 2, "x", None, True], "v") == [1.5, 2, "x", None, True]


def test_state_dumps_refuse_what_readers_cannot_read():
    for bad in (math.nan, [math.inf], {"x": -math.inf}):
        with pytest.raises(safe_json.JSONLimitExceeded):
            safe_json.dumps_checked(bad, "state")


@pytest.mark.parametrize("text, words", [
    ("[server]\nport = nan\n", "nan"),
    ("[agents]\nidle_timeout = inf\n", "inf"),
    ("x = " + "[" * 50_000 + "]" * 50_000 + "\n", "nests"),
])
def test_config_files_refuse_nan_inf_and_depth(tmp_path: Path, text: str, words: str):
    f = tmp_path / "myriad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        Settings.load(config_file=str(f), env={})
    assert str(f) in e.value.message and words in e.value.message
    with pytest.raises(ConfigError):
        GatewayConfig.from_toml(text, source="models.toml")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300, 0, -1])
def test_sandbox_limits_refuse_non_finite_and_absurd(value: float):
    with pytest.raises(InvalidRequest) as e:
        Limits.from_json({"timeout": value})
    assert e.value.details["field"] == "limits.timeout"
